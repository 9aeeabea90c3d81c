package probes

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// fixtureEnv builds the Env a probe sees on the fixture root testdata/<probe>/<name>,
// with the distribution loaded from that root (a missing os-release leaves it unknown).
func fixtureEnv(t *testing.T, probe, name string) *Env {
	t.Helper()
	return dirEnv(t, filepath.Join("testdata", probe, name))
}

// dirEnv is fixtureEnv for any directory.
func dirEnv(t *testing.T, dir string) *Env {
	t.Helper()
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatalf("fixture root: %v", err)
	}
	d, _ := LoadDistro(root)
	return &Env{Root: root, Distro: d}
}

// runProbe runs p on env and returns the finding keys (sorted, joined by spaces, with a
// "!" suffix on blockers) and the findings.
func runProbe(t *testing.T, p Probe, env *Env) (string, []api.Finding, error) {
	t.Helper()
	fs, err := p.Run(context.Background(), env)
	var keys []string
	for _, f := range fs {
		k := f.Key
		if f.Blocker {
			k += "!"
		}
		keys = append(keys, k)
		if f.Title == "" || f.Summary == "" || f.Remediation.Hint == "" {
			t.Errorf("%s: finding lacks title, summary or hint: %+v", f.Key, f)
		}
		if !strings.HasPrefix(f.Key, p.Name()+".") {
			t.Errorf("finding key %q outside probe %q", f.Key, p.Name())
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, " "), fs, err
}

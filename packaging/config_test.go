package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/probes"
)

// effective is c's effective configuration without the header naming its source.
func effective(t *testing.T, c *config.Config) string {
	t.Helper()
	y, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^#.*\n`).ReplaceAllString(string(y), "")
}

func probeNames() []string {
	var names []string
	for _, p := range probes.All() {
		names = append(names, p.Name())
	}
	return names
}

// commentedSetting matches a commented-out setting of the shipped file: "#key: …" or, for
// nested keys and list items, "#  …" (explanations are "# …", one space).
var commentedSetting = regexp.MustCompile(`(?m)^#(  |[a-z])`)

// The shipped /etc/adeagent/adeagent.yaml changes nothing as shipped, and uncommenting
// every setting in it gives exactly the built-in defaults: the file documents them
// truthfully and stays in step with agent/config.
func TestShippedConfig(t *testing.T) {
	path := filepath.Join(repoRoot, "packaging", "adeagent.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	names := probeNames()
	want := effective(t, config.Default(names))

	shipped, err := config.Parse(path, data, names)
	if err != nil {
		t.Fatalf("the shipped file does not parse: %v", err)
	}
	if got := effective(t, shipped); got != want {
		t.Errorf("the shipped file changes the configuration:\n%s\nwant the defaults:\n%s", got, want)
	}

	uncommented := commentedSetting.ReplaceAll(data, []byte("$1"))
	if string(uncommented) == string(data) {
		t.Fatal("found no commented-out settings")
	}
	all, err := config.Parse(path+" (uncommented)", uncommented, names)
	if err != nil {
		t.Fatalf("with every setting uncommented the file does not parse: %v\n%s", err, uncommented)
	}
	if got := effective(t, all); got != want {
		t.Errorf("with every setting uncommented the file is not the defaults:\n%s\nwant:\n%s", got, want)
	}
	// Every top-level key of the configuration appears in the file.
	for _, k := range []string{"log_level", "socket", "state_dir", "operator_group", "probes", "network", "ade", "quiesce"} {
		if !regexp.MustCompile(`(?m)^` + k + `:`).Match(uncommented) {
			t.Errorf("the shipped file does not document %s", k)
		}
	}
}

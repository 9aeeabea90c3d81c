package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
)

// kernelProbe checks kernel.oom-dd: on Ubuntu 14.04 ADE needs kernel 4.15 or newer
// (linux-azure); with the 4.4 kernel the OOM killer kills the dd that copies the OS drive
// (research: ade_extension.md §2, SupportedOS.json "Kernel").
type kernelProbe struct{}

func (kernelProbe) Name() string { return "kernel" }

func (kernelProbe) Run(_ context.Context, env *Env) ([]api.Finding, error) {
	min := env.Distro.MinKernel
	if min == "" {
		return nil, nil // no kernel floor for this distribution
	}
	// The running kernel of the root we look at, not of the machine adeagent runs on.
	b, err := os.ReadFile(env.Root.Proc("sys", "kernel", "osrelease"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("kernel release unknown: %w", err)
		}
		return nil, fmt.Errorf("read kernel release: %w", err)
	}
	release := strings.TrimSpace(string(b))
	maj, mnr, ok := kernelMajorMinor(release)
	if !ok {
		return nil, fmt.Errorf("kernel release %q: not a version", release)
	}
	wantMaj, wantMin, _ := kernelMajorMinor(min)
	if maj > wantMaj || maj == wantMaj && mnr >= wantMin {
		return nil, nil
	}
	return []api.Finding{{
		Key:      "kernel.oom-dd",
		Title:    fmt.Sprintf("Kernel %s is too old for ADE on %s", release, env.Distro.Name()),
		Summary:  fmt.Sprintf("%s runs kernel %s; ADE needs %s or newer here (\"Kernel version %s is not supported. Upgrade to kernel version %s\"). With older kernels the OOM killer kills the dd that encrypts the OS drive.", env.Distro.Name(), release, min, release, min),
		Severity: api.SeverityHigh,
		Blocker:  true,
		Remediation: api.Remediation{
			Hint: fmt.Sprintf("Install the Azure-tuned kernel (linux-azure, %s or newer) and reboot into it before enabling encryption.", min),
			Commands: [][]string{
				{"apt-get", "install", "-y", "linux-azure"},
				{"reboot"},
			},
		},
		Related: []api.Related{{Kind: "package", ID: "linux-azure"}},
	}}, nil
}

// kernelMajorMinor parses "4.4.0-148-generic" into 4, 4.
func kernelMajorMinor(release string) (int, int, bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err := strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, false
	}
	m := parts[1]
	if i := strings.IndexFunc(m, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		m = m[:i]
	}
	mnr, err := strconv.Atoi(m)
	if err != nil {
		return 0, 0, false
	}
	return maj, mnr, true
}

package probes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOldrootProbe(t *testing.T) {
	// An empty directory cannot live in git: build that root here.
	empty := t.TempDir()
	if err := os.Mkdir(filepath.Join(empty, "oldroot"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want, command string
	}{
		{name: "absent", dir: "testdata/oldroot/absent"},
		{name: "empty-dir", dir: empty, want: "oldroot.exists!", command: "rmdir /oldroot"},
		{name: "full-dir", dir: "testdata/oldroot/full-dir", want: "oldroot.exists!", command: "ls -la /oldroot"},
		{name: "file", dir: "testdata/oldroot/file", want: "oldroot.exists!", command: "mv /oldroot /oldroot.bak"},
		{name: "mounted", dir: "testdata/oldroot/mounted", want: "oldroot.exists!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, fs, err := runProbe(t, oldrootProbe{}, dirEnv(t, tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			if keys != tt.want {
				t.Fatalf("keys %q, want %q", keys, tt.want)
			}
			if tt.name == "mounted" && !strings.Contains(fs[0].Title, "under way") {
				t.Errorf("mounted /oldroot not recognised: %s", fs[0].Title)
			}
			if tt.command != "" {
				if len(fs[0].Remediation.Commands) == 0 || strings.Join(fs[0].Remediation.Commands[0], " ") != tt.command {
					t.Errorf("first command %v, want %q", fs[0].Remediation.Commands, tt.command)
				}
			}
		})
	}
}

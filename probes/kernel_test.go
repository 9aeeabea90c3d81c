package probes

import (
	"strings"
	"testing"
)

func TestKernelProbe(t *testing.T) {
	tests := []struct {
		dir, want string
		wantErr   bool
	}{
		{dir: "ubuntu1404-old", want: "kernel.oom-dd!"},
		{dir: "ubuntu1404-new"},
		{dir: "ubuntu2204-old"}, // the kernel floor applies to 14.04 only
		{dir: "ubuntu1404-missing", wantErr: true},
		{dir: "ubuntu1404-malformed", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			keys, fs, err := runProbe(t, kernelProbe{}, fixtureEnv(t, "kernel", tt.dir))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if keys != tt.want {
				t.Fatalf("keys %q, want %q", keys, tt.want)
			}
			if len(fs) > 0 && !strings.Contains(fs[0].Summary, "4.4.0-148-generic") {
				t.Errorf("summary does not name the running kernel: %s", fs[0].Summary)
			}
		})
	}
}

func TestKernelMajorMinor(t *testing.T) {
	for in, want := range map[string][2]int{"4.4.0-148-generic": {4, 4}, "4.15": {4, 15}, "6.1.0-18-amd64": {6, 1}, "5.10+rc1": {5, 10}} {
		a, b, ok := kernelMajorMinor(in)
		if !ok || a != want[0] || b != want[1] {
			t.Errorf("%q: %d.%d %v", in, a, b, ok)
		}
	}
	for _, bad := range []string{"", "x.y", "4", "4.x"} {
		if _, _, ok := kernelMajorMinor(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// adeagentctl starts for every `adeagentctl status`; net/http (and the crypto/tls it brings)
// made it twice the size and ~1.7 ms slower to start, a third of the round trip. The client in
// agent/api speaks HTTP/1.1 itself; this keeps it that way.
func TestNoNetHTTP(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case "net/http", "crypto/tls", "crypto/x509":
			t.Errorf("adeagentctl links %s; keep it out (see agent/api/transport.go)", pkg)
		}
	}
}

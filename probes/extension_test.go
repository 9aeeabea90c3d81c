package probes

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestExtensionProbe(t *testing.T) {
	const cs = "/var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-2.1.10"
	tests := []struct {
		name string
		want []wantFinding
	}{
		{"none", nil},
		// A successful handler, the agent's own directory, and ADE transitioning (ade.in-progress, not this probe).
		{"idle", nil},
		{"ostc", []wantFinding{{
			key: "extension.deprecated", blocker: true, severity: api.SeverityHigh,
			title:   "Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux 0.1.0.999",
			summary: []string{"/var/lib/waagent/Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux-0.1.0.999"},
			hint:    []string{"az vm extension delete"},
			related: "path:/var/lib/waagent/Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux-0.1.0.999",
		}}},
		{"dual-pass", []wantFinding{{
			key: "extension.deprecated", blocker: false, severity: api.SeverityMedium, title: "dual-pass ADE 0.1.0.999345",
			hint: []string{"-Migrate"},
		}}},
		{"transitioning", []wantFinding{{
			key: "extension.concurrent", blocker: true, severity: api.SeverityHigh,
			title:   "Microsoft.Azure.Extensions.CustomScript has an operation in progress",
			summary: []string{cs + "/status/1.status", "operation Enable", `"Enable in progress"`, "may be stuck"},
			command: "cat " + cs + "/status/1.status",
		}}},
		{"running-command", []wantFinding{{
			key: "extension.concurrent", blocker: true, title: "VMAccessForLinux has an operation in progress",
			summary: []string{"pid 4242 runs its enable command (python3 vmaccess.py -enable)"},
			command: "ps -o pid,etime,args -p 4242", related: "pid:4242",
		}}},
		{"shim", []wantFinding{{
			key: "extension.concurrent", blocker: true, summary: []string{"pid 5150 runs its enable command"},
		}}},
		{"service", []wantFinding{{
			key: "extension.concurrent", blocker: false, severity: api.SeverityInfo, title: "has a running service",
			summary: []string{"pid 2200", "amacoreagent", "long-running service"},
		}}},
		{"no-manifest", []wantFinding{{
			key: "extension.concurrent", blocker: true, summary: []string{"pid 3000", "HandlerManifest.json is unreadable"},
		}}},
		{"malformed", []wantFinding{{
			key: "extension.concurrent", blocker: false, severity: api.SeverityLow, title: "Status of extension Microsoft.Azure.Extensions.CustomScript is unreadable",
			summary: []string{"parse " + cs + "/status/2.status"},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "extension", tc.name, Distro{ID: "ubuntu", VersionID: "22.04"})
			got, err := extensionProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "extension", got, tc.want)
		})
	}
}

func TestExtCommandSignatures(t *testing.T) {
	cmds := map[string]string{"enable": "extension_shim.sh -c main/handle.py --enable", "install": "./install.sh"}
	for cmdline, want := range map[string]string{
		"/bin/sh -c /var/lib/waagent/X/extension_shim.sh -c main/handle.py --enable": "enable",
		"python3 main/handle.py --enable":                                            "enable",
		"python3 main/handle.py -daemon":                                             "",
		"/bin/bash /var/lib/waagent/X/install.sh":                                    "install",
	} {
		if got := extOperationOf(cmdline, cmds); got != want {
			t.Errorf("extOperationOf(%q) = %q, want %q", cmdline, got, want)
		}
	}
}

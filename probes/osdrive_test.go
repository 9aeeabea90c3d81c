package probes

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestProcessHoldersFinding(t *testing.T) {
	cat := testCatalog(t)
	proc := func(pid int, comm, unit, container string, uses ...string) api.Holder {
		return api.Holder{Kind: api.KindProcess, PID: pid, Comm: comm, Unit: unit, Container: container, Uses: uses}
	}
	cases := []struct {
		name        string
		holders     []api.Holder
		incomplete  []api.Incomplete
		path        ADEPath
		want        bool
		blocker     bool
		mentions    []string
		wantCommand []string
	}{
		{name: "nothing", want: false},
		{name: "pid 1, self and never-stop units are spared", path: PathUnmount, want: false,
			holders: []api.Holder{proc(1, "systemd", "init.scope", "", "cwd"), proc(4242, "adeagent", "", "", "exe"),
				proc(700, "sshd", "ssh.service", "", "exe")}},
		{name: "service holders only: info", path: PathUnmount, want: true, blocker: false,
			holders:  []api.Holder{proc(800, "cron", "cron.service", "", "exe", "cwd")},
			mentions: []string{"1 processes in 1 units"}},
		{name: "process outside any unit blocks", path: PathUnmount, want: true, blocker: true,
			holders:  []api.Holder{proc(900, "python3", "", "", "fd"), proc(800, "cron", "cron.service", "", "exe")},
			mentions: []string{"python3 (pid 900) outside any systemd unit via fd"}},
		{name: "session scope gets a stop command", path: PathUnmount, want: true, blocker: true,
			holders:     []api.Holder{proc(901, "tail", "session-3.scope", "", "fd")},
			wantCommand: []string{"systemctl", "stop", "session-3.scope"}},
		{name: "thread with own cwd is hidden from fuser", path: PathUnmount, want: true, blocker: true,
			holders:  []api.Holder{{Kind: api.KindThread, PID: 950, TID: 951, Comm: "java", Unit: "app.service", Uses: []string{"cwd"}}},
			mentions: []string{"thread 951", "fuser cannot see"}},
		{name: "container process", path: PathUnmount, want: true, blocker: true,
			holders:     []api.Holder{proc(960, "mongod", "docker-0123456789abcdef.scope", "docker:0123456789abcdef0123", "fd")},
			wantCommand: []string{"docker", "stop", "0123456789ab"}},
		{name: "unreadable process is not clean", path: PathUnmount, want: true, blocker: true,
			incomplete: []api.Incomplete{{PID: 77, What: "fd", Reason: "permission denied"}},
			mentions:   []string{"could not be inspected"}},
		{name: "pid 1 unreadable alone is spared", path: PathUnmount, want: false,
			incomplete: []api.Incomplete{{PID: 1, What: "fd", Reason: "permission denied"}}},
		{name: "online path does not block", path: PathOnline, want: true, blocker: false,
			holders:  []api.Holder{proc(900, "python3", "", "", "fd")},
			mentions: []string{"online"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := &api.HoldersReport{Holders: c.holders, Incomplete: c.incomplete}
			f, ok := processHoldersFinding(rep, 4242, cat, c.path)
			if ok != c.want {
				t.Fatalf("finding = %v, want %v (%+v)", ok, c.want, f)
			}
			if !ok {
				return
			}
			if f.Key != "os-drive.holders" || f.Blocker != c.blocker {
				t.Errorf("key %q blocker %v, want os-drive.holders blocker %v", f.Key, f.Blocker, c.blocker)
			}
			for _, m := range c.mentions {
				if !strings.Contains(f.Summary, m) {
					t.Errorf("summary %q does not mention %q", f.Summary, m)
				}
			}
			if c.wantCommand != nil && !hasCommand(f.Remediation.Commands, c.wantCommand) {
				t.Errorf("commands %q lack %q", f.Remediation.Commands, c.wantCommand)
			}
		})
	}
}

func hasCommand(cmds [][]string, want []string) bool {
	for _, c := range cmds {
		if strings.Join(c, " ") == strings.Join(want, " ") {
			return true
		}
	}
	return false
}

func TestKernelHoldersFinding(t *testing.T) {
	virtual := []api.Holder{
		{Kind: api.KindMount, Mount: "/proc", Detail: "proc proc (0:21) is mounted inside the target"},
		{Kind: api.KindMount, Mount: "/run/user/1000", Detail: "tmpfs tmpfs (0:50) is mounted inside the target"},
	}
	if _, ok := kernelHoldersFinding(&api.HoldersReport{Holders: virtual}, PathUnmount); ok {
		t.Error("virtual filesystems under /proc, /run reported as kernel holders")
	}
	real := append(virtual,
		api.Holder{Kind: api.KindMount, Mount: "/data", Detail: "ext4 /dev/sdc1 (8:33) is mounted inside the target"},
		api.Holder{Kind: api.KindSwap, Paths: []string{"/swapfile"}, Detail: "swap file /swapfile is active on the target"},
		api.Holder{Kind: api.KindLoop, Paths: []string{"/var/lib/x.img"}, Detail: "loop device /dev/loop3 is backed by /var/lib/x.img"},
	)
	f, ok := kernelHoldersFinding(&api.HoldersReport{Holders: real}, PathUnmount)
	if !ok || !f.Blocker || f.Key != "os-drive.kernel-holders" {
		t.Fatalf("finding %+v ok=%v, want a blocker", f, ok)
	}
	for _, want := range [][]string{{"umount", "/data"}, {"swapoff", "/swapfile"}} {
		if !hasCommand(f.Remediation.Commands, want) {
			t.Errorf("commands %q lack %q", f.Remediation.Commands, want)
		}
	}
	serviceNS := []api.Holder{{Kind: api.KindNamespace, PID: 612, Unit: "systemd-logind.service", Paths: []string{"/"},
		Detail: "mount namespace mnt:[4026532201] has the target mounted"}}
	if _, ok := kernelHoldersFinding(&api.HoldersReport{Holders: serviceNS}, PathUnmount); ok {
		t.Error("a service's private mount namespace reported; ADE's restart of the service clears it")
	}
	containerNS := []api.Holder{{Kind: api.KindNamespace, PID: 900, Unit: "docker-0123456789abcdef.scope",
		Container: "docker:0123456789abcdef0123", Paths: []string{"/"}, Detail: "mount namespace mnt:[4026532300] has the target mounted"}}
	if f, ok := kernelHoldersFinding(&api.HoldersReport{Holders: containerNS}, PathUnmount); !ok || !f.Blocker {
		t.Errorf("a container's mount namespace holding the OS drive is not a blocker: %+v", f)
	}
	if strings.Contains(f.Summary, "/proc") {
		t.Errorf("summary mentions a virtual mount: %q", f.Summary)
	}
	if f, _ := kernelHoldersFinding(&api.HoldersReport{Holders: real}, PathOnline); f.Blocker {
		t.Error("kernel holders block on the online path")
	}
}

// TestOSDriveProbeOnHost runs the probe on this machine's real OS drive with a process of
// ours holding it outside any systemd unit.
func TestOSDriveProbeOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to read every process's fd table")
	}
	f, err := os.CreateTemp("/var/tmp", "adeagent-osdrive-*")
	if err != nil {
		t.Skip("no writable /var/tmp on the OS drive")
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.Command("sh", "-c", "exec 3<"+f.Name()+"; exec sleep 60")
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	env := &Env{Root: hostroot.Host, Distro: Distro{Path: PathUnmount},
		OSDrive: NewOSDriveScan(hostroot.Host, unmount.Options{})}
	var found []api.Finding
	for range 50 { // until the shell has exec'd sleep with the fd open
		env.OSDrive = NewOSDriveScan(hostroot.Host, unmount.Options{})
		if found, err = (osDriveProbe{}).Run(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		if related(found, "os-drive.holders", fmt.Sprint(cmd.Process.Pid)) {
			return
		}
	}
	t.Fatalf("pid %d holding %s not in os-drive.holders: %+v", cmd.Process.Pid, f.Name(), found)
}

func related(fs []api.Finding, key, id string) bool {
	for _, f := range fs {
		if f.Key != key || !f.Blocker {
			continue
		}
		for _, r := range f.Related {
			if r.ID == id {
				return true
			}
		}
	}
	return false
}

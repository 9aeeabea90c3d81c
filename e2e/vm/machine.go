package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/e2e/vm/proto"
)

// SELinux is the guest's LSM setup for a boot.
type SELinux int

const (
	// SELinuxOff boots with the kernel's default LSMs (no SELinux).
	SELinuxOff SELinux = iota
	// SELinuxPermissive boots with security=selinux selinux=1 enforcing=0.
	SELinuxPermissive
	// SELinuxEnforcing boots with security=selinux selinux=1 enforcing=1.
	SELinuxEnforcing
)

func (s SELinux) String() string {
	switch s {
	case SELinuxPermissive:
		return "selinux-permissive"
	case SELinuxEnforcing:
		return "selinux-enforcing"
	}
	return "plain"
}

// DataDisk is an extra virtio disk: /dev/disk/by-id/virtio-SERIAL in the guest.
type DataDisk struct {
	// Serial names the disk (at most 20 characters).
	Serial string
	// SizeMB is its size (sparse); default 1024.
	SizeMB int
	// Ext4Label, when set, makes it an ext4 filesystem with this label (built on the
	// host); otherwise the disk is blank.
	Ext4Label string
}

// Options configure a boot.
type Options struct {
	SELinux   SELinux
	DataDisks []DataDisk
	// MemoryMB is the guest's RAM; default 1536.
	MemoryMB int
	// BootTimeout bounds the boot up to a finished systemd start-up; default 4 minutes.
	BootTimeout time.Duration
	// ExtraKernelArgs are appended to the kernel command line.
	ExtraKernelArgs []string
}

// Result is what a command in the guest did.
type Result struct {
	Stdout   string
	Stderr   string
	ExitCode int
	Duration time.Duration
	TimedOut bool
}

func (r Result) String() string {
	s := fmt.Sprintf("exit %d after %v", r.ExitCode, r.Duration.Round(time.Millisecond))
	if r.TimedOut {
		s += " (timed out)"
	}
	return s + "\n--- stdout\n" + r.Stdout + "\n--- stderr\n" + r.Stderr
}

// Machine is a booted guest. Its qemu is killed when the test ends.
type Machine struct {
	t    testing.TB
	dir  string
	opts Options

	cmd    *exec.Cmd
	exited chan struct{}
	conn   net.Conn

	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan proto.Response
	dead    error
	bootID  string
}

// Boot starts a guest on a copy-on-write overlay of the cached image and returns when its
// guest agent answers and systemd has finished starting up.
func Boot(t testing.TB, opts Options) *Machine {
	t.Helper()
	Require(t)
	img := EnsureImage(t)
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 1536
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 4 * time.Minute
	}
	// A short directory: the chardev socket path must fit sockaddr_un.
	dir, err := os.MkdirTemp("", "advm-")
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{t: t, dir: dir, opts: opts, exited: make(chan struct{}), pending: map[uint64]chan proto.Response{}}
	t.Cleanup(m.cleanup)

	overlay := filepath.Join(dir, "root.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", img.Root, overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	args := m.qemuArgs(img, overlay)
	for i, d := range opts.DataDisks {
		path := filepath.Join(dir, fmt.Sprintf("data%d.raw", i))
		if err := makeDataDisk(path, d); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("data%d", i)
		args = append(args,
			"-drive", "file="+path+",if=none,id="+id+",format=raw,cache=unsafe",
			"-device", "virtio-blk-pci,drive="+id+",serial="+d.Serial)
	}
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer qlog.Close()
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	m.cmd = exec.Command("qemu-system-x86_64", args...)
	m.cmd.Stderr = qlog
	start := time.Now()
	// The serial console, each line stamped with the seconds since qemu started.
	m.cmd.Stdout = &stampWriter{w: console, start: start, bol: true}
	// qemu dies with the test process, whatever happens to it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() {
		m.cmd.Wait() //nolint:errcheck // the exit is reported through m.exited
		close(m.exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), opts.BootTimeout)
	defer cancel()
	if err := m.connect(ctx); err != nil {
		m.fatalf("connect to the guest agent's channel: %v", err)
	}
	if err := m.waitAgent(ctx, ""); err != nil {
		m.fatalf("guest agent did not answer within %v: %v", opts.BootTimeout, err)
	}
	ready := time.Since(start)
	state := m.waitSystem(ctx)
	Report(t, "boot %s: guest agent ready %.1fs, systemd %s at %.1fs (%s)",
		opts.SELinux, ready.Seconds(), state, time.Since(start).Seconds(), m.accel())
	return m
}

func (m *Machine) accel() string {
	if useKVM() {
		return "kvm"
	}
	return "tcg"
}

func (m *Machine) qemuArgs(img *Image, overlay string) []string {
	kargs := []string{"root=/dev/vda", "rw", "console=ttyS0", "quiet", "systemd.show_status=1",
		"mitigations=off", "systemd.firstboot=off"}
	switch m.opts.SELinux {
	case SELinuxPermissive:
		kargs = append(kargs, "security=selinux", "selinux=1", "enforcing=0")
	case SELinuxEnforcing:
		kargs = append(kargs, "security=selinux", "selinux=1", "enforcing=1")
	}
	kargs = append(kargs, m.opts.ExtraKernelArgs...)
	accel := []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
	if useKVM() {
		accel = []string{"-accel", "kvm", "-cpu", "host"}
	}
	args := []string{"-nodefaults", "-no-user-config", "-display", "none", "-nic", "none"}
	args = append(args, accel...)
	return append(args,
		"-smp", "2", "-m", fmt.Sprint(m.opts.MemoryMB),
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", strings.Join(kargs, " "),
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
		"-drive", "file="+overlay+",if=none,id=root,format=qcow2,cache=unsafe",
		"-device", "virtio-blk-pci,drive=root,serial=root",
		"-chardev", "socket,id=agent,path="+m.socketPath()+",server=on,wait=off",
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=agent,name="+proto.PortName,
	)
}

func (m *Machine) socketPath() string { return filepath.Join(m.dir, "agent.sock") }

func makeDataDisk(path string, d DataDisk) error {
	if d.Serial == "" || len(d.Serial) > 20 {
		return fmt.Errorf("data disk serial %q: want 1-20 characters", d.Serial)
	}
	size := d.SizeMB
	if size == 0 {
		size = 1024
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(size) << 20)
	f.Close()
	if err != nil {
		return err
	}
	if d.Ext4Label != "" {
		if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", d.Ext4Label, path).CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.ext4 %s: %v: %s", path, err, b)
		}
	}
	return nil
}

// connect dials qemu's chardev socket; one connection serves the machine's whole life,
// reboots included.
func (m *Machine) connect(ctx context.Context) error {
	for {
		c, err := net.Dial("unix", m.socketPath())
		if err == nil {
			m.conn = c
			go m.readLoop(c)
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("qemu exited: %s", m.qemuLog())
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Machine) readLoop(c net.Conn) {
	br := bufio.NewReaderSize(c, 1<<20)
	var err error
	for {
		var line []byte
		line, err = br.ReadBytes('\n')
		if err != nil {
			break
		}
		var resp proto.Response
		if json.Unmarshal(line, &resp) != nil {
			continue // a line cut by a guest reboot
		}
		m.mu.Lock()
		ch := m.pending[resp.ID]
		delete(m.pending, resp.ID)
		m.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
	m.mu.Lock()
	m.dead = fmt.Errorf("guest channel closed: %w", err)
	for id, ch := range m.pending {
		close(ch)
		delete(m.pending, id)
	}
	m.mu.Unlock()
}

// call sends req and waits for its answer until ctx ends.
func (m *Machine) call(ctx context.Context, req proto.Request) (proto.Response, error) {
	req.ID = m.nextID.Add(1)
	if dl, ok := ctx.Deadline(); ok && req.Op == proto.OpRun && req.TimeoutMS == 0 {
		// The guest kills the command a little before the host stops waiting.
		req.TimeoutMS = max(time.Until(dl)-2*time.Second, time.Second).Milliseconds()
	}
	line, err := json.Marshal(req)
	if err != nil {
		return proto.Response{}, err
	}
	ch := make(chan proto.Response, 1)
	m.mu.Lock()
	if m.dead != nil {
		m.mu.Unlock()
		return proto.Response{}, m.dead
	}
	m.pending[req.ID] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, req.ID)
		m.mu.Unlock()
	}()
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetWriteDeadline(dl) //nolint:errcheck
	}
	if _, err := m.conn.Write(append(line, '\n')); err != nil {
		return proto.Response{}, fmt.Errorf("send to the guest: %w", err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			m.mu.Lock()
			defer m.mu.Unlock()
			return proto.Response{}, m.dead
		}
		m.mu.Lock()
		m.bootID = resp.BootID
		m.mu.Unlock()
		if resp.Error != "" {
			return resp, errors.New("guest: " + resp.Error)
		}
		return resp, nil
	case <-m.exited:
		return proto.Response{}, fmt.Errorf("qemu exited: %s", m.qemuLog())
	case <-ctx.Done():
		return proto.Response{}, fmt.Errorf("no answer from the guest: %w", ctx.Err())
	}
}

// waitAgent pings until the agent answers from a boot other than notBoot.
func (m *Machine) waitAgent(ctx context.Context, notBoot string) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := m.call(pctx, proto.Request{Op: proto.OpPing})
		cancel()
		if err == nil && resp.BootID != notBoot {
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("qemu exited: %s", m.qemuLog())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if err == nil {
			time.Sleep(500 * time.Millisecond) // the old boot still answers
		}
	}
}

// waitSystem waits for systemd to finish starting up and returns its state (running,
// degraded …); a degraded system's failed units are logged.
func (m *Machine) waitSystem(ctx context.Context) string {
	r, err := m.Exec(ctx, Cmd{Argv: []string{"systemctl", "is-system-running", "--wait"}})
	if err != nil {
		m.fatalf("systemctl is-system-running --wait: %v", err)
	}
	state := strings.TrimSpace(r.Stdout)
	if state != "running" {
		f, _ := m.Exec(ctx, Cmd{Argv: []string{"systemctl", "--failed", "--no-legend"}})
		m.t.Logf("guest system state %q; failed units:\n%s", state, f.Stdout)
	}
	return state
}

// Cmd is a command for Exec.
type Cmd struct {
	Argv  []string
	Env   []string
	Stdin []byte
	// Timeout bounds the command in the guest; 0: the context's deadline (or 10 min).
	Timeout time.Duration
	// Files are written before the command runs.
	Files []proto.File
}

// Exec runs c as root in the guest. The error is about the channel (no answer, qemu
// died); the command's failure is in Result.ExitCode.
func (m *Machine) Exec(ctx context.Context, c Cmd) (Result, error) {
	resp, err := m.call(ctx, proto.Request{
		Op: proto.OpRun, Argv: c.Argv, Env: c.Env, Stdin: c.Stdin,
		TimeoutMS: c.Timeout.Milliseconds(), Files: c.Files,
	})
	return Result{
		Stdout: string(resp.Stdout), Stderr: string(resp.Stderr), ExitCode: resp.ExitCode,
		Duration: time.Duration(resp.DurationMS) * time.Millisecond, TimedOut: resp.TimedOut,
	}, err
}

// Run runs a bash script as root in the guest.
func (m *Machine) Run(ctx context.Context, script string) (Result, error) {
	return m.Exec(ctx, Cmd{Argv: []string{"/bin/bash", "-c", script}})
}

// MustRun runs a bash script (set -e -o pipefail) with a 5-minute bound and fails the
// test unless it exits 0.
func (m *Machine) MustRun(t testing.TB, script string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := m.Run(ctx, "set -eo pipefail\n"+script)
	if err != nil {
		t.Fatalf("guest: %s\n%v", script, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("guest: %s\n%s", script, r)
	}
	return r
}

// MustRunAny runs a bash script with a 5-minute bound and fails the test only when the
// guest does not answer; the exit code is the caller's to check.
func (m *Machine) MustRunAny(t testing.TB, script string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := m.Run(ctx, script)
	if err != nil {
		t.Fatalf("guest: %s\n%v", script, err)
	}
	return r
}

// Push writes a file in the guest.
func (m *Machine) Push(ctx context.Context, path string, data []byte, mode os.FileMode) error {
	_, err := m.call(ctx, proto.Request{Op: proto.OpRun, Files: []proto.File{{Path: path, Mode: uint32(mode.Perm()), Data: data}}})
	return err
}

// Fetch reads a file from the guest.
func (m *Machine) Fetch(ctx context.Context, path string) ([]byte, error) {
	resp, err := m.call(ctx, proto.Request{Op: proto.OpRead, Path: path})
	return resp.Data, err
}

// Reboot reboots the guest and returns when the new boot's agent answers and systemd
// has started up.
func (m *Machine) Reboot(ctx context.Context) error {
	m.mu.Lock()
	old := m.bootID
	m.mu.Unlock()
	start := time.Now()
	// The answer may be lost when the reboot is quick; the boot id tells.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	m.Exec(rctx, Cmd{Argv: []string{"systemctl", "reboot"}}) //nolint:errcheck
	cancel()
	if err := m.waitAgent(ctx, old); err != nil {
		return fmt.Errorf("guest agent after reboot: %w", err)
	}
	ready := time.Since(start)
	state := m.waitSystem(ctx)
	Report(m.t, "reboot: guest agent ready %.1fs, systemd %s at %.1fs", ready.Seconds(), state, time.Since(start).Seconds())
	return nil
}

// Shutdown powers the guest off (systemctl poweroff) and waits up to a minute for qemu to
// exit; then it kills qemu.
func (m *Machine) Shutdown() {
	select {
	case <-m.exited:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	m.Exec(ctx, Cmd{Argv: []string{"systemctl", "poweroff"}}) //nolint:errcheck // the answer may be lost
	cancel()
	select {
	case <-m.exited:
	case <-time.After(time.Minute):
		m.t.Logf("guest did not power off within a minute; killing qemu")
		m.kill()
	}
}

func (m *Machine) kill() {
	if m.cmd != nil && m.cmd.Process != nil {
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
		}
	}
}

func (m *Machine) cleanup() {
	if m.conn != nil {
		m.conn.Close()
	}
	m.kill()
	if m.t.Failed() {
		m.t.Logf("console log (tail) of %s:\n%s", m.dir, m.ConsoleTail(80))
	}
	if m.t.Failed() || os.Getenv(EnvKeep) == "1" {
		m.t.Logf("machine directory kept: %s", m.dir)
		return
	}
	os.RemoveAll(m.dir)
}

func (m *Machine) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf(format+"\nconsole (tail):\n%s", append(args, m.ConsoleTail(60))...)
}

// ConsoleTail returns the last n lines of the serial console log.
func (m *Machine) ConsoleTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (m *Machine) qemuLog() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "qemu.log"))
	return strings.TrimSpace(string(b))
}

// stampWriter prefixes every line with the seconds since start (the console log's
// timings survive reboots, unlike the kernel's).
type stampWriter struct {
	w     io.Writer
	start time.Time
	bol   bool
}

func (s *stampWriter) Write(p []byte) (int, error) {
	var out []byte
	for _, c := range p {
		if s.bol {
			out = fmt.Appendf(out, "[%7.2f] ", time.Since(s.start).Seconds())
			s.bol = false
		}
		if c == '\r' {
			continue
		}
		out = append(out, c)
		if c == '\n' {
			s.bol = true
		}
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Command guestagent is the VM test bed's agent inside the guest (installed as
// /usr/local/sbin/adeagent-e2e-guest, started by adeagent-e2e-guest.service). It answers
// proto.Requests arriving on the virtio-serial port proto.PortName: runs commands as root,
// writes files, reads files back. No network is involved.
//
// At start it copies itself into a memfd and re-executes from there, with "/" as its
// working directory, so that it never keeps an executable open on the OS drive: the
// stripdown tests unmount the OS drive under it.
//
// "adeagent-e2e-guest http METHOD SOCKET PATH" is a tiny HTTP-over-Unix-socket client for
// tests (the guest has no curl): it prints the status code on the first line, then the
// body; exit 0 when an answer came, 1 otherwise.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/adeagent/adeagent/e2e/vm/proto"
	"golang.org/x/sys/unix"
)

const (
	defaultTimeout = 10 * time.Minute
	maxLine        = 512 << 20
)

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 && os.Args[1] == "http" {
		os.Exit(httpCmd(os.Args[2:]))
	}
	relocate()
	if err := os.Chdir("/"); err != nil {
		log.Printf("chdir /: %v", err)
	}
	for {
		if err := serve(); err != nil {
			log.Printf("serve: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// relocatedEnv marks the re-executed agent.
const relocatedEnv = "ADEAGENT_E2E_GUEST_RELOCATED"

// relocate re-executes the agent from a memfd copy of itself unless it already runs from
// one: its executable is then on no filesystem at all. (/run is no option: initramfs-tools
// mounts it noexec.) A failure leaves it running from the disk, logged.
func relocate() {
	if os.Getenv(relocatedEnv) != "" {
		os.Unsetenv(relocatedEnv)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		log.Printf("relocate: %v", err)
		return
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		log.Printf("relocate: %v", err)
		return
	}
	fd, err := unix.MemfdCreate("adeagent-e2e-guest", 0)
	if err != nil {
		log.Printf("relocate: memfd_create: %v (running from %s)", err, exe)
		return
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if _, err := f.Write(data); err != nil {
		log.Printf("relocate: write memfd: %v (running from %s)", err, exe)
		return
	}
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	err = syscall.Exec(path, os.Args, append(os.Environ(), relocatedEnv+"=1"))
	log.Printf("relocate: exec %s: %v (running from %s)", path, err, exe)
	f.Close()
}

// findPort waits for the virtio-serial port named proto.PortName and returns its device.
func findPort() string {
	for logged := false; ; logged = true {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == proto.PortName {
				return "/dev/" + filepath.Base(filepath.Dir(n))
			}
		}
		if !logged {
			log.Printf("waiting for virtio-serial port %s", proto.PortName)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// serve answers requests until the port fails.
func serve() error {
	dev := findPort()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	log.Printf("serving on %s (%s)", dev, proto.PortName)
	boot := bootID()
	var wmu sync.Mutex
	reply := func(r proto.Response) {
		r.BootID = boot
		line, err := json.Marshal(r)
		if err != nil {
			line, _ = json.Marshal(proto.Response{ID: r.ID, BootID: boot, Error: err.Error()})
		}
		line = append(line, '\n')
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := f.Write(line); err != nil {
			log.Printf("write answer %d: %v", r.ID, err)
		}
	}
	br := bufio.NewReaderSize(f, 1<<20)
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		buf = append(buf, chunk...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if len(buf) > maxLine {
				log.Printf("dropping an over-long line")
				buf = buf[:0]
			}
			continue
		case errors.Is(err, io.EOF):
			// The host side is not connected: virtio-serial reads return 0 then.
			time.Sleep(100 * time.Millisecond)
			continue
		case err != nil:
			return err
		}
		line := bytes.TrimSpace(buf)
		buf = buf[:0]
		if len(line) == 0 {
			continue
		}
		var req proto.Request
		if err := json.Unmarshal(line, &req); err != nil {
			// A line cut by a reboot or a reconnect: the next one is whole again.
			log.Printf("dropping an unparsable line (%d bytes): %v", len(line), err)
			continue
		}
		go func() { reply(handle(req)) }()
	}
}

func handle(req proto.Request) proto.Response {
	resp := proto.Response{ID: req.ID}
	switch req.Op {
	case proto.OpPing:
	case proto.OpRead:
		data, err := os.ReadFile(req.Path)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.Data = data
	case proto.OpRun:
		for _, f := range req.Files {
			if err := writeFile(f); err != nil {
				resp.Error = err.Error()
				return resp
			}
		}
		if len(req.Argv) > 0 {
			run(req, &resp)
		}
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return resp
}

func writeFile(f proto.File) error {
	if !filepath.IsAbs(f.Path) {
		return fmt.Errorf("write %q: not an absolute path", f.Path)
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(f.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	tmp := f.Path + ".e2e-tmp"
	if err := os.WriteFile(tmp, f.Data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // umask
		return err
	}
	return os.Rename(tmp, f.Path)
}

func run(req proto.Request, resp *proto.Response) {
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Env = append(os.Environ(), "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_PAGER=cat", "PAGER=cat", "SYSTEMD_COLORS=0")
	cmd.Env = append(cmd.Env, req.Env...)
	cmd.Stdin = bytes.NewReader(req.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Grandchildren that keep the pipes open (daemons started by the command) do not
	// hold the answer back for long.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	resp.DurationMS = time.Since(start).Milliseconds()
	resp.Stdout, resp.Stderr = stdout.Bytes(), stderr.Bytes()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		resp.TimedOut = true
		resp.ExitCode = -1
	case errors.As(err, &ee):
		resp.ExitCode = ee.ExitCode()
	case err != nil && cmd.ProcessState != nil:
		// exec.ErrWaitDelay: the command exited, something it started held the pipes.
		resp.ExitCode = cmd.ProcessState.ExitCode()
	case err != nil:
		resp.Error = err.Error()
		resp.ExitCode = -1
	}
}

// pseudoHost is the Host the daemon's API accepts (api.PseudoHost; not imported so that
// daemon changes do not change the agent binary, whose hash keys the guest image).
const pseudoHost = "local-adeagent.sock"

// httpCmd: http METHOD SOCKET PATH.
func httpCmd(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: adeagent-e2e-guest http METHOD SOCKET PATH")
		return 2
	}
	method, sock, path := args[0], args[1], args[2]
	c := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	req, err := http.NewRequest(method, "http://"+pseudoHost+path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d\n%s\n", resp.StatusCode, body)
	return 0
}

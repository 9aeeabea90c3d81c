package vm

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

//go:embed build-image.sh
var buildScript []byte

// Packages is the guest's package list (Debian bookworm, no recommends). The SELinux
// packages serve the SELinux boots; the image is labelled at build time, so the same image
// boots with Debian's default LSM or with security=selinux. docker.io is there for the
// stripdown/quiesce scenarios (started on demand; disabled at boot).
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "udev", "kmod", "linux-image-cloud-amd64",
	"initramfs-tools", "zstd", "e2fsprogs", "psmisc", "procps", "lsof", "util-linux", "mount",
	"less", "adduser",
	"selinux-basics", "selinux-policy-default", "selinux-utils", "policycoreutils",
	"docker.io",
}

// imageSize is the guest disk's virtual size (sparse; overlays grow on demand).
const imageSize = "6G"

// guestAgentPath is where the guest agent lives in the image (the unit in build-image.sh
// names it).
const guestAgentPath = "/usr/local/sbin/adeagent-e2e-guest"

// Image is a built guest: a raw ext4 root (never written; machines boot qcow2 overlays of
// it), the kernel and the initramfs.
type Image struct {
	Root   string
	Kernel string
	Initrd string
}

var (
	imageOnce sync.Once
	imageRes  *Image
	imageErr  error
)

// EnsureImage returns the cached image for the current recipe and guest agent, building
// what is missing. One build per process; a file lock serialises processes.
func EnsureImage(t testing.TB) *Image {
	t.Helper()
	imageOnce.Do(func() {
		start := time.Now()
		var how string
		imageRes, how, imageErr = ensureImage(t)
		if imageErr == nil {
			Report(t, "image: %s in %.1fs", how, time.Since(start).Seconds())
		}
	})
	if imageErr != nil {
		t.Fatalf("guest image: %v", imageErr)
	}
	return imageRes
}

func recipeHash() string {
	h := sha256.New()
	h.Write(buildScript)
	fmt.Fprintf(h, "\x00%s\x00%s", strings.Join(Packages, " "), imageSize)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func cacheDir() string {
	if d := os.Getenv(EnvCache); d != "" {
		return d
	}
	return DefaultCache
}

func ensureImage(t testing.TB) (*Image, string, error) {
	cache := cacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN) //nolint:errcheck

	var how []string
	dir := filepath.Join(cache, "image-"+recipeHash())
	if _, err := os.Stat(filepath.Join(dir, "base.raw")); err != nil {
		start := time.Now()
		out, err := buildBase(dir)
		if err != nil {
			return nil, "", err
		}
		Report(t, "image: base built in %.1fs (%s)", time.Since(start).Seconds(), strings.Join(strings.Fields(out), " "))
		how = append(how, "base built")
		removeOld(cache, filepath.Base(dir))
	} else {
		how = append(how, "base cached")
	}

	agent, err := buildAgent(t)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(agent)
	root := filepath.Join(dir, "agent-"+hex.EncodeToString(sum[:])[:16]+".raw")
	if _, err := os.Stat(root); err != nil {
		if err := addAgent(dir, root, agent); err != nil {
			return nil, "", err
		}
		how = append(how, "guest agent added")
	} else {
		how = append(how, "guest agent cached")
	}
	return &Image{Root: root, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")},
		strings.Join(how, ", "), nil
}

// buildBase runs build-image.sh into dir (through dir.tmp, renamed when complete).
func buildBase(dir string) (string, error) {
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	script := filepath.Join(tmp, "build-image.sh")
	if err := os.WriteFile(script, buildScript, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, tmp)
	cmd.Env = append(os.Environ(), "PACKAGES="+strings.Join(Packages, " "), "IMAGE_SIZE="+imageSize)
	logf, err := os.Create(filepath.Join(tmp, "build.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = logf
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logf.Name())
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return "", fmt.Errorf("build-image.sh: %v\n%s", err, tail)
	}
	os.Remove(script)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return stdout.String(), nil
}

// removeOld deletes images of other recipes.
func removeOld(cache, keep string) {
	old, _ := filepath.Glob(filepath.Join(cache, "image-*"))
	for _, d := range old {
		if filepath.Base(d) != keep {
			os.RemoveAll(d)
		}
	}
}

// buildAgent builds the guest agent (static, reproducible: its hash keys the image).
func buildAgent(t testing.TB) ([]byte, error) {
	out := filepath.Join(t.TempDir(), "guestagent")
	// go test puts its own GOROOT/bin first in PATH.
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out,
		"github.com/adeagent/adeagent/e2e/vm/guestagent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the guest agent: %v\n%s", err, b)
	}
	return os.ReadFile(out)
}

// addAgent writes root: base.raw with the guest agent added by debugfs (no mount).
func addAgent(dir, root string, agent []byte) error {
	olds, _ := filepath.Glob(filepath.Join(dir, "agent-*.raw"))
	for _, o := range olds {
		os.Remove(o)
	}
	tmp := root + ".tmp"
	if b, err := exec.Command("cp", "--sparse=always", filepath.Join(dir, "base.raw"), tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("cp base.raw: %v: %s", err, b)
	}
	bin := filepath.Join(dir, "guestagent.bin")
	if err := os.WriteFile(bin, agent, 0o755); err != nil {
		return err
	}
	defer os.Remove(bin)
	cmds := strings.Join([]string{
		"write " + bin + " " + guestAgentPath,
		"set_inode_field " + guestAgentPath + " mode 0100755",
		"set_inode_field " + guestAgentPath + " uid 0",
		"set_inode_field " + guestAgentPath + " gid 0",
		"ea_set " + guestAgentPath + " security.selinux system_u:object_r:bin_t:s0",
	}, "\n") + "\n"
	cmdFile := filepath.Join(dir, "debugfs.cmds")
	if err := os.WriteFile(cmdFile, []byte(cmds), 0o644); err != nil {
		return err
	}
	defer os.Remove(cmdFile)
	if b, err := exec.Command("debugfs", "-w", "-f", cmdFile, tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs: %v: %s", err, b)
	}
	// debugfs exits 0 on failed commands: check the result.
	b, err := exec.Command("debugfs", "-R", "stat "+guestAgentPath, tmp).CombinedOutput()
	if err != nil || !strings.Contains(string(b), fmt.Sprintf("Size: %d", len(agent))) ||
		!strings.Contains(string(b), "security.selinux") {
		return fmt.Errorf("guest agent not in the image after debugfs (%v):\n%s", err, b)
	}
	return os.Rename(tmp, root)
}

// Command holderbench builds P processes × F open files on a loop mount and times
// `adeagent holders --mount` against `fuser -m` and `lsof` in the same run (alternating
// runs, one warmup each, medians, ratios). It also times a bare in-process /proc scan (the
// floor: readdir /proc, then per pid openat fd/ + getdents64 + fstatat per entry, in 4
// goroutines) so the per-fd cost of adeagent is compared with the floor measured on the
// same machine at the same moment.
//
// Targets on the 2-core reference machine at 3000 × 100: ≥ 4.5× faster than `fuser -m`,
// ≥ 6× faster than `lsof`, peak RSS < 40 MiB, per-fd cost within 1.3× of the floor.
// PASS/MISS is informational: the exit status is 0 unless setup or a run failed (1) or
// the usage was wrong / not root (2).
//
// Usage (as root, from the repository):
//
//	go run ./e2e/holderbench -p 3000 -f 100 -runs 7
//	go run ./e2e/holderbench -p 200 -f 100 -json
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// Targets (README).
const (
	targetFuser  = 4.5  // fuser -m / adeagent, wall
	targetLsof   = 6.0  // lsof / adeagent, wall
	targetRSSMiB = 40.0 // adeagent peak RSS
	targetPerFD  = 1.3  // adeagent in-scan µs/fd ÷ floor µs/fd
)

var (
	flagP        = flag.Int("p", 3000, "holder processes")
	flagF        = flag.Int("f", 100, "open files per holder")
	flagRuns     = flag.Int("runs", 7, "timed runs per tool (after one warmup)")
	flagAdeagent = flag.String("adeagent", "", "adeagent binary (default: go build ./cmd/adeagent into a temp dir)")
	flagJSON     = flag.Bool("json", false, "print the results as JSON")
	flagHold     = flag.Bool("hold", false, "set up the mount and the holders, print the mount point, and wait for Ctrl-C (for profiling)")
	flagDiffF    = flag.Int("diff-f", 10, "after the main rounds, restart the holders with this many files each and time adeagent and the floor again, for the marginal cost per fd; 0: skip")
	flagQuiet    = flag.Float64("quiet", 10, "before each round, wait (up to -quiet-wait) until other processes use less than this `percent` of all CPUs; 0: don't wait")
	flagQuietMax = flag.Duration("quiet-wait", 2*time.Minute, "longest wait for a quiet machine per round")
)

func main() {
	flag.Parse()
	if *flagP < 1 || *flagF < 1 || *flagRuns < 1 {
		fmt.Fprintln(os.Stderr, "holderbench: -p, -f and -runs must be ≥ 1")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "holderbench: needs root (it creates a loop mount)")
		os.Exit(2)
	}
	// fds leaked to us by our parent would otherwise go to every holder.
	unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	b := &bench{}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "holderbench: %v: cleaning up\n", s)
		b.cleanup()
		os.Exit(130)
	}()
	code := 0
	if err := b.run(); err != nil {
		b.mu.Lock()
		closing := b.closing
		b.mu.Unlock()
		if closing {
			select {} // interrupted: the signal handler cleans up and exits
		}
		fmt.Fprintln(os.Stderr, "holderbench:", err)
		code = 1
		var se setupError
		if errors.As(err, &se) {
			code = 2
		}
	}
	b.cleanup()
	os.Exit(code)
}

type setupError struct{ error }

func setupf(format string, a ...any) error { return setupError{fmt.Errorf(format, a...)} }

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "holderbench: "+format+"\n", a...) }

// bench owns everything that must be undone: holders, mount, loop device, temp dir.
type bench struct {
	mu      sync.Mutex
	closing bool
	once    sync.Once
	holders []int // pids
	files   []*os.File
	tmp     string // temp dir: image, mount point, built binary, captured output
	loop    string // /dev/loopN
	mnt     string
}

func (b *bench) run() error {
	P, F := *flagP, *flagF
	for _, tool := range []string{"fuser", "lsof", "mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return setupf("%s not found: %v", tool, err)
		}
	}
	// The harness keeps F files plus one pidfd per holder open.
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return setupf("getrlimit: %v", err)
	}
	if need := uint64(F + P + 64); rl.Cur < need {
		if rl.Max < need {
			return setupf("RLIMIT_NOFILE hard limit %d < %d needed (F + P + 64); raise it (ulimit -Hn)", rl.Max, need)
		}
		rl.Cur = need
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return setupf("setrlimit: %v", err)
		}
	}

	tmp, err := os.MkdirTemp("", "holderbench-")
	if err != nil {
		return setupf("%v", err)
	}
	b.mu.Lock()
	b.tmp = tmp
	b.mu.Unlock()

	bin := *flagAdeagent
	if bin == "" {
		bin = filepath.Join(tmp, "adeagent")
		logf("building adeagent")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/adeagent/adeagent/cmd/adeagent").CombinedOutput()
		if err != nil {
			return setupf("go build ./cmd/adeagent (run from the repository, or pass -adeagent): %v\n%s", err, out)
		}
	}
	if err := b.setupMount(F); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(b.mnt, &st); err != nil {
		return setupf("stat %s: %v", b.mnt, err)
	}
	dev := st.Dev
	if err := b.startHolders(P, F); err != nil {
		return err
	}
	if *flagHold {
		fmt.Printf("%s\n", b.mnt)
		logf("holding %d × %d on %s; Ctrl-C or SIGTERM to clean up", P, F, b.mnt)
		select {} // the signal handler cleans up and exits
	}
	res, err := b.measure(bin, dev)
	if err != nil {
		return err
	}
	if F2 := *flagDiffF; F2 > 0 && F2 < F {
		if err := b.measureMarginal(res, bin, dev, F2); err != nil {
			return err
		}
	}
	if *flagJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.print(os.Stdout)
	return nil
}

// setupMount creates a sparse 1 GiB ext4 image, attaches it to a loop device, mounts it
// and opens F files on it.
func (b *bench) setupMount(F int) error {
	img := filepath.Join(b.tmp, "fs.img")
	mnt := filepath.Join(b.tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return setupf("%v", err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return setupf("%v", err)
	}
	if err := os.Truncate(img, 1<<30); err != nil {
		return setupf("truncate %s: %v", img, err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		return setupf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		return setupf("losetup --find --show: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	b.mu.Lock()
	b.loop, b.mnt = loop, mnt // cleanup unmounts mnt whether or not the mount got done
	b.mu.Unlock()
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		return setupf("mount %s %s: %v", loop, mnt, err)
	}
	for i := range F {
		f, err := os.Create(filepath.Join(mnt, "f"+strconv.Itoa(i)))
		if err != nil {
			return setupf("%v", err)
		}
		b.mu.Lock()
		b.files = append(b.files, f)
		b.mu.Unlock()
	}
	logf("mounted %s (%s) on %s with %d files", img, loop, mnt, F)
	return nil
}

// startHolders starts P copies of `sleep infinity` that inherit the F files (fds 3…F+2)
// with cwd "/", then closes the harness's own copies so the holders are exactly P.
// The harness keeps only the pids: an unreaped child's pid cannot be reused, so killing
// it by pid is safe, and not keeping a pidfd per holder keeps the harness's fd table (which
// every child it execs copies and then closes) small.
func (b *bench) startHolders(P, F int) error {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return setupf("sleep: %v", err)
	}
	t0 := time.Now()
	for i := range P {
		cmd := exec.Command(sleep, "infinity")
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		b.mu.Lock()
		if b.closing {
			b.mu.Unlock()
			return setupf("interrupted")
		}
		cmd.ExtraFiles = b.files
		err := cmd.Start()
		if err == nil {
			b.holders = append(b.holders, cmd.Process.Pid)
			cmd.Process.Release()
		}
		b.mu.Unlock()
		if err != nil {
			return setupf("starting holder %d of %d: %v", i+1, P, err)
		}
	}
	b.mu.Lock()
	for _, f := range b.files {
		f.Close()
	}
	b.files = nil
	b.mu.Unlock()
	// Start returns once the child is past exec, but it may still be closing the
	// close-on-exec fds it copied from us: wait until every holder has exactly F+3 fds.
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range b.holders {
		for {
			n, err := countFDs(pid)
			if err != nil {
				return setupf("holder %d: %v", pid, err)
			}
			if n == F+3 {
				break
			}
			if time.Now().After(deadline) {
				return setupf("holder %d has %d fds, want %d", pid, n, F+3)
			}
			time.Sleep(time.Millisecond)
		}
	}
	logf("started %d holders in %v", P, time.Since(t0).Round(time.Millisecond))
	return nil
}

func countFDs(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

// cleanup kills the holders by pid, unmounts, detaches the loop device and removes the
// temp dir. It runs once, from the normal path or from the signal handler.
func (b *bench) cleanup() {
	b.once.Do(func() {
		b.mu.Lock()
		b.closing = true
		holders, files, tmp, loop, mnt := b.holders, b.files, b.tmp, b.loop, b.mnt
		b.files = nil
		b.mu.Unlock()
		for _, f := range files {
			f.Close()
		}
		for _, pid := range holders {
			unix.Kill(pid, unix.SIGKILL) // our own unreaped child, by pid; never by name
		}
		for _, pid := range holders {
			unix.Wait4(pid, nil, 0, nil)
		}
		if mnt != "" {
			err := unix.Unmount(mnt, 0)
			for i := 0; errors.Is(err, unix.EBUSY) && i < 50; i++ {
				time.Sleep(100 * time.Millisecond)
				err = unix.Unmount(mnt, 0)
			}
			if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
				logf("umount %s: %v; detaching lazily", mnt, err)
				if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
					logf("umount -l %s: %v (left mounted; not removing %s)", mnt, err, tmp)
					return
				}
			}
			// rmdir only, so a mount point is never recursed into.
			if err := os.Remove(mnt); err != nil {
				logf("%v (not removing %s)", err, tmp)
				return
			}
		}
		if loop != "" {
			if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
				logf("losetup -d %s: %v: %s", loop, err, out)
			}
		}
		if tmp != "" {
			if err := os.RemoveAll(tmp); err != nil {
				logf("%v", err)
			}
		}
	})
}

// stopHolders kills and reaps the holders (by pid, never by name).
func (b *bench) stopHolders() {
	b.mu.Lock()
	holders := b.holders
	b.holders = nil
	b.mu.Unlock()
	for _, pid := range holders {
		unix.Kill(pid, unix.SIGKILL)
	}
	for _, pid := range holders {
		unix.Wait4(pid, nil, 0, nil)
	}
}

// openFiles opens the first F files on the mount for the next startHolders.
func (b *bench) openFiles(F int) error {
	for i := range F {
		f, err := os.Open(filepath.Join(b.mnt, "f"+strconv.Itoa(i)))
		if err != nil {
			return setupf("%v", err)
		}
		b.mu.Lock()
		b.files = append(b.files, f)
		b.mu.Unlock()
	}
	return nil
}

// measureMarginal restarts the P holders with F2 files each and times adeagent and the
// floor again. The difference to the main rounds, divided by the difference in fds, is
// the marginal cost of one more fd — the research's "per extra fd" figure, free of the
// per-process work (cwd/root/exe, maps, attribution) both workloads share.
func (b *bench) measureMarginal(r *Results, bin string, dev uint64, F2 int) error {
	b.stopHolders()
	if err := b.openFiles(F2); err != nil {
		return err
	}
	if err := b.startHolders(r.P, F2); err != nil {
		return err
	}
	outPath := filepath.Join(b.tmp, "out")
	errPath := filepath.Join(b.tmp, "err")
	adeagent := []string{bin, "holders", "--mount", b.mnt, "--json"}
	var scan, floor Series
	fds2, floorFDs2 := 0, 0
	for i := -1; i < r.Runs; i++ {
		waitQuiet(*flagQuiet, *flagQuietMax)
		if i < 0 {
			logf("marginal: warmup at F=%d", F2)
		} else {
			logf("marginal: run %d/%d", i+1, r.Runs)
		}
		_, _, out, err := runTool(adeagent, outPath, errPath, true, 1)
		if err != nil {
			return err
		}
		var rep api.HoldersReport
		if err := json.Unmarshal(out, &rep); err != nil {
			return fmt.Errorf("adeagent --json output: %v", err)
		}
		if rep.Stats.FDs < r.P*F2 {
			return fmt.Errorf("marginal: adeagent saw %d fds, want ≥ %d", rep.Stats.FDs, r.P*F2)
		}
		fl, err := floorScan(dev, 4, false)
		if err != nil {
			return err
		}
		if fl.matches < r.P*F2 {
			return fmt.Errorf("marginal: floor saw %d fds on the mount, want ≥ %d", fl.matches, r.P*F2)
		}
		if i >= 0 {
			scan.add(rep.Stats.DurationMS)
			floor.add(ms(fl.dur))
		}
		fds2, floorFDs2 = rep.Stats.FDs, fl.fds
	}
	scan.finish()
	floor.finish()
	r.DiffF = F2
	r.AdeagentScanDiffF, r.FloorDiffF = scan, floor
	r.MarginalUSPerFD = 1000 * (r.AdeagentScan.Median - scan.Median) / float64(r.AdeagentFDs-fds2)
	r.FloorMarginalUSPerFD = 1000 * (r.Floor.Median - floor.Median) / float64(r.SystemFDs-floorFDs2)
	r.MarginalRatio = r.MarginalUSPerFD / r.FloorMarginalUSPerFD
	r.Pass["perfd-marginal"] = r.MarginalRatio <= targetPerFD
	return nil
}

// Results is what one benchmark run measured. Times are milliseconds; medians over Runs.
type Results struct {
	P               int    `json:"p"`
	F               int    `json:"f"`
	Runs            int    `json:"runs"`
	CPUs            int    `json:"cpus"`
	Kernel          string `json:"kernel"`
	SystemProcs     int    `json:"system_procs"`     // pids seen by the floor scan
	SystemFDs       int    `json:"system_fds"`       // fds seen by the floor scan
	FloorMatches    int    `json:"floor_matches"`    // fds on the mount seen by the floor scan
	AdeagentProcs   int    `json:"adeagent_procs"`   // stats.processes of adeagent
	AdeagentFDs     int    `json:"adeagent_fds"`     // stats.fds of adeagent
	AdeagentHolders int    `json:"adeagent_holders"` // process holders reported
	Incomplete      int    `json:"adeagent_incomplete"`
	FirstIncomplete string `json:"adeagent_first_incomplete,omitempty"`
	FuserPIDs       int    `json:"fuser_pids"`         // pids listed by fuser -m (warmup run)
	LsofLines       int    `json:"lsof_files"`         // lines printed by lsof (warmup run, without header)
	FDSource        string `json:"adeagent_fd_source"` // stats.fd_source of adeagent: bpf or proc
	FDSourceNote    string `json:"adeagent_fd_source_note,omitempty"`
	AdeagentWall    Series `json:"adeagent_wall_ms"`
	AdeagentScan    Series `json:"adeagent_scan_ms"`
	// The same with --fd-source proc (a statx through /proc per fd), for comparison.
	AdeagentProcWall Series  `json:"adeagent_proc_wall_ms"`
	AdeagentProcScan Series  `json:"adeagent_proc_scan_ms"`
	Fuser            Series  `json:"fuser_ms"`
	Lsof             Series  `json:"lsof_ms"`
	Floor            Series  `json:"floor_ms"`
	FloorProc        Series  `json:"floor_proc_ms"`         // floor + cwd/root/exe/maps
	RSSMiB           float64 `json:"adeagent_peak_rss_mib"` // max over runs
	RSSUpperBound    bool    `json:"adeagent_rss_upper_bound"`
	HarnessRSSMiB    float64 `json:"harness_rss_mib"`
	FuserRatio       float64 `json:"fuser_over_adeagent"`
	LsofRatio        float64 `json:"lsof_over_adeagent"`
	ScanUSPerFD      float64 `json:"adeagent_scan_us_per_fd"`
	WallUSPerFD      float64 `json:"adeagent_wall_us_per_fd"`
	FloorUSPerFD     float64 `json:"floor_us_per_fd"`
	FloorProcUSPerFD float64 `json:"floor_proc_us_per_fd"`
	PerFDRatio       float64 `json:"scan_over_floor_per_fd"`
	// The marginal rounds (-diff-f): the same P holders with DiffF files each.
	DiffF                int     `json:"diff_f,omitempty"`
	AdeagentScanDiffF    Series  `json:"adeagent_scan_ms_diff_f"`
	FloorDiffF           Series  `json:"floor_ms_diff_f"`
	MarginalUSPerFD      float64 `json:"adeagent_marginal_us_per_fd,omitempty"`
	FloorMarginalUSPerFD float64 `json:"floor_marginal_us_per_fd,omitempty"`
	MarginalRatio        float64 `json:"marginal_over_floor_per_fd,omitempty"`
	WallPerFDRatio       float64 `json:"wall_over_floor_per_fd"`
	// CPU used by other processes (and stolen by the hypervisor) during the timed runs,
	// in percent of all CPUs: above a few percent the timings are noisy.
	ForeignCPU float64         `json:"foreign_cpu_pct"`
	StealCPU   float64         `json:"steal_cpu_pct"`
	Pass       map[string]bool `json:"pass"`
}

// Series is one tool's timed runs.
type Series struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
}

func (s *Series) add(ms float64) { s.Runs = append(s.Runs, ms) }

func (s *Series) finish() {
	v := slices.Clone(s.Runs)
	slices.Sort(v)
	n := len(v)
	s.Median = v[n/2]
	if n%2 == 0 {
		s.Median = (v[n/2-1] + v[n/2]) / 2
	}
}

func (s Series) min() float64 { return slices.Min(s.Runs) }
func (s Series) max() float64 { return slices.Max(s.Runs) }

// measure runs one warmup of each tool (checking its output), then alternates the timed
// runs: adeagent, fuser -m, lsof, floor.
func (b *bench) measure(bin string, dev uint64) (*Results, error) {
	P, F := *flagP, *flagF
	var uts unix.Utsname
	unix.Uname(&uts)
	r := &Results{P: P, F: F, Runs: *flagRuns, CPUs: runtime.NumCPU(), Kernel: unix.ByteSliceToString(uts.Release[:])}
	outPath := filepath.Join(b.tmp, "out")
	errPath := filepath.Join(b.tmp, "err")
	adeagent := []string{bin, "holders", "--mount", b.mnt, "--json"}
	adeagentProc := []string{bin, "holders", "--mount", b.mnt, "--json", "--fd-source", "proc"}
	fuser := []string{"fuser", "-m", b.mnt}
	lsof := []string{"lsof", b.mnt}

	var foreign, steal float64 // percent, summed over the timed rounds
	for i := -1; i < *flagRuns; i++ {
		waitQuiet(*flagQuiet, *flagQuietMax)
		cpu0 := sampleCPU()
		warm := i < 0
		if warm {
			logf("warmup")
		} else {
			logf("run %d/%d", i+1, *flagRuns)
		}

		harnessKiB := resetHarnessRSS()
		wall, ru, out, err := runTool(adeagent, outPath, errPath, true, 1)
		if err != nil {
			return nil, err
		}
		var rep api.HoldersReport
		if err := json.Unmarshal(out, &rep); err != nil {
			return nil, fmt.Errorf("adeagent --json output: %v", err)
		}
		if err := r.checkAdeagent(&rep); err != nil {
			return nil, err
		}
		if !warm {
			r.AdeagentWall.add(ms(wall))
			r.AdeagentScan.add(rep.Stats.DurationMS)
			rss := float64(ru.Maxrss) / 1024
			r.RSSMiB = max(r.RSSMiB, rss)
			r.HarnessRSSMiB = max(r.HarnessRSSMiB, float64(harnessKiB)/1024)
			// A vfork child's maxrss starts at the parent's high-water mark (exec_mmap), so
			// ru_maxrss is exact only if it exceeds the harness's own.
			if ru.Maxrss <= harnessKiB {
				r.RSSUpperBound = true
			}
		}

		r.FDSource, r.FDSourceNote = rep.Stats.FDSource, rep.Stats.FDSourceNote

		wall, _, out, err = runTool(adeagentProc, outPath, errPath, true, 1)
		if err != nil {
			return nil, err
		}
		var repProc api.HoldersReport
		if err := json.Unmarshal(out, &repProc); err != nil {
			return nil, fmt.Errorf("adeagent --fd-source proc --json output: %v", err)
		}
		if err := r.checkAdeagent(&repProc); err != nil {
			return nil, fmt.Errorf("--fd-source proc: %w", err)
		}
		if err := r.checkAdeagent(&rep); err != nil { // its figures are the ones reported
			return nil, err
		}
		if !warm {
			r.AdeagentProcWall.add(ms(wall))
			r.AdeagentProcScan.add(repProc.Stats.DurationMS)
		}

		wall, _, out, err = runTool(fuser, outPath, errPath, warm, 0)
		if err != nil {
			return nil, err
		}
		if warm {
			r.FuserPIDs = len(strings.Fields(string(out)))
			if r.FuserPIDs < P {
				return nil, fmt.Errorf("fuser -m listed %d pids, want ≥ %d", r.FuserPIDs, P)
			}
		} else {
			r.Fuser.add(ms(wall))
		}

		wall, _, out, err = runTool(lsof, outPath, errPath, warm, 0)
		if err != nil {
			return nil, err
		}
		if warm {
			r.LsofLines = bytes.Count(out, []byte("\n")) - 1
			if r.LsofLines < P*F {
				return nil, fmt.Errorf("lsof listed %d files, want ≥ %d", r.LsofLines, P*F)
			}
		} else {
			r.Lsof.add(ms(wall))
		}

		fl, err := floorScan(dev, 4, false)
		if err != nil {
			return nil, err
		}
		flp, err := floorScan(dev, 4, true)
		if err != nil {
			return nil, err
		}
		r.SystemProcs, r.SystemFDs, r.FloorMatches = fl.procs, fl.fds, fl.matches
		if fl.matches < P*F {
			return nil, fmt.Errorf("floor scan saw %d fds on the mount, want ≥ %d", fl.matches, P*F)
		}
		if !warm {
			r.Floor.add(ms(fl.dur))
			r.FloorProc.add(ms(flp.dur))
			f, st := sampleCPU().foreign(cpu0)
			foreign, steal = foreign+f, steal+st
		}
	}
	r.ForeignCPU, r.StealCPU = foreign/float64(r.Runs), steal/float64(r.Runs)
	for _, s := range []*Series{&r.AdeagentWall, &r.AdeagentScan, &r.AdeagentProcWall, &r.AdeagentProcScan, &r.Fuser, &r.Lsof, &r.Floor, &r.FloorProc} {
		s.finish()
	}
	r.FuserRatio = r.Fuser.Median / r.AdeagentWall.Median
	r.LsofRatio = r.Lsof.Median / r.AdeagentWall.Median
	r.ScanUSPerFD = 1000 * r.AdeagentScan.Median / float64(r.AdeagentFDs)
	r.WallUSPerFD = 1000 * r.AdeagentWall.Median / float64(r.AdeagentFDs)
	r.FloorUSPerFD = 1000 * r.Floor.Median / float64(r.SystemFDs)
	r.PerFDRatio = r.ScanUSPerFD / r.FloorUSPerFD
	r.FloorProcUSPerFD = 1000 * r.FloorProc.Median / float64(r.SystemFDs)
	r.WallPerFDRatio = r.WallUSPerFD / r.FloorUSPerFD
	r.Pass = map[string]bool{
		"fuser": r.FuserRatio >= targetFuser,
		"lsof":  r.LsofRatio >= targetLsof,
		"rss":   r.RSSMiB < targetRSSMiB,
		"perfd": r.PerFDRatio <= targetPerFD,
	}
	return r, nil
}

// checkAdeagent asserts that adeagent found every holder and counted their fds.
func (r *Results) checkAdeagent(rep *api.HoldersReport) error {
	holders, fds := 0, 0
	for _, h := range rep.Holders {
		if h.Kind == api.KindProcess && h.FDs > 0 {
			holders++
			fds += h.FDs
		}
	}
	if holders < r.P || fds < r.P*r.F || rep.Stats.FDs < r.P*r.F {
		return fmt.Errorf("adeagent reported %d holders with %d fds (stats.fds %d), want ≥ %d holders with ≥ %d fds",
			holders, fds, rep.Stats.FDs, r.P, r.P*r.F)
	}
	r.AdeagentHolders, r.AdeagentFDs, r.AdeagentProcs = holders, rep.Stats.FDs, rep.Stats.Processes
	r.Incomplete = len(rep.Incomplete)
	if len(rep.Incomplete) > 0 {
		in := rep.Incomplete[0]
		r.FirstIncomplete = fmt.Sprintf("pid %d %s: %s", in.PID, in.What, in.Reason)
	}
	return nil
}

// runTool runs argv with stdout to /dev/null (or to outPath when capture is set, and then
// returns it) and stderr to errPath; it fails unless the exit status is wantExit.
func runTool(argv []string, outPath, errPath string, capture bool, wantExit int) (time.Duration, *syscall.Rusage, []byte, error) {
	stdout, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if capture {
		stdout, err = os.Create(outPath)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(errPath)
	if err != nil {
		return 0, nil, nil, err
	}
	defer stderr.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != wantExit {
		msg, _ := os.ReadFile(errPath)
		return 0, nil, nil, fmt.Errorf("%s: exit status %d, want %d (%v): %s",
			strings.Join(argv, " "), cmd.ProcessState.ExitCode(), wantExit, err, bytes.TrimSpace(msg))
	}
	var out []byte
	if capture {
		if out, err = os.ReadFile(outPath); err != nil {
			return 0, nil, nil, err
		}
	}
	return wall, cmd.ProcessState.SysUsage().(*syscall.Rusage), out, nil
}

// resetHarnessRSS resets the harness's RSS high-water mark to its current RSS and returns
// it in KiB; a child started next inherits it as its initial ru_maxrss.
func resetHarnessRSS() int64 {
	debug.FreeOSMemory()
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuSample is the machine's busy and steal time and the harness's own CPU time (itself
// and its reaped children: the tools) at one moment.
type cpuSample struct {
	at           time.Time
	busy, steal  time.Duration
	self, childs time.Duration
}

func sampleCPU() cpuSample {
	c := cpuSample{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		// cpu user nice system idle iowait irq softirq steal … (USER_HZ = 100)
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		tick := func(i int) time.Duration {
			if i >= len(f) {
				return 0
			}
			n, _ := strconv.ParseInt(f[i], 10, 64)
			return time.Duration(n) * 10 * time.Millisecond
		}
		c.busy = tick(1) + tick(2) + tick(3) + tick(6) + tick(7)
		c.steal = tick(8)
	}
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	unix.Getrusage(unix.RUSAGE_CHILDREN, &ru)
	c.childs = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return c
}

// foreign returns the percentage of all CPUs used by others and stolen since c0.
func (c cpuSample) foreign(c0 cpuSample) (foreign, steal float64) {
	total := float64(c.at.Sub(c0.at)) * float64(runtime.NumCPU())
	ours := (c.self - c0.self) + (c.childs - c0.childs)
	foreign = 100 * float64(c.busy-c0.busy-ours) / total
	return max(foreign, 0), 100 * float64(c.steal-c0.steal) / total
}

// waitQuiet waits until other processes used less than pct% of all CPUs over half a
// second, or maxWait has passed.
func waitQuiet(pct float64, maxWait time.Duration) {
	if pct <= 0 {
		return
	}
	deadline := time.Now().Add(maxWait)
	for waited := false; ; waited = true {
		c0 := sampleCPU()
		time.Sleep(500 * time.Millisecond)
		f, st := sampleCPU().foreign(c0)
		if f+st < pct {
			return
		}
		if time.Now().After(deadline) {
			logf("machine still busy (%.0f%% of CPUs used by others); measuring anyway", f+st)
			return
		}
		if !waited {
			logf("waiting for a quiet machine (%.0f%% of CPUs used by others)", f+st)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type floorResult struct {
	procs, fds, matches int
	dur                 time.Duration
}

// floorScan is the bare /proc scan: readdir /proc, then per pid openat("PID/fd"),
// getdents64 and one fstatat per entry, in `workers` goroutines. Nothing else. With
// perProc it also does the per-process work any correct scan needs (like the research
// prototype): fstatat of cwd, root and exe, and reading maps.
func floorScan(dev uint64, workers int, perProc bool) (floorResult, error) {
	start := time.Now()
	procfd, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return floorResult{}, err
	}
	defer unix.Close(procfd)
	var pids []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(procfd, buf)
		if err != nil {
			return floorResult{}, err
		}
		if n <= 0 {
			break
		}
		unmount.ForEachDirent(buf[:n], func(name []byte) {
			if name[0] >= '0' && name[0] <= '9' {
				pids = append(pids, string(name[:len(name)-1]))
			}
		})
	}
	var next, fds, matches atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			var st unix.Stat_t
			nfds, nmatch := 0, 0
			for {
				i := int(next.Add(1)) - 1
				if i >= len(pids) {
					break
				}
				if perProc {
					for _, n := range []string{"/cwd", "/root", "/exe"} {
						unix.Fstatat(procfd, pids[i]+n, &st, 0)
					}
					if fd, err := unix.Openat(procfd, pids[i]+"/maps", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
						for {
							if n, err := unix.Read(fd, buf); err != nil || n <= 0 {
								break
							}
						}
						unix.Close(fd)
					}
				}
				fdfd, err := unix.Openat(procfd, pids[i]+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					continue
				}
				for {
					n, err := unix.Getdents(fdfd, buf)
					if err != nil || n <= 0 {
						break
					}
					unmount.ForEachDirent(buf[:n], func(name []byte) {
						nfds++
						_, _, e := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(fdfd),
							uintptr(unsafe.Pointer(&name[0])), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
						if e == 0 && st.Dev == dev {
							nmatch++
						}
					})
				}
				unix.Close(fdfd)
			}
			fds.Add(int64(nfds))
			matches.Add(int64(nmatch))
		})
	}
	wg.Wait()
	return floorResult{procs: len(pids), fds: int(fds.Load()), matches: int(matches.Load()), dur: time.Since(start)}, nil
}

func (r *Results) print(w io.Writer) {
	pf := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	fmt.Fprintf(w, "holderbench: P=%d holders × F=%d files, %d runs (alternating, medians, 1 warmup), %d CPUs, kernel %s\n",
		r.P, r.F, r.Runs, r.CPUs, r.Kernel)
	src := r.FDSource
	if r.FDSourceNote != "" {
		src += " (" + r.FDSourceNote + ")"
	}
	fmt.Fprintf(w, "adeagent's open files came from: %s\n", src)
	fmt.Fprintf(w, "system: %d processes, %d fds (%d on the mount); adeagent scanned %d processes, %d fds, found %d holders (%d incomplete); fuser -m listed %d pids; lsof %d files\n\n",
		r.SystemProcs, r.SystemFDs, r.FloorMatches, r.AdeagentProcs, r.AdeagentFDs, r.AdeagentHolders, r.Incomplete, r.FuserPIDs, r.LsofLines)
	fmt.Fprintf(w, "%-36s %10s %10s %10s\n", "tool", "median ms", "min", "max")
	row := func(name string, s Series) {
		fmt.Fprintf(w, "%-36s %10.1f %10.1f %10.1f\n", name, s.Median, s.min(), s.max())
	}
	row("adeagent holders --mount (wall)", r.AdeagentWall)
	row("adeagent holders (in-scan, JSON)", r.AdeagentScan)
	row("  --fd-source proc (wall)", r.AdeagentProcWall)
	row("  --fd-source proc (in-scan)", r.AdeagentProcScan)
	row("fuser -m", r.Fuser)
	row("lsof MNT", r.Lsof)
	row("floor: bare /proc fd scan (4 gor.)", r.Floor)
	row("floor + cwd/root/exe/maps (4 gor.)", r.FloorProc)
	rss := fmt.Sprintf("%.1f MiB", r.RSSMiB)
	if r.RSSUpperBound {
		rss = "≤ " + rss
	}
	fmt.Fprintf(w, "\n%-40s %12s %10s  %s\n", "target", "value", "goal", "result")
	fmt.Fprintf(w, "%-40s %11.2f× %10s  %s\n", "fuser -m ÷ adeagent (wall)", r.FuserRatio, fmt.Sprintf("≥ %.1f×", targetFuser), pf(r.Pass["fuser"]))
	fmt.Fprintf(w, "%-40s %11.2f× %10s  %s\n", "lsof ÷ adeagent (wall)", r.LsofRatio, fmt.Sprintf("≥ %.1f×", targetLsof), pf(r.Pass["lsof"]))
	fmt.Fprintf(w, "%-40s %12s %10s  %s\n", "adeagent peak RSS (max over runs)", rss, fmt.Sprintf("< %.0f MiB", targetRSSMiB), pf(r.Pass["rss"]))
	fmt.Fprintf(w, "%-40s %11.2f× %10s  %s\n", "per-fd: adeagent in-scan ÷ floor", r.PerFDRatio, fmt.Sprintf("≤ %.1f×", targetPerFD), pf(r.Pass["perfd"]))
	if r.DiffF > 0 {
		fmt.Fprintf(w, "%-40s %11.2f× %10s  %s\n", fmt.Sprintf("marginal per fd (F=%d→%d) ÷ floor's", r.DiffF, r.F), r.MarginalRatio, fmt.Sprintf("≤ %.1f×", targetPerFD), pf(r.Pass["perfd-marginal"]))
	}
	fmt.Fprintf(w, "\nper fd: adeagent in-scan %.3f µs, adeagent wall %.3f µs (%.2f× floor), floor %.3f µs; floor + cwd/root/exe/maps %.3f µs (in-scan is %.2f× that)\n",
		r.ScanUSPerFD, r.WallUSPerFD, r.WallPerFDRatio, r.FloorUSPerFD, r.FloorProcUSPerFD, r.ScanUSPerFD/r.FloorProcUSPerFD)
	if r.DiffF > 0 {
		fmt.Fprintf(w, "marginal per fd, F=%d vs F=%d: adeagent %.3f µs (in-scan %.1f → %.1f ms), floor %.3f µs (%.1f → %.1f ms)\n",
			r.DiffF, r.F, r.MarginalUSPerFD, r.AdeagentScanDiffF.Median, r.AdeagentScan.Median, r.FloorMarginalUSPerFD, r.FloorDiffF.Median, r.Floor.Median)
	}
	fmt.Fprintf(w, "with --fd-source proc: fuser -m ÷ adeagent %.2f×, lsof ÷ adeagent %.2f×, in-scan per fd %.2f× the floor\n",
		r.Fuser.Median/r.AdeagentProcWall.Median, r.Lsof.Median/r.AdeagentProcWall.Median,
		1000*r.AdeagentProcScan.Median/float64(r.AdeagentFDs)/r.FloorUSPerFD)
	fmt.Fprintf(w, "other load during the timed runs: %.1f%% of all CPUs used by other processes, %.1f%% stolen (noisy above a few %%)\n",
		r.ForeignCPU, r.StealCPU)
	if r.FirstIncomplete != "" {
		fmt.Fprintf(w, "adeagent incomplete: %s\n", r.FirstIncomplete)
	}
	fmt.Fprintf(w, "harness RSS before each adeagent start ≤ %.1f MiB (a vfork child's ru_maxrss is at least that)\n", r.HarnessRSSMiB)
}

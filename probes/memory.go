package probes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
)

// MinMemTotalKB is ADE's own memory gate for OS encryption: MemTotal below it fails with
// "Not enough memory for enabling encryption on OS volume. 8 GB memory is recommended."
// (research: ade_extension.md §2, check_util.py is_insufficient_memory).
const MinMemTotalKB = 7_000_000

// memoryProbe checks memory.insufficient (ADE's MemTotal gate) and memory.tmpfs-copy
// (whether the trees ADE's stripdown copies into a tmpfs of half the RAM fit; unmount path
// only; research: ade_extension.md §1.2 "stripdown").
type memoryProbe struct {
	// budget bounds the tree walk; zero is memoryWalkBudget.
	budget time.Duration
}

// memoryWalkBudget is how long the tree walk may take before the probe gives up; the
// probe's timeout leaves room above it.
const memoryWalkBudget = 20 * time.Second

func (memoryProbe) Name() string { return "memory" }

// Timeout gives the tree walk room: /usr and /var/lib can hold hundreds of thousands of
// files on a cold cache.
func (memoryProbe) Timeout() time.Duration { return memoryWalkBudget + 10*time.Second }

func (p memoryProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	memKB, err := readMemTotal(env.Root.Proc("meminfo"))
	if err != nil {
		return nil, err
	}
	var out []api.Finding
	if memKB < MinMemTotalKB {
		out = append(out, api.Finding{
			Key:      "memory.insufficient",
			Title:    fmt.Sprintf("Not enough memory for OS encryption: %s of 7,000,000 kB", groupDigits(memKB)),
			Summary:  fmt.Sprintf("MemTotal is %s kB (%s); ADE refuses OS-drive encryption below 7,000,000 kB (about 6.7 GiB) with \"Not enough memory for enabling encryption on OS volume. 8 GB memory is recommended.\"", groupDigits(memKB), humanBytes(memKB*1024)),
			Severity: api.SeverityHigh,
			Blocker:  true,
			Remediation: api.Remediation{
				Hint: "Resize the VM to a size with at least 8 GiB of memory before enabling encryption (e.g. 'az vm resize -g RG -n VM --size Standard_D2s_v5' from a machine with the Azure CLI); it can be sized down again once encryption has finished.",
			},
		})
	}
	if env.Distro.Path != PathUnmount {
		return out, nil // only the unmount path copies the OS into RAM
	}

	budget := p.budget
	if budget <= 0 {
		budget = memoryWalkBudget
	}
	wctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	m := measureTrees(wctx, env, stripdownTrees(env))
	limit := memKB * 1024 / 2 // tmpfs without size= gets half of RAM
	if m.incomplete != nil && m.total <= limit {
		return out, fmt.Errorf("measure the trees ADE copies to RAM: %w (counted %s in %d files so far)", m.incomplete, humanBytes(m.total), m.files)
	}
	if f, ok := tmpfsFinding(env, memKB, m); ok {
		out = append(out, f)
	}
	return out, nil
}

// tmpfsFinding decides memory.tmpfs-copy: a blocker when the copy exceeds the tmpfs
// (half of MemTotal), a warning above 80 % of it.
func tmpfsFinding(env *Env, memKB int64, m treeSizes) (api.Finding, bool) {
	limit := memKB * 1024 / 2
	if m.total*10 < limit*8 {
		return api.Finding{}, false
	}
	f := api.Finding{Key: "memory.tmpfs-copy"}
	var largest []string
	for _, s := range m.largest(3) {
		largest = append(largest, fmt.Sprintf("%s %s", s.path, humanBytes(s.bytes)))
		f.Related = append(f.Related, api.Related{Kind: "path", ID: s.path})
	}
	at := ""
	if m.incomplete != nil {
		at = "at least "
	}
	what := fmt.Sprintf("Before it unmounts the OS drive, ADE copies /bin /etc /lib* /sbin /root /mnt, /usr/{bin,sbin,lib,lib64,share} and /var/{lib,local,lock,opt,run,spool,tmp} plus /var/log/azure into a tmpfs of half the RAM (MemTotal %s kB → %s). Those trees hold %s%s now",
		groupDigits(memKB), humanBytes(limit), at, humanBytes(m.total))
	if len(largest) > 0 {
		what += "; largest: " + strings.Join(largest, ", ")
	}
	if len(m.skipped) > 0 {
		what += "; not counted (separate mounts ADE's umount -a removes unless busy): " + strings.Join(m.skipped, ", ")
	}
	if m.total > limit {
		f.Title = fmt.Sprintf("ADE's RAM copy of the OS needs %s but the tmpfs holds %s", humanBytes(m.total), humanBytes(limit))
		f.Summary = what + ". The copy would fail with \"No space left on device\" and leave the VM half stripped down."
		f.Severity, f.Blocker = api.SeverityHigh, true
	} else {
		f.Title = fmt.Sprintf("ADE's RAM copy of the OS fills %d%% of the tmpfs", m.total*100/limit)
		f.Summary = what + ". It fits, but the services ADE restarts in the stripped-down OS need memory too."
		f.Severity = api.SeverityMedium
	}
	needGiB := (m.total*2*5/4)>>30 + 1
	f.Remediation.Hint = fmt.Sprintf("Shrink what is copied (move container images and databases under /var/lib to a data disk, clean package caches) or resize the VM to at least %d GiB of memory for the encryption.", needGiB)
	switch {
	case env.Distro.ID == "ubuntu":
		f.Remediation.Commands = [][]string{{"apt-get", "clean"}}
	case env.Distro.ID == "rhel" || env.Distro.ID == "centos":
		f.Remediation.Commands = [][]string{{"yum", "clean", "all"}}
	}
	return f, true
}

// stripdownTrees are the host paths ADE's StripdownState copies with `cp -ax`
// (research: ade_extension.md §1.2 step 4). /opt, /home, /srv, the rest of /var/log and
// /usr/local (x86) are not copied.
func stripdownTrees(env *Env) []string {
	trees := []string{
		"/bin", "/etc", "/mnt", "/sbin", "/lib", "/lib64", "/root",
		"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/share",
		"/var/lib", "/var/local", "/var/lock", "/var/opt", "/var/run", "/var/spool", "/var/tmp",
		"/var/log/azure",
	}
	switch d := env.Distro; {
	case d.ID == "rhel" || d.ID == "centos" || contains(d.IDLike, "rhel"):
		trees = append(trees, "/usr/libexec")
	case d.ID == "ubuntu" && env.Root.IsHost() && runtime.GOARCH == "arm64":
		trees = append(trees, "/usr/local") // arm64 Ubuntu copies /usr/local too
	}
	return trees
}

// treeSizes is what measureTrees found.
type treeSizes struct {
	total      int64
	files      int
	children   map[string]int64 // size per tree, or per immediate child of a tree directory
	skipped    []string         // trees that are mount points of their own
	incomplete error            // the walk stopped early (budget or cancellation)
}

type pathSize struct {
	path  string
	bytes int64
}

// largest returns the n biggest entries of children.
func (t treeSizes) largest(n int) []pathSize {
	var all []pathSize
	for p, b := range t.children {
		if b > 0 {
			all = append(all, pathSize{p, b})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].bytes != all[j].bytes {
			return all[i].bytes > all[j].bytes
		}
		return all[i].path < all[j].path
	})
	if len(all) > n {
		all = all[:n]
	}
	return all
}

type inodeKey struct{ dev, ino uint64 }

// walkWorkers is how many directories the tree walk reads at once.
const walkWorkers = 4

// measureTrees sums the allocated size (st_blocks) of the regular files `cp -ax` would copy
// from each tree: symlinks are copied as links, hard links once, and the walk does not
// cross into other filesystems. A tree that is itself a mount point is skipped (ADE
// unmounts what it can first). The walk stops when ctx ends, with incomplete set.
func measureTrees(ctx context.Context, env *Env, trees []string) treeSizes {
	w := &treeWalker{t: treeSizes{children: map[string]int64{}}, seen: map[inodeKey]bool{}}
	var jobs []walkJob
	for _, tree := range trees {
		full := env.Root.Path(tree)
		st, err := lstat(full)
		if err != nil || st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			continue // absent, or a symlink (merged /usr): cp -a copies the link only
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			if links := hardLinks(st, tree); links != nil {
				w.addDir(nil, 0, links)
			} else {
				w.addDir(map[string]int64{tree: int64(st.Blocks) * 512}, 1, nil)
			}
		case syscall.S_IFDIR:
			if parent, err := lstat(filepath.Dir(full)); err == nil && parent.Dev != st.Dev {
				w.t.skipped = append(w.t.skipped, tree)
				continue
			}
			jobs = append(jobs, walkJob{dir: full, bucket: tree, dev: uint64(st.Dev), top: true})
		}
	}
	w.run(ctx, jobs)
	return w.t
}

// walkJob is one directory to read. In a tree's top directory (top) every entry is its
// own bucket (its host path); below, everything counts towards the job's bucket.
type walkJob struct {
	dir, bucket string
	dev         uint64
	top         bool
}

type hardLink struct {
	key    inodeKey
	bucket string
	bytes  int64
}

// treeWalker reads directories in parallel and sums into t under mu.
type treeWalker struct {
	mu   sync.Mutex
	t    treeSizes
	seen map[inodeKey]bool
	wg   sync.WaitGroup
	jobs chan walkJob
}

func (w *treeWalker) run(ctx context.Context, initial []walkJob) {
	w.jobs = make(chan walkJob, 4096)
	w.wg.Add(len(initial))
	for _, j := range initial {
		w.jobs <- j // the buffer holds every tree
	}
	var workers sync.WaitGroup
	for range walkWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range w.jobs {
				w.dir(ctx, j)
			}
		}()
	}
	w.wg.Wait()
	close(w.jobs)
	workers.Wait()
}

// dir reads one directory, adds its files and queues its subdirectories (or walks them
// itself when the queue is full).
func (w *treeWalker) dir(ctx context.Context, j walkJob) {
	defer w.wg.Done()
	if err := ctx.Err(); err != nil {
		w.mu.Lock()
		if w.t.incomplete == nil {
			w.t.incomplete = err
		}
		w.mu.Unlock()
		return
	}
	f, err := os.Open(j.dir)
	if err != nil {
		return // unreadable: cp would fail on it too; nothing to count
	}
	defer f.Close()
	fd := int(f.Fd())
	sums := map[string]int64{}
	files := 0
	var links []hardLink
	for {
		ents, err := f.ReadDir(512)
		for _, e := range ents {
			if e.Type()&fs.ModeSymlink != 0 {
				continue // copied as a link
			}
			var st unix.Stat_t
			if unix.Fstatat(fd, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue // vanished since readdir
			}
			b := j.bucket
			if j.top {
				b = j.bucket + "/" + e.Name()
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				size := st.Blocks * 512
				if st.Nlink > 1 {
					links = append(links, hardLink{inodeKey{st.Dev, st.Ino}, b, size})
					continue
				}
				sums[b] += size
				files++
			case unix.S_IFDIR:
				if st.Dev != j.dev {
					continue // cp -x does not descend into other filesystems
				}
				sub := walkJob{dir: filepath.Join(j.dir, e.Name()), bucket: b, dev: j.dev}
				w.wg.Add(1)
				select {
				case w.jobs <- sub:
				default:
					w.dir(ctx, sub)
				}
			}
		}
		if err != nil {
			// io.EOF ends the directory; any other error (a directory that vanished or
			// broke mid-read) keeps what was counted so far.
			break
		}
	}
	w.addDir(sums, files, links)
}

// addDir adds one directory's sums; hard-linked files count once across all trees.
func (w *treeWalker) addDir(sums map[string]int64, files int, links []hardLink) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for b, n := range sums {
		w.t.total += n
		w.t.children[b] += n
	}
	w.t.files += files
	for _, l := range links {
		if w.seen[l.key] {
			continue
		}
		w.seen[l.key] = true
		w.t.total += l.bytes
		w.t.children[l.bucket] += l.bytes
		w.t.files++
	}
}

// hardLinks is the hard-link record of a single file tree (nil when it has one link).
func hardLinks(st *syscall.Stat_t, bucket string) []hardLink {
	if st.Nlink <= 1 {
		return nil
	}
	return []hardLink{{inodeKey{uint64(st.Dev), uint64(st.Ino)}, bucket, int64(st.Blocks) * 512}}
}

func lstat(p string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return &st, nil
}

// readMemTotal reads MemTotal in kB from a meminfo file.
func readMemTotal(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != "MemTotal" {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 || len(fields) > 2 || len(fields) == 2 && fields[1] != "kB" {
			return 0, fmt.Errorf("%s: malformed MemTotal line %q", path, sc.Text())
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%s: malformed MemTotal %q", path, fields[0])
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s: no MemTotal line", path)
}

// humanBytes renders n bytes as "3.8 GiB", "512.0 MiB" or "12.0 KiB".
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// groupDigits renders 7000000 as "7,000,000".
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

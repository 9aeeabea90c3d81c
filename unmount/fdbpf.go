package unmount

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The open-file part of the process scan can come from the kernel's task_file BPF iterator
// (Linux ≥ 5.8 with BTF) instead of a statx through /proc/PID/fd/N per descriptor: one
// small program walks every task's file table in the kernel and writes out only the files
// that may be on the target. At 3000 processes × 100 files that is ~0.1 s instead of ~0.9 s
// of statx and getdents, and it sees file tables /proc would refuse to show (EACCES).
//
// The program matches the file's superblock device (inode->i_sb->s_dev), which is what
// stat reports for almost every filesystem. The exceptions may report another device from
// their getattr: overlayfs (the layer's device for non-directories on older kernels; 6.x
// reports the overlay's own), btrfs and bcachefs (one anonymous device per subvolume) and
// shiftfs. Files on those come back as "verify" records, anon-inode files (an io_uring
// instance keeps registered files open) as "anon" records, and the scan decides them with
// the same statx / fdinfo look through /proc the slow path uses. So the fast path finds
// what the /proc path finds; the root tests compare the two on every scenario.

// FDSourceBPF and FDSourceProc say where a scan's open files came from
// (api.ScanStats.FDSource).
const (
	FDSourceBPF  = "bpf"  // the task_file BPF iterator
	FDSourceProc = "proc" // statx of every /proc/PID/fd/N
)

// Record kinds the iterator program writes.
const (
	fdRecTarget = 1 // the file's superblock is a target device
	fdRecVerify = 2 // stat may report another device: statx /proc/PID/fd/N to decide
	fdRecAnon   = 3 // an anon-inode file: maybe an io_uring instance
)

// Superblock magics of the filesystems whose stat device is not their superblock's.
var statDevMagics = []uint32{
	0x794c7630, // OVERLAYFS_SUPER_MAGIC
	0x9123683e, // BTRFS_SUPER_MAGIC
	0xca451a4e, // BCACHEFS_SUPER_MAGIC
	0x6a656a62, // SHIFTFS_MAGIC (Ubuntu kernels)
}

// maxBPFTargets bounds the target devices compared in the program (one jump each).
const maxBPFTargets = 256

// fdRecordSize is the size of a record: {tgid, tid, fd, kind, s_dev}, 5 × u32.
const fdRecordSize = 20

// fdRecord is one open file of a task that needs a look through /proc (fdRecVerify,
// fdRecAnon).
type fdRecord struct {
	fd   int32
	kind uint32
}

// taskFiles is what the iterator wrote of one task: files on a target are only counted
// (with the first few kept for example paths); the rest are kept to be looked at.
type taskFiles struct {
	tid     int
	targets int               // files on a target device
	first   [maxFDPaths]int32 // the first of them, for example paths
	nfirst  int
	dev     uint64 // devKey of the first one's device
	others  []fdRecord
}

// fdIndex is the open files of interest of every task, by thread-group id. It is kept
// small on purpose: 300,000 files on the target are 3,000 counters, not 300,000 records.
type fdIndex struct {
	byTgid map[int][]taskFiles
	// files is every open file the iterator saw (api.ScanStats.FDs).
	files int
}

// forTask returns what the iterator wrote of task tid of process tgid (nil: nothing).
func (x *fdIndex) forTask(tgid, tid int) *taskFiles {
	tasks := x.byTgid[tgid]
	for i := range tasks {
		if tasks[i].tid == tid {
			return &tasks[i]
		}
	}
	return nil
}

// add indexes one record.
func (x *fdIndex) add(tgid, tid int, fd int32, kind, kdev uint32) {
	t := x.forTask(tgid, tid)
	if t == nil {
		x.byTgid[tgid] = append(x.byTgid[tgid], taskFiles{tid: tid})
		t = &x.byTgid[tgid][len(x.byTgid[tgid])-1]
	}
	if kind != fdRecTarget {
		t.others = append(t.others, fdRecord{fd: fd, kind: kind})
		return
	}
	if t.targets == 0 {
		t.dev = devKey(kdev>>20, kdev&(1<<20-1))
	}
	t.targets++
	if t.nfirst < len(t.first) {
		t.first[t.nfirst] = fd
		t.nfirst++
	}
}

// kernelDev encodes a device number as the kernel's internal dev_t (MKDEV: 12-bit major,
// 20-bit minor), which is what s_dev holds.
func kernelDev(d Dev) (uint32, bool) {
	if d.Major >= 1<<12 || d.Minor >= 1<<20 {
		return 0, false
	}
	return d.Major<<20 | d.Minor, true
}

// errBPFUnusable wraps every reason the iterator cannot be used here.
var errBPFUnusable = errors.New("BPF task_file iterator unavailable")

// initPIDNSInode is the inode number of the initial pid namespace (PROC_PID_INIT_INO). The
// iterator reports tasks by their global ids, which are /proc's only in that namespace.
const initPIDNSInode = 0xEFFFFFFC

// bpfFDIndex runs the iterator once and indexes what it wrote. targets are the target
// devices; anonDev is the anon-inode filesystem's device (0: unknown).
func bpfFDIndex(ctx context.Context, procFD int, targets []Dev, anonDev uint64) (*fdIndex, error) {
	var stx unix.Statx_t
	if err := statxAt(procFD, &[]byte("self/ns/pid\x00")[0], &stx); err != nil {
		return nil, fmt.Errorf("%w: pid namespace: %v", errBPFUnusable, err)
	}
	if stx.Ino != initPIDNSInode {
		return nil, fmt.Errorf("%w: not in the initial pid namespace", errBPFUnusable)
	}
	var kdevs []uint32
	for _, d := range targets {
		k, ok := kernelDev(d)
		if !ok {
			return nil, fmt.Errorf("%w: device %d:%d has no kernel encoding", errBPFUnusable, d.Major, d.Minor)
		}
		if !slices.Contains(kdevs, k) {
			kdevs = append(kdevs, k)
		}
	}
	if len(kdevs) > maxBPFTargets {
		return nil, fmt.Errorf("%w: %d target devices", errBPFUnusable, len(kdevs))
	}
	var kanon uint32
	if anonDev != 0 {
		if k, ok := kernelDev(Dev{Major: uint32(anonDev >> 32), Minor: uint32(anonDev)}); ok {
			kanon = k
		}
	}

	// One BTF cache for the offsets and the program's attach target: decoding the kernel's
	// BTF is most of the fixed cost (~35 ms), so it is done once per scan. It is mmapped and
	// decoded lazily; nothing of it is kept after the scan.
	cache := btf.NewCache()
	spec, err := cache.Kernel()
	if err != nil {
		return nil, fmt.Errorf("%w: kernel BTF: %v", errBPFUnusable, err)
	}
	offs, err := kernelOffsets(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBPFUnusable, err)
	}
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			"files": {Name: "adeagent_files", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			"fds": {
				Name:         "adeagent_fds",
				Type:         ebpf.Tracing,
				AttachType:   ebpf.AttachTraceIter,
				AttachTo:     "task_file",
				Instructions: taskFileProgram(offs, kdevs, kanon),
				// bpf_seq_write is a GPL-only helper.
				License: "Dual MIT/GPL",
			},
		},
	}, ebpf.CollectionOptions{Cache: cache, Programs: ebpf.ProgramOptions{KernelTypes: spec}})
	if err != nil {
		return nil, fmt.Errorf("%w: load: %v", errBPFUnusable, err)
	}
	defer coll.Close()
	prog, counter := coll.Programs["fds"], coll.Maps["files"]
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return nil, fmt.Errorf("%w: attach: %v", errBPFUnusable, err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: open: %v", errBPFUnusable, err)
	}
	defer rd.Close()

	x := &fdIndex{byTgid: map[int][]taskFiles{}}
	buf := make([]byte, 3072*fdRecordSize)
	for {
		n, err := io.ReadFull(rd, buf)
		for i := 0; i+fdRecordSize <= n; i += fdRecordSize {
			x.add(int(binary.NativeEndian.Uint32(buf[i:])), int(binary.NativeEndian.Uint32(buf[i+4:])),
				int32(binary.NativeEndian.Uint32(buf[i+8:])), binary.NativeEndian.Uint32(buf[i+12:]),
				binary.NativeEndian.Uint32(buf[i+16:]))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		// The kernel does the walk without blocking on any filesystem; the scan's deadline
		// is still honoured between reads.
		if err == nil && ctx.Err() != nil {
			return nil, fmt.Errorf("read the BPF iterator: %w", ctx.Err())
		}
		if err != nil {
			// What was read is not the whole picture, so none of it is used.
			return nil, fmt.Errorf("read the BPF iterator: %w", err)
		}
	}
	var total uint64
	if err := counter.Lookup(uint32(0), &total); err != nil {
		return nil, fmt.Errorf("read the BPF file counter: %w", err)
	}
	x.files = int(total)
	return x, nil
}

// kernelLayout is the struct member offsets the program reads, from the running kernel's
// BTF (no compiled-in layout).
type kernelLayout struct {
	ctxMeta, ctxTask, ctxFD, ctxFile int16
	metaSeq                          int16
	taskTgid, taskPid                int16
	fileInode, inodeSb, sbDev        int16
	sbMagic                          int16
}

// kernelOffsets reads the layout from the running kernel's BTF.
func kernelOffsets(spec *btf.Spec) (kernelLayout, error) {
	var o kernelLayout
	for _, m := range []struct {
		dst         *int16
		typ, member string
	}{
		{&o.ctxMeta, "bpf_iter__task_file", "meta"},
		{&o.ctxTask, "bpf_iter__task_file", "task"},
		{&o.ctxFD, "bpf_iter__task_file", "fd"},
		{&o.ctxFile, "bpf_iter__task_file", "file"},
		{&o.metaSeq, "bpf_iter_meta", "seq"},
		{&o.taskTgid, "task_struct", "tgid"},
		{&o.taskPid, "task_struct", "pid"},
		{&o.fileInode, "file", "f_inode"},
		{&o.inodeSb, "inode", "i_sb"},
		{&o.sbDev, "super_block", "s_dev"},
		{&o.sbMagic, "super_block", "s_magic"},
	} {
		off, err := memberOffset(spec, m.typ, m.member)
		if err != nil {
			return o, err
		}
		*m.dst = off
	}
	return o, nil
}

// memberOffset is the byte offset of member in struct typ, looking through anonymous
// structs and unions.
func memberOffset(spec *btf.Spec, typ, member string) (int16, error) {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return 0, fmt.Errorf("BTF struct %s: %w", typ, err)
	}
	var find func(ms []btf.Member, base btf.Bits) (btf.Bits, bool)
	find = func(ms []btf.Member, base btf.Bits) (btf.Bits, bool) {
		for _, m := range ms {
			if m.Name == member {
				return base + m.Offset, true
			}
			if m.Name != "" {
				continue
			}
			var inner []btf.Member
			switch t := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				inner = t.Members
			case *btf.Union:
				inner = t.Members
			}
			if off, ok := find(inner, base+m.Offset); ok {
				return off, true
			}
		}
		return 0, false
	}
	bits, ok := find(s.Members, 0)
	if !ok || bits%8 != 0 || bits/8 > 1<<15-1 {
		return 0, fmt.Errorf("BTF: no byte-aligned member %s.%s", typ, member)
	}
	return int16(bits / 8), nil
}

// taskFileProgram is the iterator program: for each (task, fd, file) it counts the file
// and, when the file may be on a target, writes {tgid, tid, fd, kind, s_dev} (5 × u32).
func taskFileProgram(o kernelLayout, targets []uint32, anon uint32) asm.Instructions {
	const (
		ctx   = asm.R6
		task  = asm.R7
		file  = asm.R8
		dev   = asm.R9
		sb    = asm.R2
		kind  = asm.R3
		value = asm.R4
	)
	insns := asm.Instructions{
		asm.Mov.Reg(ctx, asm.R1),
		asm.LoadMem(task, ctx, o.ctxTask, asm.DWord),
		asm.JEq.Imm(task, 0, "exit"),
		asm.LoadMem(file, ctx, o.ctxFile, asm.DWord),
		asm.JEq.Imm(file, 0, "exit"), // the last call of an iteration has no file
		// files++ in the counter map.
		asm.StoreImm(asm.RFP, -32, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("files"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -32),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "counted"),
		asm.Mov.Imm(value, 1),
		asm.StoreXAdd(asm.R0, value, asm.DWord),
		// sb = file->f_inode->i_sb
		asm.LoadMem(sb, file, o.fileInode, asm.DWord).WithSymbol("counted"),
		asm.JEq.Imm(sb, 0, "exit"),
		asm.LoadMem(sb, sb, o.inodeSb, asm.DWord),
		asm.JEq.Imm(sb, 0, "exit"),
		asm.LoadMem(kind, sb, o.sbMagic, asm.Word), // the low half of an unsigned long
	}
	for _, m := range statDevMagics {
		insns = append(insns, asm.JEq.Imm32(kind, int32(m), "verify"))
	}
	insns = append(insns, asm.LoadMem(dev, sb, o.sbDev, asm.Word))
	if anon != 0 {
		insns = append(insns, asm.JEq.Imm32(dev, int32(anon), "anon"))
	}
	for _, d := range targets {
		insns = append(insns, asm.JEq.Imm32(dev, int32(d), "target"))
	}
	insns = append(insns,
		asm.Ja.Label("exit"),
		asm.Mov.Imm(kind, fdRecVerify).WithSymbol("verify"),
		asm.Ja.Label("emit"),
		asm.Mov.Imm(kind, fdRecAnon).WithSymbol("anon"),
		asm.Ja.Label("emit"),
		asm.Mov.Imm(kind, fdRecTarget).WithSymbol("target"),
		// The record at fp-24, then bpf_seq_write(meta->seq, fp-24, 20).
		asm.LoadMem(asm.R1, task, o.taskTgid, asm.Word).WithSymbol("emit"),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, task, o.taskPid, asm.Word),
		asm.StoreMem(asm.RFP, -20, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, ctx, o.ctxFD, asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.Word),
		asm.StoreMem(asm.RFP, -12, kind, asm.Word),
		asm.LoadMem(asm.R1, sb, o.sbDev, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, ctx, o.ctxMeta, asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, o.metaSeq, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.Mov.Imm(asm.R3, fdRecordSize),
		asm.FnSeqWrite.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
	return insns
}

// SPDX-License-Identifier: GPL-2.0
/*
 * I/O path tracing: which syscall moved how many bytes into or out of which
 * memory object (a dma-buf mapping, a memfd behind a udmabuf, a file), and what
 * it cost inside: CPU copies, GUP pins, page-cache insertions, latency.
 *
 * Attribution, where fentry/fexit are allowed: programs on the VFS functions the
 * I/O syscalls reach (vfs_read, vfs_write, vfs_readv, vfs_writev,
 * vfs_copy_file_range, do_sendfile, do_splice) open and close the per-thread
 * record, so a syscall that moves no data passes through no program at all; a
 * read or write whose file is no dma-buf or shmem, by a process that maps no
 * dma-buf, shmem or device memory (shared_memory_tgids, kept from mmap, fork
 * and exec), leaves after a few loads (see "VFS level" below).
 * Elsewhere (the fallback): one program on the raw sys_enter/sys_exit tracepoints (tp_btf,
 * else raw_tp) picks out the I/O syscalls by number (a bitmap: any other syscall leaves at once), leaves
 * a read or write of a task of no interest at a per-CPU flag (no_interest_here: the process maps no shared
 * memory and holds no fd of it, kept from context switches and the exits that map or install), the
 * other calls of no interest as the VFS path does, and for the rest opens a per-thread
 * "inflight" record (task-local storage) at entry, resolving the fds to files
 * and the user buffer to the file mapped there (bpf_find_vma, or the thread's
 * cached answer while the address space is unchanged). The inner hooks (fexit
 * filemap_read / generic_perform_write / gup_fast_fallback / __get_user_pages,
 * the filemap tracepoints) add to the current thread's record; work seen with
 * no open record goes to IOPATH_OTHER. At syscall exit the record is folded
 * into the thread's run of calls with the same keys (struct call_batch), which
 * reaches the aggregate maps when the keys change, when the run is 20 ms old,
 * when the thread is switched out, or when it calls bpf() itself. Python reads
 * the maps cumulatively (no draining): deltas between reads are the caller's math.
 * io_uring and AIO requests, which complete after their syscall and maybe on another thread or in
 * interrupt context, have a section of their own: keyed by the request, credited at completion.
 *
 * Cost: the syscall hook runs for every syscall on the machine, so everything
 * on that path is a plain load where the kernel allows one: BTF pointers
 * (tp_btf arguments, bpf_get_current_task_btf, bpf_rdonly_cast) instead of
 * bpf_probe_read_kernel chains, task storage instead of a hash keyed by
 * pid_tgid. benchmarks/overhead.py measures what is left against do-nothing
 * programs on the same hooks.
 *
 * The iov_iter copy helpers themselves (copy_page_to_iter, _copy_to_iter...)
 * are not ftrace-able on the kernels we met, so the CPU copy is read from the
 * return value of the functions around them: filemap_read returns the bytes it
 * copied out of the page cache, generic_perform_write the bytes it copied in.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "core_defs.h"
#include "iopaths.h"
#include "syscall_path.h"

#define MAP_FULL_SLOTS IOMAP_COUNTED
#include "bpf_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep the ring buffer record types in the object's BTF, where the Python mirrors' size test finds them. */
const struct io_record *unused_io_record __attribute__((unused));

/* Superblock magics (include/uapi/linux/magic.h). */
#define DMA_BUF_MAGIC 0x444d4142
#define TMPFS_MAGIC 0x01021994
#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B

#define O_DIRECT_FLAG 040000 /* x86/arm64 generic O_DIRECT */
#define FOLL_PIN_FLAG (1U << 19) /* mm/internal.h since 6.2: the internal enum value is stable */
#define VM_PFNMAP_FLAG 0x400UL
#define S_IFMT_ 00170000
#define S_IFREG_ 0100000
#define S_IFCHR_ 0020000

const volatile bool batch_calls = true; /* only with a live flush_on_switch program: see struct call_batch */
const volatile bool vfs_path = false; /* the VFS programs are live: inner hooks leave early for calls of no interest */
/* The programs that keep shared_memory_tgids (fork, exec, the seeding iterator) are live: the bits can be trusted. */
const volatile bool shared_memory_known = false;
/* The syscall programs also read AIO's io_submit and io_getevents (fentry on the AIO path is refused). */
const volatile bool aio_syscalls = false;

/*
 * One bit per tgid (PID_MAX_LIMIT is 2^22 on 64-bit): the process maps (or mapped, or its parent did when
 * it forked) a dma-buf, a shmem file (memfd) or device memory, so a user buffer of it may be one and a read
 * or write of it needs the VMA lookup. Set from mmap_region (VFS path) or the exit of mmap and shmat (the
 * syscall path) and by the seeding iterator, copied to a child at fork, cleared at exec (a new mm). Never
 * cleared at munmap: a stale bit only sends calls down the exact path. Plain loads, no map lookup.
 * Trusted only with shared_memory_known.
 */
#define SHARED_MEMORY_WORDS TGID_BIT_WORDS
__u64 shared_memory_tgids[SHARED_MEMORY_WORDS];

/*
 * The syscall path's fast exit for reads and writes of no interest, without the fd -> file walk and without
 * a helper call: a per-CPU flag "the task running here is of no interest", tested at sys_enter.
 *
 * fd_holder_tgids: one bit per tgid, "the process may hold an fd of shared memory" (shared_memory_file: a
 * dma-buf, a memfd or another shmem file), so a read or write of one of its fds may be one to attribute.
 * Sticky (never cleared while the process runs one program; at exec taken again from its fd table, see
 * fd_holder_after_exec). Set at the exits of the
 * calls that put an fd in the caller's table (syscall_path.h, FD_INSTALL_SYSCALLS): open, openat, openat2,
 * creat, open_by_handle_at, memfd_create and pidfd_getfd walk the new fd to its file once; recvmsg and recvmmsg
 * (SCM_RIGHTS), io_uring_setup (its requests open and receive fds), fanotify_init (its reads install fds) and
 * an ioctl on anything but a tty (binder, DRM PRIME, dma-heap, udmabuf, V4L2 EXPBUF, sync_file...) set it
 * without a walk. dup, dup2, dup3 and fcntl need nothing: a process can only duplicate an fd it holds. Copied
 * to a child at fork; set for good on both sides of a fork that shares the fd table across two tgids
 * (CLONE_FILES without CLONE_THREAD). The fds held before the tracer started: fd_holder_seed (shared memory,
 * and the rings and fanotify groups that install fds unseen: fd_holder_file).
 * A 32-bit (compat) task's calls have other numbers, which the exits do not read: its bit says nothing, but
 * none of its reads and writes is traced on this path anyway, and a 64-bit program it execs is judged by its
 * fd table.
 */
__u64 fd_holder_tgids[TGID_BIT_WORDS];

/*
 * SECCOMP_IOCTL_NOTIF_ADDFD puts an fd into ANOTHER process (the one a seccomp supervisor serves), which no
 * exit of that process sees: once one has succeeded, every process is of interest for good and the fast
 * path is off until the tracer is started again (benchmarks/README.md, "The CI host's hook set").
 */
__u64 every_process_of_interest;

const volatile __u32 possible_cpus = 1; /* libbpf_num_possible_cpus(): the per-CPU flags a new interest clears */

/*
 * The per-CPU flag, nonzero: the task running on this CPU is of no interest (neither bit above nor its
 * shared_memory_tgids bit set, every_process_of_interest clear, the seeding done). Computed for the incoming
 * task at every context switch (flush_on_switch), cleared on EVERY CPU whenever a bit is newly set
 * (interest_grew), so a sibling thread running elsewhere is sent down the exact path from its next call on.
 * Zero (of interest, the exact path) until the first switch and whenever in doubt.
 */
#define FLAG_CPUS 1024 /* CPUs numbered beyond are always of interest: exact, only slower */
struct cpu_flag {
	__u64 no_interest;
	__u64 own_cache_line[7]; /* written at every switch by its CPU: no sharing a line with another's */
};
/*
 * Indexed by bpf_get_smp_processor_id() (inlined into one per-CPU load on x86-64 since 6.10) rather than a
 * BPF_MAP_TYPE_PERCPU_ARRAY: the map's inlined lookup cost ~10 instructions more per call (hook_floor.bpf.c's
 * least count, both ways). A section of its own, so the Tracer can clear it without rewriting .bss.
 */
struct cpu_flag no_interest_here[FLAG_CPUS] SEC(".data.no_interest_here");

/*
 * [0] nonzero: the seeding iterators have run since the programs were last attached, so the bits can be
 * trusted (the Tracer sets it after them and clears it, with every CPU's flag, before a reattach).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fast_path_state SEC(".maps");

/* Tests only (debug_tgid set): the reads and writes of that process that went past the fast exit. */
const volatile __u32 debug_tgid = 0;
__u64 debug_rw_past_fast_exit;

/*
 * Calls open per tgid (hashed: a collision only sends calls down the exact path), so the inner hooks
 * (copies, GUP) of an open call of a process without the bit above are still counted, and the syscall
 * exit of a call no record was opened for leaves without looking for one. open_calls_total is their sum:
 * while no call is open anywhere, a syscall exit leaves after one load.
 */
#define OPEN_CALL_SLOTS (1U << 16)
__u32 open_calls[OPEN_CALL_SLOTS];
__u64 open_calls_total;

struct file_identity {
	__u64 inode;
	__u32 dev;
	__u32 magic;
	__u8 kind;
	__u8 direct;
	__u8 pfnmap;
	__u8 pad;
};

/* A thread's last bpf_find_vma answer, valid while its address space is unchanged (see identify_user_address). */
struct vma_cache {
	__u64 mm;      /* the mm_struct it was found in */
	__u64 exec_id; /* task->self_exec_id then: an exec gives the thread a new mm, maybe at the same address */
	__u64 start;   /* the mapping's range */
	__u64 end;
	__u32 seq;     /* mm->mm_lock_seq then: every mmap write lock moves it */
	__u32 valid;
	struct file_identity id;
};

/* The syscall (or rw_file call) in progress on a thread: what the inner hooks add to. */
struct inflight_call {
	__u64 start_ns;
	__u64 requested;
	struct file_identity target; /* what the key is: the memory object */
	struct file_identity src;    /* both ends, for io_by_task's outcome */
	struct file_identity dst;
	__u32 path;
	__u32 direct;
	__u64 cpu_copied;
	__u64 pinned_pages;
	__u64 got_pages;
	__u64 gup_calls;
	__u64 pc_added;
	__u64 pc_removed;
};

/*
 * A thread's run of calls with the same keys in io_by_target and io_by_task, summed here and
 * added to those maps once (flush_batch) instead of two hash updates per call: a loader reading
 * a file chunk by chunk into one buffer makes thousands of calls with the same keys, and the two
 * updates were most of a traced call's exit. The run is flushed when a call has other keys or
 * fails, when it is FLUSH_AFTER_NS old at a call's exit, when the thread is switched out
 * (flush_on_switch: it sleeps, is preempted or exits), and when the thread itself calls bpf()
 * (a reader of the maps sees its own calls). A thread that stops making calls and computes
 * without ever being switched out keeps its last run, at most FLUSH_AFTER_NS of calls, until it is.
 */
#define FLUSH_AFTER_NS (20 * 1000 * 1000ULL)

struct call_batch {
	struct io_target_key target_key;
	struct io_task_key task_key;
	__u32 active;
	__u64 started_ns;
	struct io_counters counters;
};

struct inflight {
	struct inflight_call call;
	__u64 pid_tgid; /* of the thread that opened it: the exit needs it, and a helper call costs */
	__s64 nr;      /* the syscall it belongs to (-1: rw_file), so only its own exit closes it */
	__u32 active;  /* a call is open */
	__u32 in_gup_fast; /* inside gup_fast_fallback, so __get_user_pages below it is not counted twice */
	__u32 open_counted; /* VFS path: this record's open call is counted in open_calls */
	__u32 pad;
	struct vma_cache vma;
	struct call_batch batch;
};

/*
 * Task-local storage: found through the task itself (no hash of pid_tgid, no
 * lock), and freed with the thread, so a thread that never returns from a
 * syscall leaves nothing behind.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct io_target_key);
	__type(value, struct io_counters);
} io_by_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct io_task_key);
	__type(value, struct io_counters);
} io_by_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pagecache_key);
	__type(value, struct pagecache_counts);
} pagecache_by_file SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64)); /* PERF_MAX_STACK_DEPTH */
} stack_traces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct stack_key);
	__type(value, struct stack_counts);
} stack_counts SEC(".maps");

/* ------------------------------------------------------------------------- */
/* Small helpers */

/* floor(log2(value)) for value >= 1, 0 for 0; branch-light (the exit path runs it on every traced call). */
static __always_inline __u32 log2_slot(__u64 value)
{
	__u32 slot = 0, shift;

	shift = (value > 0xFFFFFFFFULL) << 5; value >>= shift; slot |= shift;
	shift = (value > 0xFFFF) << 4; value >>= shift; slot |= shift;
	shift = (value > 0xFF) << 3; value >>= shift; slot |= shift;
	shift = (value > 0xF) << 2; value >>= shift; slot |= shift;
	shift = (value > 0x3) << 1; value >>= shift; slot |= shift;
	slot |= (value >> 1);
	return slot < IOPATHS_HIST_SLOTS ? slot : IOPATHS_HIST_SLOTS - 1;
}

static __always_inline __u8 kind_of(struct inode *inode, __u32 magic)
{
	__u32 mode = inode->i_mode & S_IFMT_;

	if (magic == DMA_BUF_MAGIC)
		return IOFILE_DMABUF;
	if (magic == PIPEFS_MAGIC)
		return IOFILE_PIPE;
	if (magic == SOCKFS_MAGIC)
		return IOFILE_SOCKET;
	if (mode != S_IFREG_)
		return IOFILE_OTHER;
	if (magic == TMPFS_MAGIC)
		return IOFILE_SHMEM;
	return IOFILE_REGULAR;
}

/* file: a BTF pointer (trusted, or from bpf_rdonly_cast), so every field below is a plain load. */
static __always_inline void identify_file(struct file *file, struct file_identity *id)
{
	struct inode *inode;
	struct super_block *sb;

	if (!file)
		return;
	inode = file->f_inode;
	if (!inode)
		return;
	sb = inode->i_sb;
	id->inode = inode->i_ino;
	id->dev = sb->s_dev;
	id->magic = sb->s_magic;
	id->kind = kind_of(inode, id->magic);
	id->direct = (file->f_flags & O_DIRECT_FLAG) ? 1 : 0;
}

struct vma_found {
	__u64 start;
	__u64 end;
	struct file_identity id;
};

static long vma_callback(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_found *found = data;

	found->start = vma->vm_start;
	found->end = vma->vm_end;
	if (bpf_core_field_exists(vma->vm_flags))
		found->id.pfnmap = (vma->vm_flags & VM_PFNMAP_FLAG) ? 1 : 0;
	identify_file(vma->vm_file, &found->id);
	found->id.direct = 0; /* the mapping has no open mode of its own */
	return 0;
}

/*
 * The file mapped at a user address in the current process (nothing for
 * anonymous memory).
 *
 * bpf_find_vma takes mmap_lock (a trylock: under contention it fails with
 * -EBUSY and the target stays unknown) and walks the maple tree. A thread
 * that reads into the same buffer again asks again, so it keeps its last
 * answer and reuses it while mm->mm_lock_seq shows that no mmap write lock
 * was taken since: every change to the mappings (mmap, munmap, mremap,
 * mprotect, brk) takes it and moves the count, and it is odd while one is in
 * progress. This is the kernel's own speculation rule
 * (mmap_lock_speculate_try_begin/retry, 6.13+); kernels without that
 * seqcount (no CONFIG_PER_VMA_LOCK, or before 6.13, when the count moved
 * only at unlock) always ask.
 */
static __always_inline void identify_user_address(struct task_struct *task, struct inflight *io, __u64 addr,
						  struct file_identity *id)
{
	struct mm_struct *mm = task->mm;
	struct vma_cache *cache = &io->vma;
	struct vma_found found = {};
	__u32 seq = 1; /* odd: no speculation */

	if (!mm)
		return;
	if (bpf_core_field_exists(mm->mm_lock_seq.sequence))
		seq = mm->mm_lock_seq.sequence;
	if (!(seq & 1) && cache->valid && cache->seq == seq && cache->mm == (__u64)mm &&
	    cache->exec_id == task->self_exec_id && addr >= cache->start && addr < cache->end) {
		*id = cache->id;
		return;
	}
	cache->valid = 0;
	if (bpf_find_vma(task, addr, vma_callback, &found, 0)) /* -ENOENT: not mapped; -EBUSY: lock contended */
		return;
	*id = found.id;
	if (seq & 1)
		return;
	cache->mm = (__u64)mm;
	cache->exec_id = task->self_exec_id;
	cache->start = found.start;
	cache->end = found.end;
	cache->seq = seq; /* read before the lookup: a change since then fails the next check */
	cache->id = found.id;
	cache->valid = 1;
}

static __always_inline bool tgid_maps_shared_memory(__u32 tgid)
{
	return shared_memory_tgids[(tgid >> 6) & (SHARED_MEMORY_WORDS - 1)] & (1ULL << (tgid & 63));
}

/*
 * The fast exit is possible: the syscall path (the VFS path has its own early exits), the shared-memory keepers
 * live (fork, exec, the seeding iterators), every process traced (with target_tgid every call is exact) and
 * flush_on_switch live (it computes the per-CPU flag). All .rodata: the verifier drops what they rule out.
 */
static __always_inline bool fast_path(void)
{
	return !vfs_path && shared_memory_known && !target_tgid && batch_calls;
}

static __always_inline bool tgid_holds_fd(__u32 tgid)
{
	return fd_holder_tgids[(tgid >> 6) & (TGID_BIT_WORDS - 1)] & (1ULL << (tgid & 63));
}

/* This CPU's flag, or NULL for a CPU numbered beyond FLAG_CPUS. */
static __always_inline __u64 *cpu_flag(__u32 cpu)
{
	return cpu < FLAG_CPUS ? &no_interest_here[cpu].no_interest : NULL;
}

/* The task running on this CPU is of no interest: one inlined per-CPU load, no helper call. */
static __always_inline bool running_task_of_no_interest(void)
{
	__u64 *flag = cpu_flag(bpf_get_smp_processor_id());

	return flag && *flag;
}

static int clear_cpu_flag(__u64 cpu, void *unused)
{
	if (cpu >= FLAG_CPUS)
		return 1; /* CPUs beyond keep no flag: done */
	no_interest_here[cpu & (FLAG_CPUS - 1)].no_interest = 0; /* the mask: the verifier loses the compare's bound */
	return 0;
}

/*
 * A bit was newly set (by the current task, fork or a seeding iterator): no CPU may keep a "no interest"
 * computed without it. Race-free: every setter sets its bit with an atomic fetch (a full barrier) BEFORE
 * clearing the flags, and a context switch that finds no bit sets its flag with an atomic exchange (a full
 * barrier) and then reads the bits again (note_switched_in): either that second read sees the bit, or the
 * setter's clear comes after the switch's store and wins. A sibling thread can only use the new fd or mapping
 * once this syscall returned its number or address to user space and reached it, by then its CPU's flag is
 * clear and stays so until its next switch, which sees the bit. (A thread that guesses an fd number and uses
 * it while the call that installs it is still in the kernel is not followed.)
 */
static __always_inline void interest_grew(void)
{
	if (fast_path())
		bpf_loop(possible_cpus, clear_cpu_flag, NULL, 0);
}

/* Set a process's bit in bitmap; a bit newly set clears every CPU's flag. */
static __always_inline void set_tgid_bit(__u64 *bitmap, __u32 tgid)
{
	__u64 *word = &bitmap[(tgid >> 6) & (TGID_BIT_WORDS - 1)];
	__u64 bit = 1ULL << (tgid & 63);

	if (*word & bit)
		return; /* already set: the common case, and no atomic */
	if (!(__sync_fetch_and_or(word, bit) & bit))
		interest_grew();
}

/* A process that has not run yet (fork's child): no CPU's flag was computed for it, none to clear. */
static __always_inline void assign_tgid_bit(__u64 *bitmap, __u32 tgid, bool set)
{
	__u64 *word = &bitmap[(tgid >> 6) & (TGID_BIT_WORDS - 1)];
	__u64 bit = 1ULL << (tgid & 63);

	if (set)
		__sync_fetch_and_or(word, bit);
	else
		__sync_fetch_and_and(word, ~bit);
}

static __always_inline void mark_tgid(__u32 tgid, bool maps)
{
	if (maps)
		set_tgid_bit(shared_memory_tgids, tgid);
	else
		assign_tgid_bit(shared_memory_tgids, tgid, false); /* exec: only ever makes a flag stale "of interest" */
}

static __always_inline void note_fd_holder(__u32 tgid)
{
	if (fast_path())
		set_tgid_bit(fd_holder_tgids, tgid);
}

/* A dma-buf or a shmem regular file (memfd, /dev/shm): an end worth attributing even into anonymous memory. */
static __always_inline bool shared_memory_file(struct file *file)
{
	struct inode *inode;
	__u32 magic;

	if (!file)
		return false;
	inode = file->f_inode;
	if (!inode)
		return false;
	magic = inode->i_sb->s_magic;
	return magic == DMA_BUF_MAGIC || (magic == TMPFS_MAGIC && (inode->i_mode & S_IFMT_) == S_IFREG_);
}

#define ANON_INODE_FS_MAGIC_ 0x09041934

/*
 * The files through which fds arrive that no syscall exit of their holder shows one by one: an io_uring ring
 * (its requests open and receive fds) and a fanotify group (its reads install fds), told by a function of
 * their file_operations (global io_uring_mmap, static fanotify_read: both in kallsyms without
 * CONFIG_KALLSYMS_ALL). A kernel without either symbol: every anonymous-inode file (eventfd, epoll... too).
 */
extern const void io_uring_mmap __ksym __weak;
extern const void fanotify_read __ksym __weak;

static __always_inline bool fd_installer_file(struct file *file)
{
	const struct file_operations *fop = file->f_op;

	if (!&io_uring_mmap || !&fanotify_read)
		return file->f_inode && file->f_inode->i_sb->s_magic == ANON_INODE_FS_MAGIC_;
	return (void *)fop->mmap == (void *)&io_uring_mmap || (void *)fop->read == (void *)&fanotify_read;
}

/* An fd that makes its holder's reads and writes worth the exact path (fd_holder_tgids). */
static __always_inline bool fd_holder_file(struct file *file)
{
	return shared_memory_file(file) || fd_installer_file(file);
}

/* A mapping that makes the process's user buffers worth a VMA lookup: anything but an ordinary file's pages. */
static __always_inline bool shared_memory_mapping(struct file *file)
{
	struct inode *inode = file->f_inode;
	__u32 magic;

	if (!inode)
		return false;
	magic = inode->i_sb->s_magic;
	return magic == DMA_BUF_MAGIC || magic == TMPFS_MAGIC || (inode->i_mode & S_IFMT_) != S_IFREG_;
}

/*
 * A read or write worth a record: the file is shared memory, or the process maps some (its user buffer may
 * be). With target_tgid (record -- CMD, -p PID) every call is: one process's whole I/O is what was asked
 * for, and begin() leaves the other processes out.
 */
static __always_inline bool rw_of_interest(struct task_struct *task, struct file *file)
{
	return target_tgid || !shared_memory_known || tgid_maps_shared_memory(task->tgid) || shared_memory_file(file);
}

/*
 * A file-to-file call (copy_file_range, splice, sendfile) worth a record: either end is shared memory, or the
 * process is of interest as for a read or write. Between ordinary files (and pipes, sockets) it moves nothing
 * into or out of a buffer anyone maps.
 */
static __always_inline bool files_of_interest(struct task_struct *task, struct file *in, struct file *out)
{
	return rw_of_interest(task, in) || shared_memory_file(out);
}

/*
 * Whether the inner hooks (copies, GUP) of the current task must look for its record: always on the
 * syscall path or with target_tgid; on the VFS path only for a process with shared memory or a call open.
 */
static __always_inline bool inner_of_interest(void)
{
	__u32 tgid;

	if (!vfs_path || target_tgid || !shared_memory_known)
		return true;
	tgid = bpf_get_current_task_btf()->tgid;
	return tgid_maps_shared_memory(tgid) || open_calls[tgid & (OPEN_CALL_SLOTS - 1)];
}

/* ------------------------------------------------------------------------- */
/* Syscall entry and exit: open and fold the inflight record */

/*
 * The syscall path asks for the current task once and hands it down: every
 * bpf_get_current_task_btf() and bpf_get_current_pid_tgid() is a helper call,
 * and the entry of a traced read made seven of them.
 */
static __always_inline struct inflight *task_record(struct task_struct *task, bool create)
{
	return bpf_task_storage_get(&inflight, task, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline struct inflight *thread_record(bool create)
{
	return task_record(bpf_get_current_task_btf(), create);
}

/* task: the current one. Its pid_tgid as bpf_get_current_pid_tgid() gives it, from plain loads. */
static __always_inline struct inflight *begin(struct task_struct *task, __u32 path, __u64 requested, __s64 nr)
{
	__u64 pid_tgid = ((__u64)task->tgid << 32) | (__u32)task->pid;
	struct inflight *io;

	if (!traced_tgid(pid_tgid))
		return NULL;
	io = task_record(task, true);
	if (!io)
		return NULL;
	__builtin_memset(&io->call, 0, sizeof(io->call));
	io->pid_tgid = pid_tgid;
	io->call.start_ns = bpf_ktime_get_ns();
	io->call.path = path;
	io->call.requested = requested;
	io->nr = nr;
	io->active = 1;
	return io;
}

/* A record opened: counted in open_calls, so that its exit (and the inner hooks on the VFS path) look for it. */
static __always_inline void count_open(struct inflight *io)
{
	if (io->open_counted)
		return; /* a record that was never closed (a detach mid-call) is counted once */
	io->open_counted = 1;
	__sync_fetch_and_add(&open_calls[(io->pid_tgid >> 32) & (OPEN_CALL_SLOTS - 1)], 1);
	__sync_fetch_and_add(&open_calls_total, 1);
}

static __always_inline void count_closed(struct inflight *io)
{
	if (!io->open_counted)
		return;
	io->open_counted = 0;
	__sync_fetch_and_add(&open_calls[(io->pid_tgid >> 32) & (OPEN_CALL_SLOTS - 1)], -1);
	__sync_fetch_and_add(&open_calls_total, -1);
}

/* read/write family: the file side is `file`, the memory side is the user buffer. */
static __always_inline struct inflight *begin_rw_file(struct task_struct *task, __s64 nr, __u32 path,
						      struct file *file, __u64 user_addr, __u64 count)
{
	struct inflight *io = begin(task, path, count, nr);
	struct file_identity mapped = {};
	struct inflight_call *call;

	if (!io)
		return NULL;
	call = &io->call;
	identify_file(file, path == IOPATH_READ ? &call->src : &call->dst);
	identify_user_address(task, io, user_addr, &mapped); /* bpf_find_vma's context must live on the stack */
	call->target = mapped;
	if (path == IOPATH_READ)
		call->dst = mapped;
	else
		call->src = mapped;
	call->direct = path == IOPATH_READ ? call->src.direct : call->dst.direct;
	return io;
}

/*
 * The syscall path: the file side is an fd of the calling task. A call of no interest (an ordinary file, a
 * process that maps no shared memory) opens no record, so its exit leaves at open_calls.
 */
static __always_inline void begin_rw(struct task_struct *task, __s64 nr, __u32 path, __u64 fd, __u64 user_addr,
				     __u64 count)
{
	struct file *file;
	struct inflight *io;

	if (debug_tgid && task->tgid == debug_tgid)
		__sync_fetch_and_add(&debug_rw_past_fast_exit, 1);
	file = file_of_fd(task, fd);
	if (!rw_of_interest(task, file))
		return;
	io = begin_rw_file(task, nr, path, file, user_addr, count);
	if (io)
		count_open(io);
}

/* fd-to-fd paths: the memory object is the end that is a dma-buf or shmem, else the destination. */
static __always_inline struct inflight *begin_files(struct task_struct *task, __s64 nr, __u32 path,
						    struct file *file_in, struct file *file_out, __u64 count)
{
	struct inflight *io = begin(task, path, count, nr);
	struct inflight_call *call;

	if (!io)
		return NULL;
	call = &io->call;
	identify_file(file_in, &call->src);
	identify_file(file_out, &call->dst);
	if ((call->src.kind == IOFILE_DMABUF || call->src.kind == IOFILE_SHMEM) &&
	    !(call->dst.kind == IOFILE_DMABUF || call->dst.kind == IOFILE_SHMEM))
		call->target = call->src;
	else
		call->target = call->dst;
	call->direct = call->src.direct | call->dst.direct;
	return io;
}

static __always_inline void begin_fd_to_fd(struct task_struct *task, __s64 nr, __u32 path, __u64 fd_in,
					   __u64 fd_out, __u64 count)
{
	struct file *in, *out;
	struct inflight *io;

	in = file_of_fd(task, fd_in);
	out = file_of_fd(task, fd_out);
	if (!files_of_interest(task, in, out))
		return;
	io = begin_files(task, nr, path, in, out, count);
	if (io)
		count_open(io);
}

/*
 * The counter maps are per-CPU: a plain add on this CPU's copy replaces a locked
 * add on a shared line (Python sums the CPUs). BPF programs run with migration
 * disabled, and none of these hooks fires from interrupt context.
 *
 * Counts that most calls leave at zero (GUP, page cache) are added only when set:
 * every add is a load and a store to the map value, which the emulated guest
 * pays dearly for, and a cached 4 KiB pread has none of them.
 */
static __always_inline void add_counters(struct io_counters *c, struct inflight_call *call, __s64 ret, __u32 slot,
					 __u64 latency)
{
	c->calls++;
	if (ret < 0)
		c->errors++;
	else
		c->bytes += ret;
	c->requested += call->requested;
	if (call->cpu_copied)
		c->cpu_copied += call->cpu_copied;
	if (call->gup_calls) { /* pages are only counted with a GUP call */
		c->pinned_pages += call->pinned_pages;
		c->got_pages += call->got_pages;
		c->gup_calls += call->gup_calls;
	}
	if (call->pc_added | call->pc_removed) {
		c->pc_added += call->pc_added;
		c->pc_removed += call->pc_removed;
	}
	c->latency_ns += latency;
	c->latency_hist[slot & (IOPATHS_HIST_SLOTS - 1)]++;
}

static const struct io_counters zero_counters;

/* A ring record of one call or request, reserved and filled but for its comm; NULL (counted) when the ring is full. */
static __always_inline struct io_record *io_record_of(struct inflight_call *call, __u64 pid_tgid, __s64 ret,
						      __u64 now, __u64 latency)
{
	struct io_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);

	if (!rec) {
		count_dropped();
		return NULL;
	}
	rec->type = IORECORD_IO;
	rec->tgid = pid_tgid >> 32;
	rec->tid = (__u32)pid_tgid;
	rec->path = call->path;
	rec->kind = call->target.kind;
	rec->direct = call->direct;
	rec->timestamp_ns = now;
	rec->latency_ns = latency;
	rec->ret = ret;
	rec->requested = call->requested;
	rec->inode = call->target.inode;
	rec->dev = call->target.dev;
	rec->reserved = 0;
	rec->cpu_copied = call->cpu_copied; /* 0 for a request: its inner work is not attributed to it */
	rec->pinned_pages = call->pinned_pages;
	rec->pc_added = call->pc_added;
	return rec;
}

static __always_inline void record_io(struct inflight_call *call, __u64 pid_tgid, __s64 ret, __u64 now, __u64 latency)
{
	struct io_record *rec = io_record_of(call, pid_tgid, ret, now, latency);

	if (!rec)
		return;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	bpf_ringbuf_submit(rec, 0);
}

/* What a run of calls added up to (call_batch), added to a map's counters at once. */
static __always_inline void add_batch(struct io_counters *c, const struct io_counters *run)
{
	c->calls += run->calls;
	c->errors += run->errors;
	c->bytes += run->bytes;
	c->requested += run->requested;
	c->cpu_copied += run->cpu_copied;
	c->pinned_pages += run->pinned_pages;
	c->got_pages += run->got_pages;
	c->gup_calls += run->gup_calls;
	c->pc_added += run->pc_added;
	c->pc_removed += run->pc_removed;
	c->latency_ns += run->latency_ns;
	for (int slot = 0; slot < IOPATHS_HIST_SLOTS; slot++)
		if (run->latency_hist[slot])
			c->latency_hist[slot] += run->latency_hist[slot];
}

static __always_inline void flush_batch(struct call_batch *batch)
{
	struct io_counters *counters;

	if (!batch->active)
		return;
	batch->active = 0;
	counters = lookup_or_init(&io_by_target, &batch->target_key, &zero_counters, IOMAP_IO_BY_TARGET);
	if (counters)
		add_batch(counters, &batch->counters);
	counters = lookup_or_init(&io_by_task, &batch->task_key, &zero_counters, IOMAP_IO_BY_TASK);
	if (counters)
		add_batch(counters, &batch->counters);
}

static __always_inline bool same_keys(const struct call_batch *batch, const struct io_target_key *target,
				      const struct io_task_key *task)
{
	const struct io_target_key *t = &batch->target_key;
	const struct io_task_key *k = &batch->task_key;

	return t->inode == target->inode && t->dev == target->dev && t->path == target->path &&
	       t->kind == target->kind && t->direct == target->direct && k->tgid == task->tgid &&
	       k->path == task->path && k->src_kind == task->src_kind && k->dst_kind == task->dst_kind &&
	       k->error == task->error && k->src_magic == task->src_magic && k->dst_magic == task->dst_magic;
}

/*
 * may_batch: only from programs that cannot be preempted (tracepoints run with preemption off),
 * since flush_on_switch flushes the run of the task it switches out; the fexit of rw_file can be.
 */
static __always_inline void finish(struct inflight *io, __s64 ret, bool may_batch)
{
	__u64 pid_tgid = io->pid_tgid;
	struct inflight_call *call = &io->call;
	struct io_target_key target_key = {};
	struct io_task_key task_key = {};
	struct io_counters *counters;
	__u64 now, latency;
	__u32 slot;

	io->active = 0;
	now = bpf_ktime_get_ns();
	latency = now - call->start_ns;
	slot = log2_slot(latency / 1000);

	target_key.inode = call->target.inode;
	target_key.dev = call->target.dev;
	target_key.path = call->path;
	target_key.kind = call->target.kind;
	target_key.direct = call->direct;
	task_key.tgid = pid_tgid >> 32;
	task_key.path = call->path;
	task_key.src_kind = call->src.kind;
	task_key.dst_kind = call->dst.kind;
	task_key.error = ret < 0 ? (__s32)ret : 0;
	task_key.src_magic = call->src.magic;
	task_key.dst_magic = call->dst.magic;

	if (batch_calls && may_batch && ret >= 0) {
		struct call_batch *batch = &io->batch;

		if (batch->active && !same_keys(batch, &target_key, &task_key))
			flush_batch(batch);
		if (!batch->active) {
			batch->target_key = target_key;
			batch->task_key = task_key;
			__builtin_memset(&batch->counters, 0, sizeof(batch->counters));
			batch->started_ns = now;
			batch->active = 1;
		}
		add_counters(&batch->counters, call, ret, slot, latency);
		if (now - batch->started_ns > FLUSH_AFTER_NS)
			flush_batch(batch);
	} else {
		counters = lookup_or_init(&io_by_target, &target_key, &zero_counters, IOMAP_IO_BY_TARGET);
		if (counters)
			add_counters(counters, call, ret, slot, latency);
		counters = lookup_or_init(&io_by_task, &task_key, &zero_counters, IOMAP_IO_BY_TASK);
		if (counters)
			add_counters(counters, call, ret, slot, latency);
	}

	if (record_events)
		record_io(call, pid_tgid, ret, now, latency);
}

/* The incoming task may be of interest: the fast exit must not be taken for it (see no_interest_here). */
static __always_inline bool may_be_of_interest(__u32 tgid)
{
	__u32 zero = 0;
	__u32 *seeded = bpf_map_lookup_elem(&fast_path_state, &zero);

	return !seeded || !*seeded || every_process_of_interest || tgid_maps_shared_memory(tgid) ||
	       tgid_holds_fd(tgid);
}

/* The per-CPU flag for the task about to run here (interest_grew says why the second look is needed). */
static __always_inline void note_switched_in(struct task_struct *next)
{
	__u32 tgid = next->tgid;
	__u64 *flag = cpu_flag(bpf_get_smp_processor_id());

	if (!flag)
		return;
	if (may_be_of_interest(tgid)) {
		*flag = 0;
		return;
	}
	__sync_lock_test_and_set(flag, 1); /* an exchange: a full barrier before the bits are read again */
	if (may_be_of_interest(tgid))
		*flag = 0;
}

/*
 * The run of calls of a thread being switched out (it sleeps, is preempted, or exits) goes to the maps; the
 * incoming task's interest goes to this CPU's flag (the syscall path's fast exit).
 */
SEC("tp_btf/sched_switch")
int BPF_PROG(flush_on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct inflight *io;

	if (!batch_calls)
		return 0;
	if (fast_path())
		note_switched_in(next);
	io = bpf_task_storage_get(&inflight, prev, 0, 0);
	if (io)
		flush_batch(&io->batch);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* VFS level: where fentry/fexit are allowed, instead of the syscall tracepoints */

/*
 * Each VFS function's own pseudo syscall number in inflight.nr (negative: no real syscall has it), so
 * only its own fexit closes the record it opened.
 */
#define VFS_NR_READ (-2)
#define VFS_NR_WRITE (-3)
#define VFS_NR_READV (-4)
#define VFS_NR_WRITEV (-5)
#define VFS_NR_COPY_FILE_RANGE (-6)
#define VFS_NR_SENDFILE (-7)
#define VFS_NR_SPLICE (-8)

static __always_inline void vfs_finish(struct task_struct *task, __s64 nr, __s64 ret)
{
	struct inflight *io = task_record(task, false);

	if (!io || !io->active || io->nr != nr)
		return;
	finish(io, ret, false); /* fexit programs can be preempted: no batching (see finish) */
	count_closed(io);
}

/* read and write: of interest when the file is shared memory or the process maps some. */
static __always_inline void vfs_rw_enter(struct file *file, __u64 user_addr, __u64 count, __u32 path, __s64 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight *io;

	if (!rw_of_interest(task, file))
		return;
	io = begin_rw_file(task, nr, path, file, user_addr, count);
	if (io)
		count_open(io);
}

static __always_inline void vfs_rw_exit(struct file *file, __s64 nr, __s64 ret)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!rw_of_interest(task, file))
		return;
	vfs_finish(task, nr, ret);
}

/* readv/writev families: the memory side is the first iovec, as on the syscall path. */
static __always_inline void vfs_rwv_enter(struct file *file, const struct iovec *vec, __u32 path, __s64 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct iovec first = {};
	struct inflight *io;

	if (!rw_of_interest(task, file))
		return;
	bpf_probe_read_user(&first, sizeof(first), vec);
	io = begin_rw_file(task, nr, path, file, (__u64)first.iov_base, first.iov_len);
	if (io)
		count_open(io);
}

/* File to file: both ends are known here, no VMA lookup. */
static __always_inline void vfs_files_enter(struct file *in, struct file *out, __u64 count, __u32 path, __s64 nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight *io;

	if (!files_of_interest(task, in, out))
		return;
	io = begin_files(task, nr, path, in, out, count);
	if (io)
		count_open(io);
}

/* do_sendfile(out_fd, in_fd, ppos, count, max) takes fds: found in the fd table, as the syscall path does. */
static __always_inline void vfs_sendfile_enter(int out_fd, int in_fd, __u64 count)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *in = file_of_fd(task, in_fd), *out = file_of_fd(task, out_fd);
	struct inflight *io;

	if (!files_of_interest(task, in, out))
		return;
	io = begin_files(task, VFS_NR_SENDFILE, IOPATH_SENDFILE, in, out, count);
	if (io)
		count_open(io);
}

/*
 * One fentry/fexit pair per VFS function (programs prefix_enter and prefix_exit, hooks.VFS_FUNCTIONS):
 * enter and exit are the calls each makes, the rest the function's arguments (the fexit adds its return).
 */
#define VFS_PAIR(prefix, function, enter, exit, ...)                  \
	SEC("fentry/" #function)                                      \
	int BPF_PROG(prefix##_enter, __VA_ARGS__)                     \
	{                                                             \
		enter;                                                \
		return 0;                                             \
	}                                                             \
	SEC("fexit/" #function)                                       \
	int BPF_PROG(prefix##_exit, __VA_ARGS__, ssize_t ret)         \
	{                                                             \
		exit;                                                 \
		return 0;                                             \
	}

VFS_PAIR(vfs_read, vfs_read, vfs_rw_enter(file, (__u64)buf, count, IOPATH_READ, VFS_NR_READ),
	 vfs_rw_exit(file, VFS_NR_READ, ret), struct file *file, char *buf, size_t count, loff_t *pos)
VFS_PAIR(vfs_write, vfs_write, vfs_rw_enter(file, (__u64)buf, count, IOPATH_WRITE, VFS_NR_WRITE),
	 vfs_rw_exit(file, VFS_NR_WRITE, ret), struct file *file, const char *buf, size_t count, loff_t *pos)
VFS_PAIR(vfs_readv, vfs_readv, vfs_rwv_enter(file, vec, IOPATH_READ, VFS_NR_READV),
	 vfs_rw_exit(file, VFS_NR_READV, ret), struct file *file, const struct iovec *vec, unsigned long vlen,
	 loff_t *pos, rwf_t flags)
VFS_PAIR(vfs_writev, vfs_writev, vfs_rwv_enter(file, vec, IOPATH_WRITE, VFS_NR_WRITEV),
	 vfs_rw_exit(file, VFS_NR_WRITEV, ret), struct file *file, const struct iovec *vec, unsigned long vlen,
	 loff_t *pos, rwf_t flags)
VFS_PAIR(vfs_copy_file_range, vfs_copy_file_range,
	 vfs_files_enter(file_in, file_out, len, IOPATH_COPY_FILE_RANGE, VFS_NR_COPY_FILE_RANGE),
	 vfs_finish(bpf_get_current_task_btf(), VFS_NR_COPY_FILE_RANGE, ret), struct file *file_in, loff_t pos_in,
	 struct file *file_out, loff_t pos_out, size_t len, unsigned int flags)
VFS_PAIR(splice, do_splice, vfs_files_enter(in, out, len, IOPATH_SPLICE, VFS_NR_SPLICE),
	 vfs_finish(bpf_get_current_task_btf(), VFS_NR_SPLICE, ret), struct file *in, loff_t *off_in,
	 struct file *out, loff_t *off_out, size_t len, unsigned int flags)
VFS_PAIR(sendfile, do_sendfile, vfs_sendfile_enter(out_fd, in_fd, count),
	 vfs_finish(bpf_get_current_task_btf(), VFS_NR_SENDFILE, ret), int out_fd, int in_fd, loff_t *ppos,
	 size_t count, loff_t max)

/* Keeping shared_memory_tgids: every new file mapping, fork (the child has the parent's mappings), exec. */
SEC("fentry/mmap_region")
int BPF_PROG(shared_memory_mmap, struct file *file)
{
	if (file && shared_memory_mapping(file)) /* set before the mapping exists: no read can precede it */
		mark_tgid(bpf_get_current_task_btf()->tgid, true);
	return 0;
}

#define PF_KTHREAD_ 0x00200000 /* include/linux/sched.h */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(shared_memory_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid) /* a thread shares its tgid's bits */
		return 0;
	assign_tgid_bit(shared_memory_tgids, child->tgid, tgid_maps_shared_memory(parent->tgid));
	if (!fast_path() || (child->flags & PF_KTHREAD_))
		return 0; /* a kernel thread makes no syscall (and shares kthreadd's fd table) */
	/* The child has the parent's fds (a copy of its table), or the very same table (CLONE_FILES without
	 * CLONE_THREAD): then an fd either installs is the other's too, under another tgid, for good. */
	assign_tgid_bit(fd_holder_tgids, child->tgid, tgid_holds_fd(parent->tgid));
	if (child->files == parent->files) {
		note_fd_holder(parent->tgid);
		note_fd_holder(child->tgid);
	}
	return 0;
}

#define EXEC_FD_WALK_MAX 4096 /* a larger table keeps the bit as it was */

struct exec_fd_walk {
	struct task_struct *task;
	bool holds;
};

/* An fd kept across exec that is shared memory or installs fds unseen (fd_holder_file). */
static int exec_fd_check(__u64 fd, struct exec_fd_walk *walk)
{
	struct file *file = file_of_fd(walk->task, fd);

	if (file && fd_holder_file(file)) {
		walk->holds = true;
		return 1;
	}
	return 0;
}

/*
 * After exec (its close-on-exec fds closed, its fd table its own) the process holds what its table holds: the
 * bit is taken again from the table, so that a program started by a process that once received or opened
 * anything (a daemon, a shell in a terminal, the benchmark itself) starts of no interest, as it is.
 */
static __always_inline void fd_holder_after_exec(struct task_struct *task)
{
	struct exec_fd_walk walk = {.task = task};
	struct fdtable *fdt = task->files->fdt;
	__u32 fds = fdt ? fdt->max_fds : 0;

	if (fds > EXEC_FD_WALK_MAX)
		return;
	bpf_loop(fds, exec_fd_check, &walk, 0);
	if (walk.holds)
		set_tgid_bit(fd_holder_tgids, task->tgid);
	else
		assign_tgid_bit(fd_holder_tgids, task->tgid, false); /* only ever makes a flag stale "of interest" */
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(shared_memory_exec, struct task_struct *task)
{
	mark_tgid(task->tgid, false); /* a new mm: only mappings made from now on count */
	if (fast_path())
		fd_holder_after_exec(task);
	return 0;
}

/* Run once after the programs above are attached (and after each reattach): the mappings made before. */
SEC("iter/task_vma")
int shared_memory_seed(struct bpf_iter__task_vma *ctx)
{
	struct vm_area_struct *vma = ctx->vma;
	struct task_struct *task = ctx->task;
	struct file *file;

	if (!task || !vma)
		return 0;
	file = vma->vm_file;
	if (file && shared_memory_mapping(file))
		mark_tgid(task->tgid, true);
	return 0;
}

/*
 * The fds held before the tracer started (run after the syscall programs are attached, so that no install
 * falls between the two): a process holding shared memory gets its fd_holder_tgids bit.
 */
SEC("iter/task_file")
int fd_holder_seed(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;

	if (fast_path() && task && file && fd_holder_file(file))
		note_fd_holder(task->tgid);
	return 0;
}

/*
 * Patched kernels only (kernel/series/rw-file): dma_buf_rw_file(dmabuf, file, pos, offset, len, flags)
 * moves bytes between a file and the exporter's own pages (DMA_BUF_IOCTL_RW_FILE). It opens
 * the attribution record itself, so the copies, pins and page-cache pages inside it are its
 * own; the memory object is the dma-buf. Loaded only where the function exists.
 */
#define RW_FILE_WRITE_FLAG (1U << 1)  /* DMA_BUF_RW_FILE_WRITE: buffer -> file */
#define RW_FILE_DIRECT_FLAG (1U << 2) /* DMA_BUF_RW_FILE_DIRECT */
#define RW_FILE_NR (-1)		      /* not a syscall: closed by the fexit below */

SEC("fentry/dma_buf_rw_file")
int BPF_PROG(rw_file_enter, struct dma_buf *dmabuf, struct file *file, loff_t pos, __u64 offset, __u64 len,
	     unsigned int flags)
{
	struct inflight *io = begin(bpf_get_current_task_btf(), IOPATH_RW_FILE, len, RW_FILE_NR);
	struct inflight_call *call;
	bool to_file = flags & RW_FILE_WRITE_FLAG;

	if (!io)
		return 0;
	call = &io->call;
	identify_file(dmabuf->file, &call->target);
	call->target.direct = 0;
	identify_file(file, to_file ? &call->dst : &call->src);
	if (to_file)
		call->src = call->target;
	else
		call->dst = call->target;
	call->direct = (flags & RW_FILE_DIRECT_FLAG) || (to_file ? call->dst.direct : call->src.direct);
	return 0;
}

SEC("fexit/dma_buf_rw_file")
int BPF_PROG(rw_file_exit, struct dma_buf *dmabuf, struct file *file, loff_t pos, __u64 offset, __u64 len,
	     unsigned int flags, ssize_t ret)
{
	struct inflight *io = thread_record(false);

	if (io && io->active && io->nr == RW_FILE_NR)
		finish(io, ret, false);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Inside the syscall: work added to the current thread's inflight record */

static __always_inline struct inflight_call *current_call(void)
{
	struct inflight *io = thread_record(false);

	return io && io->active ? &io->call : NULL;
}

/* Work seen outside a traced syscall is still counted, under IOPATH_OTHER. */
static __always_inline struct io_counters *other_counters(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct io_task_key key = {.tgid = pid_tgid >> 32, .path = IOPATH_OTHER};

	if (!traced_tgid(pid_tgid))
		return NULL;
	return lookup_or_init(&io_by_task, &key, &zero_counters, IOMAP_IO_BY_TASK);
}

static __always_inline void count_stack(void *ctx, __u16 point, __u32 path, __u64 amount)
{
	struct stack_key key = {};
	struct stack_counts zero = {};
	struct stack_counts *counts;

	if (!collect_stacks)
		return;
	key.stack_id = bpf_get_stackid(ctx, &stack_traces, 0);
	key.point = point;
	key.path = path;
	counts = lookup_or_init(&stack_counts, &key, &zero, IOMAP_STACK_COUNTS);
	if (counts) {
		__sync_fetch_and_add(&counts->hits, 1);
		__sync_fetch_and_add(&counts->amount, amount);
	}
}

static __always_inline void count_cpu_copy(void *ctx, __s64 copied, __u16 point)
{
	struct inflight_call *call;
	struct io_counters *other;

	if (copied <= 0 || !inner_of_interest())
		return;
	call = current_call(); /* open only on a thread begin() found traced */
	if (call) {
		call->cpu_copied += copied;
		count_stack(ctx, point, call->path, copied);
		return;
	}
	other = other_counters(); /* checks traced_tgid itself */
	if (other)
		other->cpu_copied += copied;
	count_stack(ctx, point, IOPATH_OTHER, copied);
}

/* filemap_read returns already_read plus what it copied; only the difference is this call's copy. */
SEC("fexit/filemap_read")
int BPF_PROG(copy_filemap_read, struct kiocb *iocb, struct iov_iter *iter, ssize_t already_read, ssize_t ret)
{
	count_cpu_copy(ctx, ret - already_read, IOSTACK_COPY_READ);
	return 0;
}

SEC("fexit/generic_perform_write")
int BPF_PROG(copy_generic_perform_write, struct kiocb *iocb, struct iov_iter *i, ssize_t ret)
{
	count_cpu_copy(ctx, ret, IOSTACK_COPY_WRITE);
	return 0;
}

static __always_inline void count_gup(void *ctx, struct inflight *io, long pages, __u32 gup_flags)
{
	struct inflight_call *call = io && io->active ? &io->call : NULL;
	struct io_counters *other;
	bool pin = gup_flags & FOLL_PIN_FLAG;

	if (call) {
		call->gup_calls++;
		if (pages > 0) {
			if (pin)
				call->pinned_pages += pages;
			else
				call->got_pages += pages;
		}
		count_stack(ctx, IOSTACK_GUP, call->path, pages > 0 ? pages : 0);
		return;
	}
	other = other_counters();
	if (other) {
		other->gup_calls++;
		if (pages > 0) {
			if (pin)
				other->pinned_pages += pages;
			else
				other->got_pages += pages;
		}
	}
	count_stack(ctx, IOSTACK_GUP, IOPATH_OTHER, pages > 0 ? pages : 0);
}

/*
 * Every *_user_pages_fast() goes through gup_fast_fallback, which returns the
 * pages of the lockless walk plus those of its slow fallback; the slow path
 * (__get_user_pages) is counted only when not nested in it.
 */
SEC("fentry/gup_fast_fallback")
int BPF_PROG(gup_fast_enter, unsigned long start, unsigned long nr_pages, unsigned int gup_flags)
{
	struct inflight *io;

	if (!inner_of_interest() || !traced_tgid(bpf_get_current_pid_tgid()))
		return 0;
	io = thread_record(true);
	if (io)
		io->in_gup_fast = 1;
	return 0;
}

SEC("fexit/gup_fast_fallback")
int BPF_PROG(gup_fast_exit, unsigned long start, unsigned long nr_pages, unsigned int gup_flags,
	     struct page **pages, long ret)
{
	struct inflight *io;

	if (!inner_of_interest() || !traced_tgid(bpf_get_current_pid_tgid()))
		return 0;
	io = thread_record(false);
	if (io)
		io->in_gup_fast = 0;
	count_gup(ctx, io, (int)ret, gup_flags); /* int or long by kernel version: the low 32 bits are the count */
	return 0;
}

SEC("fexit/__get_user_pages")
int BPF_PROG(gup_slow_exit, struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
	     unsigned int gup_flags, struct page **pages, int *locked, long ret)
{
	struct inflight *io;

	if (!inner_of_interest() || !traced_tgid(bpf_get_current_pid_tgid()))
		return 0;
	io = thread_record(false);
	if (io && io->in_gup_fast)
		return 0;
	count_gup(ctx, io, ret, gup_flags);
	return 0;
}

/* Page cache: tracepoints, so this works without fentry (the host). */
static __always_inline void count_pagecache(struct trace_event_raw_mm_filemap_op_page_cache *ctx, bool added)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pagecache_key key = {};
	struct pagecache_counts zero = {};
	struct pagecache_counts *counts;
	struct inflight_call *call;
	struct io_counters *other;
	__u64 pages = 1;

	if (!traced_tgid(pid_tgid))
		return;
	if (bpf_core_field_exists(ctx->order))
		pages = 1ULL << (ctx->order & 31);
	/* The event record is the program's context: plain loads (BPF_CORE_READ would be a helper call each). */
	key.inode = ctx->i_ino;
	key.dev = ctx->s_dev;
	counts = lookup_or_init(&pagecache_by_file, &key, &zero, IOMAP_PAGECACHE);
	if (counts)
		__sync_fetch_and_add(added ? &counts->added : &counts->removed, pages);

	call = current_call();
	if (call) {
		if (added)
			call->pc_added += pages;
		else
			call->pc_removed += pages;
		return;
	}
	other = other_counters();
	if (other) {
		if (added)
			other->pc_added += pages;
		else
			other->pc_removed += pages;
	}
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int pagecache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	count_pagecache(ctx, true);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_delete_from_page_cache")
int pagecache_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	count_pagecache(ctx, false);
	return 0;
}

/* ------------------------------------------------------------------------- */
/*
 * io_uring and AIO requests: attributed at issue, credited at completion
 *
 * A request is issued by one thread and completes later, maybe on another (an io-wq worker, the
 * SQPOLL thread: both of the submitter's thread group) or in interrupt context (the bio completion
 * of an O_DIRECT read ends an AIO request there). So nothing here lives in a thread's record: at
 * issue the request's pointer keys what is known then (the issuing tgid and comm, the memory object
 * at the user buffer address, the bytes asked for), and the completion of the same pointer adds its
 * result, with the file read from the request, to the maps the syscalls fill, under IOPATH_IO_URING
 * or IOPATH_AIO. A request whose completion is never reported (IOSQE_CQE_SKIP_SUCCESS, a CQE that
 * overflowed, a ring torn down) leaves its entry to the LRU. The CPU copies, pins and page-cache
 * pages inside a request are not attributed to it: they count under IOPATH_OTHER, as any work
 * outside a traced call.
 */

/* include/uapi/linux/io_uring.h: enum io_uring_op (uapi, stable numbers). */
#define IORING_OP_READV_ 1
#define IORING_OP_WRITEV_ 2
#define IORING_OP_READ_FIXED_ 4
#define IORING_OP_WRITE_FIXED_ 5
#define IORING_OP_READ_ 22
#define IORING_OP_WRITE_ 23
#define IORING_OP_READV_FIXED_ 60
#define IORING_OP_WRITEV_FIXED_ 61

struct async_request {
	struct inflight_call call; /* path, requested, the memory end and object, start_ns */
	__u64 pid_tgid;		   /* of the thread that issued it */
	__u32 to_memory;	   /* 1: file -> memory (a read); 0: memory -> file */
	__u32 reserved;
	char comm[IOPATHS_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* the request: its struct io_kiocb *, or the AIO request's struct kiocb * */
	__type(value, struct async_request);
} async_requests SEC(".maps");

static const struct async_request zero_request;

/* task: the current one, which issues the request. NULL when the process is not traced. */
static __always_inline struct async_request *begin_request(void *requests, const void *key, __u32 path,
							   bool to_memory, struct task_struct *task, __u64 user_addr,
							   __u64 len)
{
	__u64 pid_tgid = ((__u64)task->tgid << 32) | (__u32)task->pid;
	struct file_identity mapped = {};
	struct async_request *req;
	struct inflight *io;

	if (!traced_tgid(pid_tgid))
		return NULL;
	io = task_record(task, true); /* for its bpf_find_vma cache only: no call is opened */
	if (!io)
		return NULL;
	if (bpf_map_update_elem(requests, key, &zero_request, BPF_ANY))
		return NULL;
	req = bpf_map_lookup_elem(requests, key);
	if (!req)
		return NULL;
	identify_user_address(task, io, user_addr, &mapped);
	req->call.target = mapped;
	if (to_memory)
		req->call.dst = mapped;
	else
		req->call.src = mapped;
	req->call.start_ns = bpf_ktime_get_ns();
	req->call.path = path;
	req->call.requested = len;
	req->pid_tgid = pid_tgid;
	req->to_memory = to_memory;
	bpf_get_current_comm(req->comm, sizeof(req->comm));
	return req;
}

/*
 * Completions may run in interrupt context, over a program of this object that was updating the
 * same per-CPU value: every add here is atomic, which the syscall exit path need not pay for.
 */
static __always_inline void add_request(struct io_counters *c, __s64 ret, __u64 requested, __u32 slot, __u64 latency)
{
	__sync_fetch_and_add(&c->calls, 1);
	if (ret < 0)
		__sync_fetch_and_add(&c->errors, 1);
	else
		__sync_fetch_and_add(&c->bytes, ret);
	__sync_fetch_and_add(&c->requested, requested);
	__sync_fetch_and_add(&c->latency_ns, latency);
	__sync_fetch_and_add(&c->latency_hist[slot & (IOPATHS_HIST_SLOTS - 1)], 1);
}

static __always_inline void record_request(struct async_request *req, __s64 ret, __u64 now, __u64 latency)
{
	struct io_record *rec = io_record_of(&req->call, req->pid_tgid, ret, now, latency);

	if (!rec)
		return;
	__builtin_memcpy(rec->comm, req->comm, sizeof(rec->comm));
	bpf_ringbuf_submit(rec, 0);
}

/* file: the request's file (a BTF pointer), the other end of the transfer (NULL: identified at issue). */
static __always_inline void complete_request(struct async_request *req, __s64 ret, struct file *file)
{
	struct inflight_call *call = &req->call;
	struct io_target_key target_key = {};
	struct io_task_key task_key = {};
	struct io_counters *counters;
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - call->start_ns;
	__u32 slot = log2_slot(latency / 1000);

	identify_file(file, req->to_memory ? &call->src : &call->dst);
	call->direct = req->to_memory ? call->src.direct : call->dst.direct;

	target_key.inode = call->target.inode;
	target_key.dev = call->target.dev;
	target_key.path = call->path;
	target_key.kind = call->target.kind;
	target_key.direct = call->direct;
	task_key.tgid = req->pid_tgid >> 32;
	task_key.path = call->path;
	task_key.src_kind = call->src.kind;
	task_key.dst_kind = call->dst.kind;
	task_key.error = ret < 0 ? (__s32)ret : 0;
	task_key.src_magic = call->src.magic;
	task_key.dst_magic = call->dst.magic;

	counters = lookup_or_init(&io_by_target, &target_key, &zero_counters, IOMAP_IO_BY_TARGET);
	if (counters)
		add_request(counters, ret, call->requested, slot, latency);
	counters = lookup_or_init(&io_by_task, &task_key, &zero_counters, IOMAP_IO_BY_TASK);
	if (counters)
		add_request(counters, ret, call->requested, slot, latency);
	if (record_events)
		record_request(req, ret, now, latency);
}

/*
 * io_uring: io_uring_submit_req fires once per SQE after its prep (io_rw's addr and len are set),
 * on the thread that submits it (the caller of io_uring_enter, or the SQPOLL thread).
 * io_uring_complete fires when its CQE is filled, with the request while it still holds its file.
 * READ_MULTISHOT and buffer-select reads choose their buffer at issue: their address is 0 and
 * their memory unknown (kind none).
 */
static __always_inline void uring_submit(struct io_kiocb *req)
{
	__u8 opcode = req->opcode;
	bool vectored = opcode == IORING_OP_READV_ || opcode == IORING_OP_WRITEV_ ||
			opcode == IORING_OP_READV_FIXED_ || opcode == IORING_OP_WRITEV_FIXED_;
	bool to_memory = opcode == IORING_OP_READ_ || opcode == IORING_OP_READV_ || opcode == IORING_OP_READ_FIXED_ ||
			 opcode == IORING_OP_READV_FIXED_;
	__u64 key = (__u64)req;
	struct io_rw *rw;
	__u64 addr, len;

	if (!to_memory && opcode != IORING_OP_WRITE_ && opcode != IORING_OP_WRITEV_ &&
	    opcode != IORING_OP_WRITE_FIXED_ && opcode != IORING_OP_WRITEV_FIXED_)
		return;
	if (!bpf_core_type_exists(struct io_rw))
		return;
	rw = bpf_rdonly_cast(&req->cmd, bpf_core_type_id_kernel(struct io_rw));
	addr = rw->addr;
	len = rw->len;
	if (vectored) { /* addr is the user's iovec array, len their count: the memory side is the first iovec */
		struct iovec first = {};

		bpf_probe_read_user(&first, sizeof(first), (void *)addr);
		addr = (__u64)first.iov_base;
		len = first.iov_len;
	}
	begin_request(&async_requests, &key, IOPATH_IO_URING, to_memory, bpf_get_current_task_btf(), addr, len);
}

/* Every CQE of the machine passes here (a network server's too): the opcode, a plain load, is asked before the map. */
static __always_inline void uring_complete(__u64 key, struct io_uring_cqe *cqe)
{
	struct async_request *req;
	struct io_kiocb *request;
	__u8 opcode;

	if (!key)
		return; /* a CQE with no request (an overflow flush, a message) */
	request = bpf_rdonly_cast((void *)key, bpf_core_type_id_kernel(struct io_kiocb));
	opcode = request->opcode;
	if (opcode != IORING_OP_READ_ && opcode != IORING_OP_READV_ && opcode != IORING_OP_READ_FIXED_ &&
	    opcode != IORING_OP_READV_FIXED_ && opcode != IORING_OP_WRITE_ && opcode != IORING_OP_WRITEV_ &&
	    opcode != IORING_OP_WRITE_FIXED_ && opcode != IORING_OP_WRITEV_FIXED_)
		return;
	req = bpf_map_lookup_elem(&async_requests, &key);
	if (!req)
		return;
	complete_request(req, cqe->res, request->file);
	bpf_map_delete_elem(&async_requests, &key);
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_submit_btf, struct io_kiocb *req)
{
	uring_submit(req);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(uring_complete_btf, struct io_ring_ctx *ring, void *req, struct io_uring_cqe *cqe)
{
	uring_complete((__u64)req, cqe);
	return 0;
}

SEC("raw_tp/io_uring_submit_req")
int uring_submit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	uring_submit(bpf_rdonly_cast((void *)ctx->args[0], bpf_core_type_id_kernel(struct io_kiocb)));
	return 0;
}

SEC("raw_tp/io_uring_complete")
int uring_complete_raw(struct bpf_raw_tracepoint_args *ctx)
{
	uring_complete(ctx->args[1], bpf_rdonly_cast((void *)ctx->args[2], bpf_core_type_id_kernel(struct io_uring_cqe)));
	return 0;
}

/*
 * AIO (fs/aio.c): __io_submit_one gives aio_read/aio_write the request's kiocb, its file already
 * got, and the kernel's copy of the user's iocb. The request ends in aio_complete_rw (its
 * ki_complete), called from aio_read/aio_write for a synchronous result or later from the bio
 * completion. aio_read/aio_write return non-zero when the request failed before it was issued:
 * then no aio_complete_rw comes.
 */
static __always_inline void aio_begin(struct kiocb *kiocb, const struct iocb *iocb, bool vectored, bool compat,
				      bool to_memory)
{
	__u64 key = (__u64)kiocb;
	__u64 addr = iocb->aio_buf;
	__u64 len = iocb->aio_nbytes;

	if (vectored) { /* aio_buf is the user's iovec array, aio_nbytes their count */
		if (compat) {
			struct compat_iovec first = {};

			bpf_probe_read_user(&first, sizeof(first), (void *)addr);
			addr = first.iov_base;
			len = first.iov_len;
		} else {
			struct iovec first = {};

			bpf_probe_read_user(&first, sizeof(first), (void *)addr);
			addr = (__u64)first.iov_base;
			len = first.iov_len;
		}
	}
	begin_request(&async_requests, &key, IOPATH_AIO, to_memory, bpf_get_current_task_btf(), addr, len);
}

static __always_inline void aio_end(struct kiocb *kiocb, __s64 ret)
{
	__u64 key = (__u64)kiocb;
	struct async_request *req = bpf_map_lookup_elem(&async_requests, &key);

	if (req) {
		complete_request(req, ret, kiocb->ki_filp);
		bpf_map_delete_elem(&async_requests, &key);
	}
}

SEC("fentry/aio_read")
int BPF_PROG(aio_read_enter, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat)
{
	aio_begin(req, iocb, vectored, compat, true);
	return 0;
}

SEC("fentry/aio_write")
int BPF_PROG(aio_write_enter, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat)
{
	aio_begin(req, iocb, vectored, compat, false);
	return 0;
}

SEC("fexit/aio_read")
int BPF_PROG(aio_read_exit, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat, int ret)
{
	if (ret)
		aio_end(req, ret); /* refused before issue: no completion follows */
	return 0;
}

SEC("fexit/aio_write")
int BPF_PROG(aio_write_exit, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat, int ret)
{
	if (ret)
		aio_end(req, ret);
	return 0;
}

SEC("fentry/aio_complete_rw")
int BPF_PROG(aio_complete, struct kiocb *kiocb, long res)
{
	aio_end(kiocb, res);
	return 0;
}

/*
 * AIO where fentry is refused (the CI host): io_submit's entry reads the user's iocbs, and the exit of
 * io_getevents/io_pgetevents reads the events it returned, whose `obj` is the user address of the iocb.
 * The request is keyed by (tgid, that address); its file is the iocb's fd at submission. Latency ends
 * when the process collects the event, not when the device finished. The syscall programs below do it
 * (aio_syscalls, set only where the fentry programs are refused): no program of its own on every syscall.
 */
#define IOCB_CMD_PREAD_ 0
#define IOCB_CMD_PWRITE_ 1
#define IOCB_CMD_PREADV_ 7
#define IOCB_CMD_PWRITEV_ 8
#define AIO_BATCH_MAX 64 /* iocbs read per io_submit, events per io_getevents: the rest go unattributed */

struct aio_user_key {
	__u32 tgid;
	__u32 reserved;
	__u64 iocb; /* the user's struct iocb * */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct aio_user_key);
	__type(value, struct async_request);
} aio_user_requests SEC(".maps");

struct aio_batch {
	__u64 array; /* the user's iocb pointer array, or its io_event array */
	__u32 tgid;
};

static long aio_submit_one(__u32 index, struct aio_batch *batch)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct aio_user_key key = {.tgid = batch->tgid};
	struct async_request *req;
	struct iocb cb = {};
	bool to_memory;

	if (bpf_probe_read_user(&key.iocb, sizeof(key.iocb), (void *)(batch->array + index * sizeof(__u64))) ||
	    bpf_probe_read_user(&cb, sizeof(cb), (void *)key.iocb))
		return 1;
	if (cb.aio_lio_opcode != IOCB_CMD_PREAD_ && cb.aio_lio_opcode != IOCB_CMD_PWRITE_ &&
	    cb.aio_lio_opcode != IOCB_CMD_PREADV_ && cb.aio_lio_opcode != IOCB_CMD_PWRITEV_)
		return 0;
	to_memory = cb.aio_lio_opcode == IOCB_CMD_PREAD_ || cb.aio_lio_opcode == IOCB_CMD_PREADV_;
	if (cb.aio_lio_opcode == IOCB_CMD_PREADV_ || cb.aio_lio_opcode == IOCB_CMD_PWRITEV_) {
		struct iovec first = {};

		bpf_probe_read_user(&first, sizeof(first), (void *)cb.aio_buf);
		cb.aio_buf = (__u64)first.iov_base;
		cb.aio_nbytes = first.iov_len;
	}
	req = begin_request(&aio_user_requests, &key, IOPATH_AIO, to_memory, task, cb.aio_buf, cb.aio_nbytes);
	if (req) {
		identify_file(file_of_fd(task, cb.aio_fildes), to_memory ? &req->call.src : &req->call.dst);
		req->call.direct = to_memory ? req->call.src.direct : req->call.dst.direct;
	}
	return 0;
}

static long aio_event_one(__u32 index, struct aio_batch *batch)
{
	struct aio_user_key key = {.tgid = batch->tgid};
	struct async_request *req;
	struct io_event event = {};

	if (bpf_probe_read_user(&event, sizeof(event), (void *)(batch->array + index * sizeof(event))))
		return 1;
	key.iocb = event.obj;
	req = bpf_map_lookup_elem(&aio_user_requests, &key);
	if (req) {
		complete_request(req, event.res, NULL);
		bpf_map_delete_elem(&aio_user_requests, &key);
	}
	return 0;
}

static __always_inline void aio_submit(struct task_struct *task, struct pt_regs *regs)
{
	struct aio_batch batch;
	__u64 nr;

	if (!traced_tgid(((__u64)task->tgid << 32) | (__u32)task->pid))
		return;
	batch.array = syscall_arg(regs, 2);
	batch.tgid = task->tgid;
	nr = syscall_arg(regs, 1);
	bpf_loop(nr < AIO_BATCH_MAX ? nr : AIO_BATCH_MAX, aio_submit_one, &batch, 0);
}

static __always_inline void aio_events(struct task_struct *task, struct pt_regs *regs, __s64 ret)
{
	struct aio_batch batch;

	if (ret <= 0 || !traced_tgid(((__u64)task->tgid << 32) | (__u32)task->pid))
		return;
	batch.array = syscall_arg(regs, 3);
	batch.tgid = task->tgid;
	bpf_loop(ret < AIO_BATCH_MAX ? ret : AIO_BATCH_MAX, aio_event_one, &batch, 0);
}

/* ------------------------------------------------------------------------- */
/*
 * The programs on sys_enter and sys_exit (where fentry is refused: the CI host). Every syscall of the
 * machine passes them, so each first tests the syscall number against a bitmap of the few it reads (a
 * shift and a load from .rodata, no helper, no map lookup) and leaves for any other (getppid...).
 * A read or write of a task of no interest leaves before that, at the per-CPU flag (no_interest_here).
 * The I/O calls open a record at entry only when of interest (rw_of_interest: the file is shared memory
 * or the process maps some), and their exit looks for it only while one is open (open_calls).
 * The exits of mmap and shmat keep shared_memory_tgids, as mmap_region's fentry does on the VFS path; the
 * exits of the calls that install fds keep fd_holder_tgids.
 * AIO's io_submit and io_getevents are read here too (aio_syscalls), not by programs of their own.
 */
static const __u64 enter_syscalls[SYSCALL_WORDS] = SYSCALL_SET(ENTER_SYSCALLS);
static const __u64 exit_syscalls[SYSCALL_WORDS] = SYSCALL_SET(EXIT_SYSCALLS);
static const __u64 exit_all_syscalls[SYSCALL_WORDS] = SYSCALL_SET(EXIT_ALL_SYSCALLS);
static const __u64 fd_install_syscalls[SYSCALL_WORDS] = SYSCALL_SET(FD_INSTALL_SYSCALLS);

/*
 * The work past the bitmap is a function of its own (a BPF-to-BPF call): the program itself then uses no
 * stack and no callee-saved registers, so a syscall of no interest pays no prologue for them either.
 */
static __noinline int syscall_enter_traced(struct pt_regs *regs, __s64 nr)
{
	struct task_struct *task;
	struct iovec first = {};
	__u32 path;

	task = bpf_get_current_task_btf();
	if (compat_syscall(task))
		return 0;
	if (vfs_path && nr != NR_io_submit)
		return 0; /* loaded beside the VFS path for AIO only (its fentry refused): the VFS programs do the rest */
	switch (nr) {
	case NR_read:
	case NR_pread64:
	case NR_write:
	case NR_pwrite64:
		path = (nr == NR_read || nr == NR_pread64) ? IOPATH_READ : IOPATH_WRITE;
		begin_rw(task, nr, path, syscall_arg(regs, 0), syscall_arg(regs, 1), syscall_arg(regs, 2));
		return 0;
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
		/* The memory side is the first iovec (argument 1 points at the array). */
		path = (nr == NR_readv || nr == NR_preadv || nr == NR_preadv2) ? IOPATH_READ : IOPATH_WRITE;
		if (!rw_of_interest(task, file_of_fd(task, syscall_arg(regs, 0))))
			return 0; /* before the user read: a call of no interest costs no helper */
		bpf_probe_read_user(&first, sizeof(first), (void *)syscall_arg(regs, 1));
		begin_rw(task, nr, path, syscall_arg(regs, 0), (__u64)first.iov_base, first.iov_len);
		return 0;
	case NR_copy_file_range: /* (fd_in, off_in, fd_out, off_out, len, flags) */
	case NR_splice:		 /* (fd_in, off_in, fd_out, off_out, len, flags) */
		begin_fd_to_fd(task, nr, nr == NR_splice ? IOPATH_SPLICE : IOPATH_COPY_FILE_RANGE, syscall_arg(regs, 0),
			       syscall_arg(regs, 2), syscall_arg(regs, 4));
		return 0;
	case NR_sendfile64: /* (out_fd, in_fd, offset, count) */
		begin_fd_to_fd(task, nr, IOPATH_SENDFILE, syscall_arg(regs, 1), syscall_arg(regs, 0), syscall_arg(regs, 3));
		return 0;
	case NR_io_submit:
		if (aio_syscalls)
			aio_submit(task, regs);
		return 0;
	case NR_bpf: /* a thread about to read the maps sees its own calls in them */
		if (batch_calls) {
			struct inflight *io = task_record(task, false);

			if (io)
				flush_batch(&io->batch);
		}
		return 0;
	}
	return 0;
}

#define MAP_ANONYMOUS_ 0x20

/* mmap and shmat returned: a new mapping of shared memory sets the process's bit (shared_memory_tgids). */
static __always_inline void note_mapping(struct task_struct *task, struct pt_regs *regs, __s64 nr, __s64 ret)
{
	struct file *file;

	if (!shared_memory_known || (__u64)ret >= (__u64)-4095) /* an error */
		return;
	if (nr == NR_mmap) {
		if (syscall_arg(regs, 3) & MAP_ANONYMOUS_)
			return;
		file = file_of_fd(task, syscall_arg(regs, 4));
		if (!file || !shared_memory_mapping(file))
			return;
	}
	mark_tgid(task->tgid, true); /* shmat: System V shared memory is shmem */
}

#define ENOTTY_ 25
/* include/uapi/asm-generic/ioctls.h (x86-64 and arm64 alike): requests fs/ioctl.c answers itself for any file
 * (Python sets close-on-exec with FIOCLEX), none of which installs an fd. */
#define FIONREAD_ 0x541B
#define FIONBIO_ 0x5421
#define FIONCLEX_ 0x5450
#define FIOCLEX_ 0x5451
#define FIOASYNC_ 0x5452
#define FIOQSIZE_ 0x5460
/* include/uapi/linux/seccomp.h: SECCOMP_IOW(3, struct seccomp_notif_addfd), the same on x86-64 and arm64 */
#define SECCOMP_IOCTL_NOTIF_ADDFD_ 0x40182103U

/*
 * A tty's ioctl (isatty, TCGETS, TIOCGWINSZ...: most processes make some) installs no shared memory. Its file
 * is told by its ioctl function: tty_fops itself is in no kallsyms without CONFIG_KALLSYMS_ALL (the CI host),
 * the function is, and a pty master (ptmx_fops, a copy of tty_fops) and a hung-up tty share it. A kernel
 * without the symbols (0) has every ioctl mark its process.
 */
extern const void tty_ioctl __ksym __weak;
extern const void hung_up_tty_ioctl __ksym __weak;

static __always_inline bool tty_file(struct file *file)
{
	void *ioctl = file->f_op->unlocked_ioctl;

	return ioctl && (ioctl == (void *)&tty_ioctl || ioctl == (void *)&hung_up_tty_ioctl);
}

static const __u64 fd_open_syscalls[SYSCALL_WORDS] = SYSCALL_SET(FD_OPEN_SYSCALLS);

/*
 * A call that may have put an fd of shared memory in the caller's table returned (fd_holder_tgids). An error
 * installed nothing, except for an ioctl, which may fail after its fd_install (dma-heap's copy of the fd to
 * user space): only ENOTTY (no such request) and a bad fd are taken at their word there.
 */
static __always_inline void note_fd_install(struct task_struct *task, struct pt_regs *regs, __s64 nr, __s64 ret)
{
	__u32 tgid = task->tgid;
	struct file *file;

	if (!fast_path() || compat_syscall(task))
		return;
	if (nr == NR_ioctl) {
		__u32 request = syscall_arg(regs, 1);

		if (ret == -ENOTTY_ || request == FIOCLEX_ || request == FIONCLEX_ || request == FIONBIO_ ||
		    request == FIOASYNC_ || request == FIOQSIZE_ || request == FIONREAD_)
			return;
		if (request == SECCOMP_IOCTL_NOTIF_ADDFD_ && ret >= 0) {
			/* The fd went into another process: from now on every process is of interest. */
			if (!__sync_fetch_and_or(&every_process_of_interest, 1))
				interest_grew();
			return;
		}
		if (tgid_holds_fd(tgid))
			return;
		file = file_of_fd(task, syscall_arg(regs, 0));
		if (file ? tty_file(file) : ret < 0)
			return;
		note_fd_holder(tgid);
		return;
	}
	if (ret < 0 || tgid_holds_fd(tgid))
		return;
	if (syscall_in(fd_open_syscalls, nr)) {
		file = file_of_fd(task, ret);
		if (file && !shared_memory_file(file))
			return; /* no file: closed already by a sibling thread, which may have used it: marked */
	}
	note_fd_holder(tgid);
}

static __noinline int syscall_exit_traced(struct pt_regs *regs, __s64 nr, __s64 ret)
{
	struct task_struct *task;
	struct inflight *io;

	if (syscall_in(fd_install_syscalls, nr)) {
		note_fd_install(bpf_get_current_task_btf(), regs, nr, ret);
		return 0;
	}
	switch (nr) {
	case NR_mmap:
	case NR_shmat:
		task = bpf_get_current_task_btf();
		if (!compat_syscall(task))
			note_mapping(task, regs, nr, ret);
		return 0;
	case NR_io_getevents:
	case NR_io_pgetevents:
		if (!aio_syscalls)
			return 0;
		task = bpf_get_current_task_btf();
		if (!compat_syscall(task))
			aio_events(task, regs, ret);
		return 0;
	}
	if (vfs_path)
		return 0;
	task = bpf_get_current_task_btf();
	if (!open_calls[task->tgid & (OPEN_CALL_SLOTS - 1)])
		return 0;
	io = task_record(task, false);
	if (io && io->active && io->nr == nr) {
		finish(io, ret, true);
		count_closed(io);
	}
	return 0;
}

/*
 * Any syscall of a task of no interest leaves at the per-CPU flag (no_interest_here), one load: no bitmap, no
 * fd walk, no helper call. Exact for every call the entry reads: such a task maps no shared memory and holds
 * no fd of it, so no read, write, vector or file-to-file call of its is of interest (rw_of_interest,
 * files_of_interest), and it has no run of calls to flush before bpf() (flush_on_switch flushed it when it was
 * last switched out; the flag is set at switch-in). Only io_submit goes on: AIO is traced for every process
 * (aio_submit). No fast_path() test here: the flag is only ever set where it holds, and a kernel that keeps
 * branches on .rodata (a loader without CAP_SYS_ADMIN: the verifier then hard-wires no dead branch) would pay
 * its loads on every syscall.
 */
static __always_inline void syscall_enter(struct pt_regs *regs, __s64 nr)
{
	if (running_task_of_no_interest() && nr != NR_io_submit)
		return;
	if (syscall_in(enter_syscalls, nr)) /* every other syscall (getppid...) leaves here */
		syscall_enter_traced(regs, nr);
}

/*
 * While no record is open anywhere (open_calls_total), the exit of a read or write has nothing to close:
 * only mmap, shmat, AIO's and the fd installers' exits are looked at then, so a call of no interest makes no
 * subprogram call.
 */
static __always_inline void syscall_exit(struct pt_regs *regs, __s64 ret)
{
	__s64 nr = syscall_nr(regs);

	if (syscall_in(open_calls_total ? exit_all_syscalls : exit_syscalls, nr))
		syscall_exit_traced(regs, nr, ret);
}

/*
 * BTF-typed raw tracepoints: the arguments are BTF pointers, read with plain loads. The entry reads its
 * arguments from ctx itself, each once where it is needed (volatile): across the flag's lookup (a helper call
 * to the compiler, inlined by the verifier) only ctx then stays in a callee-saved register, one push and pop
 * for every syscall instead of two, and a read or write of no interest loads no regs.
 */
SEC("tp_btf/sys_enter")
int syscall_enter_btf(__u64 *ctx)
{
	__s64 nr;

	if (running_task_of_no_interest() && *(volatile __u64 *)&ctx[1] != NR_io_submit)
		return 0;
	nr = *(volatile __u64 *)&ctx[1];
	if (syscall_in(enter_syscalls, nr))
		syscall_enter_traced((struct pt_regs *)*(volatile __u64 *)&ctx[0], nr);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_exit_btf, struct pt_regs *regs, long ret)
{
	syscall_exit(regs, ret);
	return 0;
}

/* Where tp_btf is refused: plain raw tracepoints, the same work through a read-only cast of regs. */
SEC("raw_tp/sys_enter")
int syscall_enter_raw(struct bpf_raw_tracepoint_args *ctx)
{
	syscall_enter(bpf_rdonly_cast((void *)ctx->args[0], bpf_core_type_id_kernel(struct pt_regs)), ctx->args[1]);
	return 0;
}

SEC("raw_tp/sys_exit")
int syscall_exit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	syscall_exit(bpf_rdonly_cast((void *)ctx->args[0], bpf_core_type_id_kernel(struct pt_regs)), ctx->args[1]);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Following the traced command's children */

SEC("tracepoint/sched/sched_process_fork")
int follow_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 child = ctx->child_pid;
	__u8 one = 1;

	if (!follow_children || !target_tgid || !traced_tgid(bpf_get_current_pid_tgid()))
		return 0;
	if (bpf_map_update_elem(&traced_tgids, &child, &one, BPF_ANY))
		count_map_full(IOMAP_TRACED_TGIDS); /* that child and its own children go untraced */
	return 0;
}

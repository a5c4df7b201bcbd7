// SPDX-License-Identifier: GPL-2.0
/*
 * I/O path tracing: which syscall moved how many bytes into or out of which
 * memory object (a dma-buf mapping, a memfd behind a udmabuf, a file), and what
 * it cost inside: CPU copies, GUP pins, page-cache insertions, latency.
 *
 * Attribution: one program on the raw sys_enter/sys_exit tracepoints (tp_btf,
 * else raw_tp) picks out the I/O syscalls by number and opens a per-thread
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

const volatile __u32 target_tgid = 0; /* 0: every process */
const volatile __u32 ignore_tgid = 0; /* the tracer itself */
const volatile bool record_events = false;
const volatile bool collect_stacks = true;
const volatile bool follow_children = false; /* with target_tgid: also trace what it forks (traced_tgids) */
const volatile bool batch_calls = true; /* only with a live flush_on_switch program: see struct call_batch */

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

/*
 * With follow_children: the tgids forked (transitively) by target_tgid, filled at
 * sched_process_fork. A thread's clone adds its tid too: harmless (a tid is not a
 * tgid while it lives) and simpler than telling threads from processes there.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} traced_tgids SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps"); /* ring buffer reservations that failed: records lost */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IOMAP_COUNTED);
	__type(key, __u32);
	__type(value, __u64);
} map_full SEC(".maps"); /* per enum iomap_counted: new keys a full map refused, so what they carried is not counted */

/* ------------------------------------------------------------------------- */
/* Small helpers */

static __always_inline bool traced_tgid(__u64 pid_tgid)
{
	__u32 tgid = pid_tgid >> 32;

	if (ignore_tgid && tgid == ignore_tgid)
		return false;
	if (!target_tgid || tgid == target_tgid)
		return true;
	return follow_children && bpf_map_lookup_elem(&traced_tgids, &tgid);
}

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

static __always_inline void count_map_full(__u32 which)
{
	__u64 *refused = bpf_map_lookup_elem(&map_full, &which);

	if (refused)
		(*refused)++; /* per-CPU slot: no atomics needed */
}

/* which: the map's enum iomap_counted, counted when the map has no room for the key. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *zero, __u32 which)
{
	void *value = bpf_map_lookup_elem(map, key);

	if (value)
		return value;
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST); /* -EEXIST if another CPU made it meanwhile: fine */
	value = bpf_map_lookup_elem(map, key);
	if (!value)
		count_map_full(which);
	return value;
}

/*
 * Read-only view of a kernel pointer got as a plain number (an fd table slot,
 * a raw_tp argument): its fields are then plain loads (a fault reads 0) rather
 * than one bpf_probe_read_kernel call each, which cost ~35 ns apiece here.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

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

/* The task's (the current one's) open file at fd, read through its fd table. */
static __always_inline struct file *file_of_fd(struct task_struct *task, __u64 fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	/*
	 * fdt->fd is an array of pointers, which BTF loads cannot follow. Its slot is
	 * read as the first member of a kernel struct that starts with a struct file *
	 * (kiocb.ki_filp, at offset 0 since 2.6): a plain load, ~30 ns less than a
	 * bpf_probe_read_kernel here. A kernel that moved ki_filp gets the helper.
	 */
	if (bpf_core_field_offset(struct kiocb, ki_filp) == 0)
		return ((struct kiocb *)bpf_rdonly_cast(&fdt->fd[fd], bpf_core_type_id_kernel(struct kiocb)))->ki_filp;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	if (!file)
		return NULL;
	return bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
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

/* read/write family: the file side is fd, the memory side is the user buffer. */
static __always_inline void begin_rw(struct task_struct *task, __s64 nr, __u32 path, __u64 fd, __u64 user_addr,
				     __u64 count)
{
	struct inflight *io = begin(task, path, count, nr);
	struct file_identity mapped = {};
	struct inflight_call *call;

	if (!io)
		return;
	call = &io->call;
	identify_file(file_of_fd(task, fd), path == IOPATH_READ ? &call->src : &call->dst);
	identify_user_address(task, io, user_addr, &mapped); /* bpf_find_vma's context must live on the stack */
	call->target = mapped;
	if (path == IOPATH_READ)
		call->dst = mapped;
	else
		call->src = mapped;
	call->direct = path == IOPATH_READ ? call->src.direct : call->dst.direct;
}

/* fd-to-fd paths: the memory object is the end that is a dma-buf or shmem, else the destination. */
static __always_inline void begin_fd_to_fd(struct task_struct *task, __s64 nr, __u32 path, __u64 fd_in,
					   __u64 fd_out, __u64 count)
{
	struct inflight *io = begin(task, path, count, nr);
	struct inflight_call *call;

	if (!io)
		return;
	call = &io->call;
	identify_file(file_of_fd(task, fd_in), &call->src);
	identify_file(file_of_fd(task, fd_out), &call->dst);
	if ((call->src.kind == IOFILE_DMABUF || call->src.kind == IOFILE_SHMEM) &&
	    !(call->dst.kind == IOFILE_DMABUF || call->dst.kind == IOFILE_SHMEM))
		call->target = call->src;
	else
		call->target = call->dst;
	call->direct = call->src.direct | call->dst.direct;
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

static __always_inline void count_dropped(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&dropped, &zero);

	if (lost)
		(*lost)++; /* per-CPU slot: no atomics needed */
}

static __always_inline void record_io(struct inflight_call *call, __u64 pid_tgid, __s64 ret, __u64 now, __u64 latency)
{
	struct io_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);

	if (!rec) {
		count_dropped();
		return;
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
	rec->cpu_copied = call->cpu_copied;
	rec->pinned_pages = call->pinned_pages;
	rec->pc_added = call->pc_added;
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

/*
 * Syscall numbers, arguments and the 32-bit compat check by architecture. The
 * one program sees every syscall, so it tells ours by number; compat syscalls
 * have their own numbers and are left out, as the syscalls:* events do.
 */
#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile64 40
#define NR_splice 275
#define NR_preadv 295
#define NR_pwritev 296
#define NR_copy_file_range 326
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_bpf 321
#define TS_COMPAT_ 0x0002 /* arch/x86/include/asm/thread_info.h: inside an ia32 syscall */

static __always_inline __u64 syscall_arg(struct pt_regs *ctx_regs, int n)
{
	struct pt_regs___dmabuf_top_x86 *regs = (void *)ctx_regs;

	switch (n) {
	case 0:
		return regs->di;
	case 1:
		return regs->si;
	case 2:
		return regs->dx;
	case 3:
		return regs->r10;
	default:
		return regs->r8;
	}
}

static __always_inline __s64 syscall_nr(struct pt_regs *ctx_regs)
{
	return ((struct pt_regs___dmabuf_top_x86 *)ctx_regs)->orig_ax;
}

static __always_inline bool compat_syscall(struct task_struct *task)
{
	return ((struct thread_info___dmabuf_top_x86 *)&task->thread_info)->status & TS_COMPAT_;
}
#elif defined(__TARGET_ARCH_arm64)
/* include/uapi/asm-generic/unistd.h */
#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_pread64 67
#define NR_pwrite64 68
#define NR_preadv 69
#define NR_pwritev 70
#define NR_sendfile64 71
#define NR_splice 76
#define NR_copy_file_range 285
#define NR_preadv2 286
#define NR_pwritev2 287
#define NR_bpf 280
#define TIF_32BIT_ 22

static __always_inline __u64 syscall_arg(struct pt_regs *ctx_regs, int n)
{
	struct pt_regs___dmabuf_top_arm64 *regs = (void *)ctx_regs;

	return n == 0 ? regs->orig_x0 : regs->regs[n & 7];
}

static __always_inline __s64 syscall_nr(struct pt_regs *ctx_regs)
{
	return ((struct pt_regs___dmabuf_top_arm64 *)ctx_regs)->syscallno;
}

static __always_inline bool compat_syscall(struct task_struct *task)
{
	return task->thread_info.flags & (1UL << TIF_32BIT_);
}
#else
#error "iopaths.bpf.c: syscall numbers are defined for x86 and arm64 only"
#endif

static __always_inline void syscall_enter(struct pt_regs *regs, __s64 nr)
{
	struct task_struct *task; /* asked for in the I/O cases only: every other syscall returns at once */
	struct iovec first = {};
	__u32 path;

	switch (nr) {
	case NR_read:
	case NR_pread64:
	case NR_write:
	case NR_pwrite64:
		path = (nr == NR_read || nr == NR_pread64) ? IOPATH_READ : IOPATH_WRITE;
		task = bpf_get_current_task_btf();
		if (compat_syscall(task))
			return;
		begin_rw(task, nr, path, syscall_arg(regs, 0), syscall_arg(regs, 1), syscall_arg(regs, 2));
		return;
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
		/* The memory side is the first iovec (argument 1 points at the array). */
		path = (nr == NR_readv || nr == NR_preadv || nr == NR_preadv2) ? IOPATH_READ : IOPATH_WRITE;
		task = bpf_get_current_task_btf();
		if (compat_syscall(task))
			return;
		bpf_probe_read_user(&first, sizeof(first), (void *)syscall_arg(regs, 1));
		begin_rw(task, nr, path, syscall_arg(regs, 0), (__u64)first.iov_base, first.iov_len);
		return;
	case NR_copy_file_range: /* (fd_in, off_in, fd_out, off_out, len, flags) */
	case NR_splice:		 /* (fd_in, off_in, fd_out, off_out, len, flags) */
		task = bpf_get_current_task_btf();
		if (compat_syscall(task))
			return;
		begin_fd_to_fd(task, nr, nr == NR_splice ? IOPATH_SPLICE : IOPATH_COPY_FILE_RANGE, syscall_arg(regs, 0),
			       syscall_arg(regs, 2), syscall_arg(regs, 4));
		return;
	case NR_sendfile64: /* (out_fd, in_fd, offset, count) */
		task = bpf_get_current_task_btf();
		if (compat_syscall(task))
			return;
		begin_fd_to_fd(task, nr, IOPATH_SENDFILE, syscall_arg(regs, 1), syscall_arg(regs, 0), syscall_arg(regs, 3));
		return;
	case NR_bpf: /* a thread about to read the maps sees its own calls in them */
		if (batch_calls) {
			struct inflight *io = thread_record(false);

			if (io)
				flush_batch(&io->batch);
		}
		return;
	}
}

static __always_inline void syscall_exit(struct pt_regs *regs, __s64 ret)
{
	__s64 nr = syscall_nr(regs);
	struct inflight *io;

	switch (nr) {
	case NR_read:
	case NR_pread64:
	case NR_write:
	case NR_pwrite64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
	case NR_copy_file_range:
	case NR_splice:
	case NR_sendfile64:
		break;
	default:
		return;
	}
	io = thread_record(false);
	if (io && io->active && io->nr == nr)
		finish(io, ret, true);
}

/* BTF-typed raw tracepoints: the arguments are BTF pointers, read with plain loads. */
SEC("tp_btf/sys_enter")
int BPF_PROG(syscall_enter_btf, struct pt_regs *regs, long id)
{
	syscall_enter(regs, id);
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

/* The run of calls of a thread being switched out (it sleeps, is preempted, or exits) goes to the maps. */
SEC("tp_btf/sched_switch")
int BPF_PROG(flush_on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct inflight *io;

	if (!batch_calls)
		return 0;
	io = bpf_task_storage_get(&inflight, prev, 0, 0);
	if (io)
		flush_batch(&io->batch);
	return 0;
}

/*
 * Patched kernels only (kernel/patches): dma_buf_rw_file(dmabuf, file, pos, offset, len, flags)
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

	if (copied <= 0)
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

	if (!traced_tgid(bpf_get_current_pid_tgid()))
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

	if (!traced_tgid(bpf_get_current_pid_tgid()))
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

	if (!traced_tgid(bpf_get_current_pid_tgid()))
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

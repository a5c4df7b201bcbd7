// SPDX-License-Identifier: GPL-2.0
/*
 * I/O path tracing: which syscall moved how many bytes into or out of which
 * memory object (a dma-buf mapping, a memfd behind a udmabuf, a file), and what
 * it cost inside: CPU copies, GUP pins, page-cache insertions, latency.
 *
 * Attribution: the syscall tracepoints (present on every kernel we support)
 * open a per-thread "inflight" record at entry, resolving the fds to files and
 * the user buffer to the file mapped there (bpf_find_vma). The inner hooks
 * (fexit filemap_read / generic_perform_write / gup_fast_fallback /
 * __get_user_pages, the filemap tracepoints) add to the inflight record of the
 * current thread; work seen with no inflight record goes to IOPATH_OTHER. At
 * syscall exit the record is folded into the aggregate maps. Python reads them
 * cumulatively (no draining): deltas between reads are the caller's math.
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

#include "iopaths.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep the ring buffer record types in the object's BTF, where the Python mirrors' size test finds them. */
const struct io_record *unused_io_record __attribute__((unused));
const struct lifecycle_record *unused_lifecycle_record __attribute__((unused));

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

struct file_identity {
	__u64 inode;
	__u32 dev;
	__u32 magic;
	__u8 kind;
	__u8 direct;
	__u8 pfnmap;
	__u8 pad;
};

struct inflight {
	__u64 start_ns;
	__u64 requested;
	__u64 user_addr;
	struct file_identity target; /* what the key is: the memory object */
	struct file_identity src;    /* both ends, for io_outcomes */
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid: inside gup_fast_fallback, so __get_user_pages below it is not counted twice */
	__type(value, __u32);
} gup_nesting SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct io_outcome_key);
	__type(value, struct io_outcome);
} io_outcomes SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct lifecycle_key);
	__type(value, struct lifecycle_counts);
} lifecycle_counts SEC(".maps");

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

static __always_inline __u32 log2_slot(__u64 value)
{
	__u32 slot = 0;

	/* Bounded loop: 63 steps at most, the verifier sees the bound. */
	for (int i = 0; i < 63 && value > 1; i++) {
		value >>= 1;
		slot++;
	}
	return slot < IOPATHS_HIST_SLOTS ? slot : IOPATHS_HIST_SLOTS - 1;
}

static __always_inline void *lookup_or_init(void *map, const void *key, const void *zero)
{
	void *value = bpf_map_lookup_elem(map, key);

	if (value)
		return value;
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

static __always_inline __u8 kind_of(struct inode *inode, __u32 magic)
{
	__u32 mode = BPF_CORE_READ(inode, i_mode) & S_IFMT_;

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

static __always_inline void identify_file(struct file *file, struct file_identity *id)
{
	struct inode *inode;

	if (!file)
		return;
	inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return;
	id->inode = BPF_CORE_READ(inode, i_ino);
	id->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	id->magic = BPF_CORE_READ(inode, i_sb, s_magic);
	id->kind = kind_of(inode, id->magic);
	id->direct = (BPF_CORE_READ(file, f_flags) & O_DIRECT_FLAG) ? 1 : 0;
}

/* The current task's open file at fd, read through its fd table. */
static __always_inline struct file *file_of_fd(__u64 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

static long vma_callback(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct file_identity *id = data;
	struct file *file = BPF_CORE_READ(vma, vm_file);

	if (bpf_core_field_exists(vma->vm_flags))
		id->pfnmap = (BPF_CORE_READ(vma, vm_flags) & VM_PFNMAP_FLAG) ? 1 : 0;
	identify_file(file, id);
	id->direct = 0; /* the mapping has no open mode of its own */
	return 0;
}

/* The file mapped at a user address in the current process (nothing for anonymous memory). */
static __always_inline void identify_user_address(__u64 addr, struct file_identity *id)
{
	struct task_struct *task = bpf_get_current_task_btf();

	/* bpf_find_vma takes mmap_lock with a trylock: under contention it fails (-EBUSY) and the target stays unknown. */
	bpf_find_vma(task, addr, vma_callback, id, 0);
}

/* ------------------------------------------------------------------------- */
/* Syscall entry and exit: open and fold the inflight record */

static __always_inline struct inflight *begin(__u32 path, __u64 requested)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct inflight fresh = {};

	if (!traced_tgid(pid_tgid))
		return NULL;
	fresh.start_ns = bpf_ktime_get_ns();
	fresh.path = path;
	fresh.requested = requested;
	bpf_map_update_elem(&inflight, &pid_tgid, &fresh, BPF_ANY);
	return bpf_map_lookup_elem(&inflight, &pid_tgid);
}

/* read/write family: the file side is fd, the memory side is the user buffer. */
static __always_inline void begin_rw(__u32 path, __u64 fd, __u64 user_addr, __u64 count)
{
	struct inflight *io = begin(path, count);
	struct file_identity mapped = {};

	if (!io)
		return;
	io->user_addr = user_addr;
	identify_file(file_of_fd(fd), path == IOPATH_READ ? &io->src : &io->dst);
	identify_user_address(user_addr, &mapped); /* bpf_find_vma's context must live on the stack */
	io->target = mapped;
	if (path == IOPATH_READ)
		io->dst = io->target;
	else
		io->src = io->target;
	io->direct = path == IOPATH_READ ? io->src.direct : io->dst.direct;
}

/* fd-to-fd paths: the memory object is the end that is a dma-buf or shmem, else the destination. */
static __always_inline void begin_fd_to_fd(__u32 path, __u64 fd_in, __u64 fd_out, __u64 count)
{
	struct inflight *io = begin(path, count);

	if (!io)
		return;
	identify_file(file_of_fd(fd_in), &io->src);
	identify_file(file_of_fd(fd_out), &io->dst);
	if ((io->src.kind == IOFILE_DMABUF || io->src.kind == IOFILE_SHMEM) &&
	    !(io->dst.kind == IOFILE_DMABUF || io->dst.kind == IOFILE_SHMEM))
		io->target = io->src;
	else
		io->target = io->dst;
	io->direct = io->src.direct | io->dst.direct;
}

/*
 * The counter maps are per-CPU: a plain add on this CPU's copy replaces a locked
 * add on a shared line (Python sums the CPUs). BPF programs run with migration
 * disabled, and none of these hooks fires from interrupt context.
 */
static __always_inline void add_counters(struct io_counters *c, struct inflight *io, __s64 ret, __u64 latency)
{
	c->calls++;
	if (ret < 0)
		c->errors++;
	else
		c->bytes += ret;
	c->requested += io->requested;
	c->cpu_copied += io->cpu_copied;
	c->pinned_pages += io->pinned_pages;
	c->got_pages += io->got_pages;
	c->gup_calls += io->gup_calls;
	c->pc_added += io->pc_added;
	c->pc_removed += io->pc_removed;
	c->latency_ns += latency;
	c->latency_hist[log2_slot(latency / 1000) & (IOPATHS_HIST_SLOTS - 1)]++;
}

static const struct io_counters zero_counters;

static __always_inline void count_dropped(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&dropped, &zero);

	if (lost)
		(*lost)++; /* per-CPU slot: no atomics needed */
}

static __always_inline void record_io(struct inflight *io, __u64 pid_tgid, __s64 ret, __u64 now, __u64 latency)
{
	struct io_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);

	if (!rec) {
		count_dropped();
		return;
	}
	rec->type = IORECORD_IO;
	rec->tgid = pid_tgid >> 32;
	rec->tid = (__u32)pid_tgid;
	rec->path = io->path;
	rec->kind = io->target.kind;
	rec->direct = io->direct;
	rec->timestamp_ns = now;
	rec->latency_ns = latency;
	rec->ret = ret;
	rec->requested = io->requested;
	rec->inode = io->target.inode;
	rec->dev = io->target.dev;
	rec->reserved = 0;
	rec->cpu_copied = io->cpu_copied;
	rec->pinned_pages = io->pinned_pages;
	rec->pc_added = io->pc_added;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	bpf_ringbuf_submit(rec, 0);
}

static __always_inline void finish(__s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct inflight *io = bpf_map_lookup_elem(&inflight, &pid_tgid);
	struct io_target_key target_key = {};
	struct io_task_key task_key = {};
	struct io_outcome_key outcome_key = {};
	struct io_outcome *outcome;
	struct io_counters *counters;
	__u64 now, latency;

	if (!io)
		return;
	now = bpf_ktime_get_ns();
	latency = now - io->start_ns;

	target_key.inode = io->target.inode;
	target_key.dev = io->target.dev;
	target_key.path = io->path;
	target_key.kind = io->target.kind;
	target_key.direct = io->direct;
	counters = lookup_or_init(&io_by_target, &target_key, &zero_counters);
	if (counters)
		add_counters(counters, io, ret, latency);

	task_key.tgid = pid_tgid >> 32;
	task_key.path = io->path;
	counters = lookup_or_init(&io_by_task, &task_key, &zero_counters);
	if (counters)
		add_counters(counters, io, ret, latency);

	outcome_key.path = io->path;
	outcome_key.src_kind = io->src.kind;
	outcome_key.dst_kind = io->dst.kind;
	outcome_key.error = ret < 0 ? (__s32)ret : 0;
	outcome_key.src_magic = io->src.magic;
	outcome_key.dst_magic = io->dst.magic;
	{
		struct io_outcome zero = {};

		outcome = lookup_or_init(&io_outcomes, &outcome_key, &zero);
	}
	if (outcome) {
		outcome->calls++;
		outcome->bytes += ret > 0 ? ret : 0;
		outcome->requested += io->requested;
	}

	if (record_events)
		record_io(io, pid_tgid, ret, now, latency);
	bpf_map_delete_elem(&inflight, &pid_tgid);
}

#define SYSCALL_EXIT(name)                                    \
	SEC("tracepoint/syscalls/sys_exit_" #name)            \
	int exit_##name(struct trace_event_raw_sys_exit *ctx) \
	{                                                     \
		finish(ctx->ret);                             \
		return 0;                                     \
	}

#define RW_SYSCALL(name, path)                                            \
	SEC("tracepoint/syscalls/sys_enter_" #name)                       \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)           \
	{                                                                 \
		begin_rw(path, ctx->args[0], ctx->args[1], ctx->args[2]); \
		return 0;                                                 \
	}                                                                 \
	SYSCALL_EXIT(name)

/* readv/writev: the memory side is the first iovec (args[1] points at the array). */
#define VEC_SYSCALL(name, path)                                                     \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                 \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)                     \
	{                                                                           \
		struct iovec first = {};                                            \
		bpf_probe_read_user(&first, sizeof(first), (void *)ctx->args[1]);   \
		begin_rw(path, ctx->args[0], (__u64)first.iov_base, first.iov_len); \
		return 0;                                                           \
	}                                                                           \
	SYSCALL_EXIT(name)

/* fd-to-fd syscalls: which argument is the source fd, the destination fd and the length. */
#define FD_SYSCALL(name, path, in_arg, out_arg, len_arg)                                             \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                                  \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)                                      \
	{                                                                                            \
		begin_fd_to_fd(path, ctx->args[in_arg], ctx->args[out_arg], ctx->args[len_arg]);     \
		return 0;                                                                            \
	}                                                                                            \
	SYSCALL_EXIT(name)

RW_SYSCALL(read, IOPATH_READ)
RW_SYSCALL(pread64, IOPATH_READ)
RW_SYSCALL(write, IOPATH_WRITE)
RW_SYSCALL(pwrite64, IOPATH_WRITE)
VEC_SYSCALL(readv, IOPATH_READ)
VEC_SYSCALL(preadv, IOPATH_READ)
VEC_SYSCALL(writev, IOPATH_WRITE)
VEC_SYSCALL(pwritev, IOPATH_WRITE)
FD_SYSCALL(copy_file_range, IOPATH_COPY_FILE_RANGE, 0, 2, 4) /* (fd_in, off_in, fd_out, off_out, len, flags) */
FD_SYSCALL(sendfile64, IOPATH_SENDFILE, 1, 0, 3)	     /* (out_fd, in_fd, offset, count) */
FD_SYSCALL(splice, IOPATH_SPLICE, 0, 2, 4)		     /* (fd_in, off_in, fd_out, off_out, len, flags) */

/*
 * Patched kernels only (kernel/patches): dma_buf_rw_file(dmabuf, file, pos, offset, len, flags)
 * moves bytes between a file and the exporter's own pages (DMA_BUF_IOCTL_RW_FILE). It opens
 * the attribution record itself, so the copies, pins and page-cache pages inside it are its
 * own; the memory object is the dma-buf. Loaded only where the function exists.
 */
#define RW_FILE_WRITE_FLAG (1U << 1)  /* DMA_BUF_RW_FILE_WRITE: buffer -> file */
#define RW_FILE_DIRECT_FLAG (1U << 2) /* DMA_BUF_RW_FILE_DIRECT */

SEC("fentry/dma_buf_rw_file")
int BPF_PROG(rw_file_enter, struct dma_buf *dmabuf, struct file *file, loff_t pos, __u64 offset, __u64 len,
	     unsigned int flags)
{
	struct inflight *io = begin(IOPATH_RW_FILE, len);
	bool to_file = flags & RW_FILE_WRITE_FLAG;

	if (!io)
		return 0;
	identify_file(BPF_CORE_READ(dmabuf, file), &io->target);
	io->target.direct = 0;
	identify_file(file, to_file ? &io->dst : &io->src);
	if (to_file)
		io->src = io->target;
	else
		io->dst = io->target;
	io->direct = (flags & RW_FILE_DIRECT_FLAG) || (to_file ? io->dst.direct : io->src.direct);
	return 0;
}

SEC("fexit/dma_buf_rw_file")
int BPF_PROG(rw_file_exit, struct dma_buf *dmabuf, struct file *file, loff_t pos, __u64 offset, __u64 len,
	     unsigned int flags, ssize_t ret)
{
	finish(ret);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Inside the syscall: work added to the current thread's inflight record */

static __always_inline struct inflight *current_inflight(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	return bpf_map_lookup_elem(&inflight, &pid_tgid);
}

/* Work seen outside a traced syscall is still counted, under IOPATH_OTHER. */
static __always_inline struct io_counters *other_counters(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct io_task_key key = {.tgid = pid_tgid >> 32, .path = IOPATH_OTHER};

	if (!traced_tgid(pid_tgid))
		return NULL;
	return lookup_or_init(&io_by_task, &key, &zero_counters);
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
	counts = lookup_or_init(&stack_counts, &key, &zero);
	if (counts) {
		__sync_fetch_and_add(&counts->hits, 1);
		__sync_fetch_and_add(&counts->amount, amount);
	}
}

static __always_inline void count_cpu_copy(void *ctx, __s64 copied, __u16 point)
{
	struct inflight *io;
	struct io_counters *other;

	if (copied <= 0 || !traced_tgid(bpf_get_current_pid_tgid()))
		return;
	io = current_inflight();
	if (io) {
		io->cpu_copied += copied;
		count_stack(ctx, point, io->path, copied);
		return;
	}
	other = other_counters();
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

static __always_inline void count_gup(void *ctx, long pages, __u32 gup_flags)
{
	struct inflight *io;
	struct io_counters *other;
	bool pin = gup_flags & FOLL_PIN_FLAG;

	if (!traced_tgid(bpf_get_current_pid_tgid()))
		return;
	io = current_inflight();
	if (io) {
		io->gup_calls++;
		if (pages > 0) {
			if (pin)
				io->pinned_pages += pages;
			else
				io->got_pages += pages;
		}
		count_stack(ctx, IOSTACK_GUP, io->path, pages > 0 ? pages : 0);
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
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 one = 1;

	bpf_map_update_elem(&gup_nesting, &pid_tgid, &one, BPF_ANY);
	return 0;
}

SEC("fexit/gup_fast_fallback")
int BPF_PROG(gup_fast_exit, unsigned long start, unsigned long nr_pages, unsigned int gup_flags,
	     struct page **pages, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&gup_nesting, &pid_tgid);
	count_gup(ctx, (int)ret, gup_flags); /* int or long by kernel version: the low 32 bits are the count */
	return 0;
}

SEC("fexit/__get_user_pages")
int BPF_PROG(gup_slow_exit, struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
	     unsigned int gup_flags, struct page **pages, int *locked, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (bpf_map_lookup_elem(&gup_nesting, &pid_tgid))
		return 0;
	count_gup(ctx, ret, gup_flags);
	return 0;
}

/* Page cache: tracepoints, so this works without fentry (the host). */
static __always_inline void count_pagecache(struct trace_event_raw_mm_filemap_op_page_cache *ctx, bool added)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pagecache_key key = {};
	struct pagecache_counts zero = {};
	struct pagecache_counts *counts;
	struct inflight *io;
	struct io_counters *other;
	__u64 pages = 1;

	if (!traced_tgid(pid_tgid))
		return;
	if (bpf_core_field_exists(ctx->order))
		pages = 1ULL << (BPF_CORE_READ(ctx, order) & 31);
	key.inode = BPF_CORE_READ(ctx, i_ino);
	key.dev = BPF_CORE_READ(ctx, s_dev);
	counts = lookup_or_init(&pagecache_by_file, &key, &zero);
	if (counts)
		__sync_fetch_and_add(added ? &counts->added : &counts->removed, pages);

	io = bpf_map_lookup_elem(&inflight, &pid_tgid);
	if (io) {
		if (added)
			io->pc_added += pages;
		else
			io->pc_removed += pages;
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
	__u32 child = BPF_CORE_READ(ctx, child_pid);
	__u8 one = 1;

	if (!follow_children || !target_tgid || !traced_tgid(bpf_get_current_pid_tgid()))
		return 0;
	bpf_map_update_elem(&traced_tgids, &child, &one, BPF_ANY);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* dma-buf lifecycle */

/* The dma_buf:* events (7.0+) share this layout up to ino; fd follows for dma_buf_fd/get. */
struct dma_buf_tp {
	__u64 common;
	__u32 loc0; /* __data_loc of exp_name, or of dev_name for attach/detach */
	__u32 loc1;
	__u64 size;
	__u64 ino;
	__s32 fd;
};

static __always_inline void lifecycle(__u32 event, __u64 inode, __u64 size, __s32 fd)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct lifecycle_key key = {.inode = inode, .event = event};
	struct lifecycle_counts zero = {};
	struct lifecycle_counts *counts;
	struct lifecycle_record *rec;

	if (!traced_tgid(pid_tgid))
		return;
	counts = lookup_or_init(&lifecycle_counts, &key, &zero);
	if (counts) {
		__sync_fetch_and_add(&counts->count, 1);
		counts->size = size;
	}
	if (!record_events)
		return;
	rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		count_dropped();
		return;
	}
	rec->type = IORECORD_LIFECYCLE;
	rec->tgid = pid_tgid >> 32;
	rec->event = event;
	rec->fd = fd;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->inode = inode;
	rec->size = size;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	bpf_ringbuf_submit(rec, 0);
}

#define LIFECYCLE_TP(name, event, has_fd)                                         \
	SEC("tracepoint/dma_buf/" #name)                                          \
	int lifecycle_##name(struct dma_buf_tp *ctx)                              \
	{                                                                         \
		lifecycle(event, ctx->ino, ctx->size, has_fd ? ctx->fd : -1);     \
		return 0;                                                         \
	}

LIFECYCLE_TP(dma_buf_export, LIFECYCLE_EXPORT, 0)
LIFECYCLE_TP(dma_buf_fd, LIFECYCLE_FD, 1)
LIFECYCLE_TP(dma_buf_get, LIFECYCLE_GET, 1)
LIFECYCLE_TP(dma_buf_put, LIFECYCLE_PUT, 0)
LIFECYCLE_TP(dma_buf_mmap, LIFECYCLE_MMAP, 0)
LIFECYCLE_TP(dma_buf_mmap_internal, LIFECYCLE_MMAP_INTERNAL, 0)
LIFECYCLE_TP(dma_buf_dynamic_attach, LIFECYCLE_ATTACH, 0)
LIFECYCLE_TP(dma_buf_detach, LIFECYCLE_DETACH, 0)

/* Kernels before 7.0: creation and final release by fentry. */
SEC("fexit/dma_buf_export")
int BPF_PROG(lifecycle_fexit_export, const struct dma_buf_export_info *exp_info, struct dma_buf *ret)
{
	if (!ret || (unsigned long)ret >= (unsigned long)-4095) /* NULL or ERR_PTR */
		return 0;
	lifecycle(LIFECYCLE_EXPORT, BPF_CORE_READ(ret, file, f_inode, i_ino), BPF_CORE_READ(ret, size), -1);
	return 0;
}

SEC("fentry/dma_buf_file_release")
int BPF_PROG(lifecycle_fentry_release, struct inode *inode, struct file *file)
{
	struct dma_buf *dmabuf = BPF_CORE_READ(file, private_data);

	lifecycle(LIFECYCLE_RELEASE, BPF_CORE_READ(inode, i_ino), dmabuf ? BPF_CORE_READ(dmabuf, size) : 0, -1);
	return 0;
}

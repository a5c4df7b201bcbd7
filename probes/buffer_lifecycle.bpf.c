// SPDX-License-Identifier: GPL-2.0
/*
 * dma-buf lifecycle: every buffer created, named, handed out, mapped, attached and released, with
 * who made it and from where. A buffer that lives 11 ms falls between two iter/dmabuf passes
 * (every 0.5 s), so what the recording knows of it comes from here.
 *
 * Hooks, best first (probes/hooks.py plans them): the dma_buf:* tracepoints (7.0+); else fexit
 * dma_buf_export for creation. A udmabuf's memfd at export: the dma_buf_export tracepoint as tp_btf
 * (its raw argument is the buffer), else fexit dma_buf_export. The last file reference going (fentry
 * dma_buf_file_release) has no tracepoint. A name set by DMA_BUF_SET_NAME has no tracepoint either and
 * its setter is static (inlined into dma_buf_ioctl on the kernels we met), so fexit dma_buf_ioctl reads
 * dmabuf->name after a successful DMA_BUF_SET_NAME; the name is also read at export (fexit) and at
 * release, so a kernel without the ioctl hook still gets the last name a buffer had.
 *
 * Cost: stacks (kernel and user, bpf_get_stackid into alloc_stacks) and the cgroup are taken at
 * export only, never per I/O. benchmarks/churn_cost.py measures the cost per buffer created.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "buffer_lifecycle.h"
#include "core_defs.h"
#include "udmabuf_backing.h"

#define MAP_FULL_SLOTS LIFECYCLE_MAP_COUNTED
#include "bpf_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Keep the record types in the object's BTF, where the Python mirrors' size test finds them. */
const struct lifecycle_record *unused_lifecycle_record __attribute__((unused));
const struct bpf_stack_build_id *unused_stack_build_id __attribute__((unused));

/* include/uapi/linux/dma-buf.h: _IOW('b', 1, u32) and _IOW('b', 1, u64), both DMA_BUF_SET_NAME */
#define DMA_BUF_SET_NAME_A 0x40046201U
#define DMA_BUF_SET_NAME_B 0x40086201U

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct lifecycle_key);
	__type(value, struct lifecycle_counts);
} lifecycle_counts SEC(".maps");

/* Allocation stacks: one kernel and one user stack per export, deduplicated by the maps. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64)); /* PERF_MAX_STACK_DEPTH */
} alloc_stacks SEC(".maps");

/*
 * User stacks as (build id, file offset) per frame: the creator may exit before user space reads its
 * /proc/PID/maps (a short command, a child that exits at once), and these still name the object and
 * the place in it. A frame whose object the kernel could not read has its raw address instead.
 */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(map_flags, BPF_F_STACK_BUILD_ID);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(struct bpf_stack_build_id));
} alloc_user_stacks SEC(".maps");

/*
 * The build-id stack costs a VMA lookup and a build-id read per frame (benchmarks/churn_cost.py: most of the
 * price of stacks). A leak is a code path run again and again, so it is paid once per distinct stack: a plain
 * user stack (a frame-pointer walk, no lookups) names the repeat, and its id leads to the build-id stack taken
 * the first time. Raw addresses are the process's own layout: the same raw stack is the same code in the same
 * objects (the process itself, or a fork sharing its layout), so the same build ids and offsets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} alloc_raw_user_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);   /* an alloc_raw_user_stacks id */
	__type(value, __s32); /* the alloc_user_stacks id taken with it */
} build_id_stack_of_raw SEC(".maps");

const volatile bool reuse_user_stacks = true; /* false: the build-id walk at every export (churn_cost's "before") */
/*
 * false on a kernel built without cgroups (CONFIG_CGROUPS=n, the patched lab kernel): the verifier refuses
 * bpf_get_current_cgroup_id in a tracing program there, and with it every program of this object that exports.
 * Set by the Tracer (kernelfs.has_cgroups); the creator's cgroup is then 0, "not read".
 */
const volatile bool read_cgroup = true;

static __always_inline void count_event(__u32 event, __u64 inode, __u64 size)
{
	struct lifecycle_key key = {.inode = inode, .event = event};
	struct lifecycle_counts zero = {};
	struct lifecycle_counts *counts = lookup_or_init(&lifecycle_counts, &key, &zero, LIFECYCLE_MAP_COUNTS);

	if (!counts)
		return;
	__sync_fetch_and_add(&counts->count, 1);
	counts->size = size;
}

/* The creating task's user stack as an alloc_user_stacks id (build id + offset frames), walked for build ids
 * only the first time its raw stack is seen (a raw stack that finds no room is walked every time). */
static __always_inline __s32 user_stack_id(void *ctx)
{
	__s32 raw = bpf_get_stackid(ctx, &alloc_raw_user_stacks, BPF_F_USER_STACK);
	__u32 key;
	__s32 *known, id;

	if (!reuse_user_stacks || raw < 0)
		return bpf_get_stackid(ctx, &alloc_user_stacks, BPF_F_USER_STACK);
	key = raw;
	known = bpf_map_lookup_elem(&build_id_stack_of_raw, &key);
	if (known)
		return *known;
	id = bpf_get_stackid(ctx, &alloc_user_stacks, BPF_F_USER_STACK);
	if (id >= 0)
		bpf_map_update_elem(&build_id_stack_of_raw, &key, &id, BPF_ANY);
	return id;
}

/*
 * One event. exporter, name: kernel strings to copy (NULL: unknown here). ctx: the program's
 * context, for the stacks; NULL leaves them out (only an export takes them).
 */
static __always_inline void lifecycle(void *ctx, __u32 event, __u64 inode, __u64 size, __s32 fd,
				      const char *exporter, const char *name)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct lifecycle_record *rec;

	if (!traced_tgid(pid_tgid))
		return;
	if (!record_events) {
		/* Per-inode counts for readers without the ring buffer. With it, every event is a record
		 * (or a counted drop) and a key per buffer and event would only fill the map under churn. */
		if (event != LIFECYCLE_NAME)
			count_event(event, inode, size);
		return;
	}
	rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		count_dropped();
		return;
	}
	rec->event = event;
	rec->tgid = pid_tgid >> 32;
	rec->tid = (__u32)pid_tgid;
	rec->fd = fd;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->inode = inode;
	rec->size = size;
	rec->kernel_stack = -1;
	rec->user_stack = -1;
	rec->cgroup_id = 0;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	rec->exporter[0] = 0;
	rec->name[0] = 0;
	rec->backing_inode = 0;
	rec->backing_dev = 0;
	if (exporter)
		bpf_probe_read_kernel_str(rec->exporter, sizeof(rec->exporter), exporter);
	if (name)
		bpf_probe_read_kernel_str(rec->name, sizeof(rec->name), name);
	if (event == LIFECYCLE_EXPORT) {
		if (read_cgroup)
			rec->cgroup_id = bpf_get_current_cgroup_id();
		if (collect_stacks && ctx) {
			rec->kernel_stack = bpf_get_stackid(ctx, &alloc_stacks, 0);
			rec->user_stack = user_stack_id(ctx);
		}
	}
	bpf_ringbuf_submit(rec, 0);
}

/* The dma_buf:* events (7.0+) share this layout up to ino; fd follows for dma_buf_fd/get. */
struct dma_buf_tp {
	__u64 common;
	__u32 loc0; /* __data_loc of exp_name, or of dev_name for attach/detach */
	__u32 loc1;
	__u64 size;
	__u64 ino;
	__s32 fd;
};

#define LIFECYCLE_TP(name, event, has_fd)                                                          \
	SEC("tracepoint/dma_buf/" #name)                                                           \
	int lifecycle_##name(struct dma_buf_tp *ctx)                                               \
	{                                                                                          \
		lifecycle(ctx, event, ctx->ino, ctx->size, has_fd ? ctx->fd : -1, NULL, NULL);     \
		return 0;                                                                          \
	}

LIFECYCLE_TP(dma_buf_fd, LIFECYCLE_FD, 1)
LIFECYCLE_TP(dma_buf_get, LIFECYCLE_GET, 1)
LIFECYCLE_TP(dma_buf_put, LIFECYCLE_PUT, 0)
LIFECYCLE_TP(dma_buf_mmap, LIFECYCLE_MMAP, 0)
LIFECYCLE_TP(dma_buf_mmap_internal, LIFECYCLE_MMAP_INTERNAL, 0)
LIFECYCLE_TP(dma_buf_dynamic_attach, LIFECYCLE_ATTACH, 0)
LIFECYCLE_TP(dma_buf_detach, LIFECYCLE_DETACH, 0)

/* The export tracepoint also gives the exporter's name (exp_name, a __data_loc string: offset in the low half). */
SEC("tracepoint/dma_buf/dma_buf_export")
int lifecycle_dma_buf_export(struct dma_buf_tp *ctx)
{
	lifecycle(ctx, LIFECYCLE_EXPORT, ctx->ino, ctx->size, -1, (const char *)ctx + (ctx->loc0 & 0xffff), NULL);
	return 0;
}

/* Kernels before 7.0: creation by fexit. */
SEC("fexit/dma_buf_export")
int BPF_PROG(lifecycle_fexit_export, const struct dma_buf_export_info *exp_info, struct dma_buf *ret)
{
	if (!ret || (unsigned long)ret >= (unsigned long)-4095) /* NULL or ERR_PTR */
		return 0;
	lifecycle(ctx, LIFECYCLE_EXPORT, BPF_CORE_READ(ret, file, f_inode, i_ino), BPF_CORE_READ(ret, size), -1,
		  BPF_CORE_READ(ret, exp_name), BPF_CORE_READ(ret, name));
	return 0;
}

/*
 * A udmabuf's I/O targets are the pages of the memfd it was made over, and only the iterator said which memfd:
 * a udmabuf made, filled and freed between two of its reads had its bytes attributed to no buffer. At export
 * its pages are already there (udmabuf_create pins them first), so the record says which memfd. Records only.
 */
static __always_inline void udmabuf_backing(struct dma_buf *dmabuf)
{
	struct lifecycle_record *rec;
	struct inode *backing;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	char exporter[8] = {};

	if (!record_events || !traced_tgid(pid_tgid))
		return;
	bpf_probe_read_kernel_str(exporter, sizeof(exporter), BPF_CORE_READ(dmabuf, exp_name));
	if (!is_udmabuf(exporter))
		return;
	backing = udmabuf_backing_file(dmabuf);
	if (!backing)
		return;
	rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		count_dropped();
		return;
	}
	__builtin_memset(rec, 0, sizeof(*rec));
	rec->event = LIFECYCLE_BACKING;
	rec->tgid = pid_tgid >> 32;
	rec->tid = (__u32)pid_tgid;
	rec->fd = -1;
	rec->kernel_stack = -1;
	rec->user_stack = -1;
	rec->timestamp_ns = bpf_ktime_get_ns();
	rec->inode = BPF_CORE_READ(dmabuf, file, f_inode, i_ino);
	rec->size = BPF_CORE_READ(dmabuf, size);
	rec->backing_inode = BPF_CORE_READ(backing, i_ino);
	rec->backing_dev = BPF_CORE_READ(backing, i_sb, s_dev);
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	bpf_ringbuf_submit(rec, 0);
}

/*
 * 7.0+: the dma_buf_export tracepoint's raw argument, the buffer (the plain tracepoint's record has no pointer to
 * it). Preferred: it needs no fentry, which the CI host refuses. It fires at the end of dma_buf_export, after
 * __dma_buf_list_add, under dmabuf->name_lock: the buffer is whole, and nothing here sleeps or takes that lock.
 */
SEC("tp_btf/dma_buf_export")
int BPF_PROG(lifecycle_udmabuf_backing_btf, struct dma_buf *dmabuf)
{
	if (dmabuf)
		udmabuf_backing(dmabuf);
	return 0;
}

/* Else (kernels before 7.0, or tp_btf refused) at dma_buf_export's return. */
SEC("fexit/dma_buf_export")
int BPF_PROG(lifecycle_udmabuf_backing, const struct dma_buf_export_info *exp_info, struct dma_buf *ret)
{
	if (ret && (unsigned long)ret < (unsigned long)-4095) /* not NULL nor ERR_PTR */
		udmabuf_backing(ret);
	return 0;
}

/*
 * Kernels before 7.0: the references a driver takes and drops (an import by PRIME: dma_buf_get, then
 * dma_buf_put) by fexit/fentry, for what `leaks` says of a buffer only the kernel holds.
 */
SEC("fexit/dma_buf_get")
int BPF_PROG(lifecycle_fexit_get, int fd, struct dma_buf *ret)
{
	if (!ret || (unsigned long)ret >= (unsigned long)-4095) /* NULL or ERR_PTR */
		return 0;
	lifecycle(NULL, LIFECYCLE_GET, BPF_CORE_READ(ret, file, f_inode, i_ino), BPF_CORE_READ(ret, size), fd, NULL,
		  NULL);
	return 0;
}

SEC("fentry/dma_buf_put")
int BPF_PROG(lifecycle_fentry_put, struct dma_buf *dmabuf)
{
	if (!dmabuf)
		return 0;
	lifecycle(NULL, LIFECYCLE_PUT, BPF_CORE_READ(dmabuf, file, f_inode, i_ino), BPF_CORE_READ(dmabuf, size), -1,
		  NULL, NULL);
	return 0;
}

SEC("fentry/dma_buf_file_release")
int BPF_PROG(lifecycle_fentry_release, struct inode *inode, struct file *file)
{
	struct dma_buf *dmabuf = BPF_CORE_READ(file, private_data);

	lifecycle(NULL, LIFECYCLE_RELEASE, BPF_CORE_READ(inode, i_ino), dmabuf ? BPF_CORE_READ(dmabuf, size) : 0, -1,
		  NULL, dmabuf ? BPF_CORE_READ(dmabuf, name) : NULL);
	return 0;
}

/* A name set: dma_buf_set_name is static and inlined, so the ioctl's exit reads what it left in dmabuf->name. */
SEC("fexit/dma_buf_ioctl")
int BPF_PROG(lifecycle_fexit_set_name, struct file *file, unsigned int cmd, unsigned long arg, long ret)
{
	struct dma_buf *dmabuf;

	if (ret != 0 || (cmd != DMA_BUF_SET_NAME_A && cmd != DMA_BUF_SET_NAME_B))
		return 0;
	dmabuf = BPF_CORE_READ(file, private_data);
	if (!dmabuf)
		return 0;
	lifecycle(NULL, LIFECYCLE_NAME, BPF_CORE_READ(file, f_inode, i_ino), BPF_CORE_READ(dmabuf, size), -1, NULL,
		  BPF_CORE_READ(dmabuf, name));
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Do-nothing programs on the hooks the I/O path tracer uses (benchmarks/overhead.py).
 *
 * Attached where the tracer's live programs are, they measure what the hooks
 * themselves cost before any program body runs: the "floor" that the tracer's
 * own overhead is read against. Each is named after the iopaths program it
 * stands in for (floor_<iopaths program>).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_syscall_enter_btf, struct pt_regs *regs, long id) { return 0; }

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_syscall_exit_btf, struct pt_regs *regs, long ret) { return 0; }

SEC("raw_tp/sys_enter")
int floor_syscall_enter_raw(void *ctx) { return 0; }

SEC("raw_tp/sys_exit")
int floor_syscall_exit_raw(void *ctx) { return 0; }

/* The AIO fallback where fentry is refused (iopaths.bpf.c's aio_submit_sys / aio_events_sys, when they are
 * programs of their own). */
SEC("tp_btf/sys_enter")
int BPF_PROG(floor_aio_submit_sys, struct pt_regs *regs, long id) { return 0; }

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_aio_events_sys, struct pt_regs *regs, long ret) { return 0; }

/* io_uring requests (they fire only for io_uring; here so that the floor is on every hook the tracer has). */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(floor_uring_submit_btf) { return 0; }

SEC("tp_btf/io_uring_complete")
int BPF_PROG(floor_uring_complete_btf) { return 0; }

SEC("tp_btf/sched_switch")
int BPF_PROG(floor_flush_on_switch) { return 0; }

SEC("fexit/filemap_read")
int BPF_PROG(floor_copy_filemap_read) { return 0; }

SEC("fexit/generic_perform_write")
int BPF_PROG(floor_copy_generic_perform_write) { return 0; }

SEC("fentry/gup_fast_fallback")
int BPF_PROG(floor_gup_fast_enter) { return 0; }

SEC("fexit/gup_fast_fallback")
int BPF_PROG(floor_gup_fast_exit) { return 0; }

SEC("fexit/__get_user_pages")
int BPF_PROG(floor_gup_slow_exit) { return 0; }

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int floor_pagecache_add(void *ctx) { return 0; }

SEC("tracepoint/filemap/mm_filemap_delete_from_page_cache")
int floor_pagecache_delete(void *ctx) { return 0; }

/* The VFS path (iopaths.bpf.c, "VFS level"): where fentry is allowed, instead of the syscall tracepoints. */
#define FLOOR_FENTRY_PAIR(prefix, function)                          \
	SEC("fentry/" #function)                                     \
	int BPF_PROG(floor_##prefix##_enter) { return 0; }           \
	SEC("fexit/" #function)                                      \
	int BPF_PROG(floor_##prefix##_exit) { return 0; }

FLOOR_FENTRY_PAIR(vfs_read, vfs_read)
FLOOR_FENTRY_PAIR(vfs_write, vfs_write)
FLOOR_FENTRY_PAIR(vfs_readv, vfs_readv)
FLOOR_FENTRY_PAIR(vfs_writev, vfs_writev)
FLOOR_FENTRY_PAIR(vfs_copy_file_range, vfs_copy_file_range)
FLOOR_FENTRY_PAIR(sendfile, do_sendfile)
FLOOR_FENTRY_PAIR(splice, do_splice)

SEC("fentry/mmap_region")
int BPF_PROG(floor_shared_memory_mmap) { return 0; }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(floor_shared_memory_fork) { return 0; }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(floor_shared_memory_exec) { return 0; }

/* What the tracer used before it moved to the raw syscall tracepoints: the perf syscall events. */
SEC("tracepoint/syscalls/sys_enter_pread64")
int classic_enter_pread64(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_pread64")
int classic_exit_pread64(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_copy_file_range")
int classic_enter_copy_file_range(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_copy_file_range")
int classic_exit_copy_file_range(void *ctx) { return 0; }

/*
 * The least a per-call tracer of pread can do on the hooks a cached 4 KiB pread fires
 * (benchmarks/hook_floor.py): at entry find the thread's record and note the time; at
 * the copy find it again and add the bytes; at exit find it, take the time and add
 * calls, bytes and latency to the thread's own record. No file or mapping identified,
 * no map keyed by buffer or process: a lower bound on what iopaths.bpf.c can cost there.
 */
struct least_call {
	__u64 start_ns;
	__u64 copied;
	__u64 calls;
	__u64 bytes;
	__u64 latency_ns;
	__u32 active;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct least_call);
} least_calls SEC(".maps");

#define LEAST_NR_PREAD64 17 /* x86-64 */

SEC("tp_btf/sys_enter")
int BPF_PROG(least_syscall_enter, struct pt_regs *regs, long id)
{
	struct least_call *call;

	if (id != LEAST_NR_PREAD64)
		return 0;
	call = bpf_task_storage_get(&least_calls, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!call)
		return 0;
	call->start_ns = bpf_ktime_get_ns();
	call->active = 1;
	return 0;
}

SEC("fexit/filemap_read")
int BPF_PROG(least_copy_filemap_read, struct kiocb *iocb, struct iov_iter *iter, ssize_t already_read, ssize_t ret)
{
	struct least_call *call = bpf_task_storage_get(&least_calls, bpf_get_current_task_btf(), 0, 0);

	if (call && call->active)
		call->copied += ret - already_read;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(least_syscall_exit, struct pt_regs *regs, long ret)
{
	struct least_call *call;

	if (regs->orig_ax != LEAST_NR_PREAD64)
		return 0;
	call = bpf_task_storage_get(&least_calls, bpf_get_current_task_btf(), 0, 0);
	if (!call || !call->active)
		return 0;
	call->active = 0;
	call->calls++;
	call->bytes += ret;
	call->latency_ns += bpf_ktime_get_ns() - call->start_ns;
	return 0;
}

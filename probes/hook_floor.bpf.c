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
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "core_defs.h"
#include "syscall_path.h"

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

/*
 * Bounds on the CI host's hook set (benchmarks/overhead.py --exact --ci-hooks): what one design of tracer on the
 * raw sys_enter/sys_exit tracepoints must do at the least, with nothing else, so that the host target
 * ((traced - untraced) <= 1.15 x (floor - untraced)) can be read against what that design could reach. They use
 * the tracer's own syscall bitmaps (syscall_path.h). Each bounds its design only, not every conceivable one.
 */
static const __u64 bound_enter_syscalls[SYSCALL_WORDS] = SYSCALL_SET(ENTER_SYSCALLS);
static const __u64 bound_exit_syscalls[SYSCALL_WORDS] = SYSCALL_SET(EXIT_SYSCALLS);
static const __u64 bound_rw_syscalls[SYSCALL_WORDS] = SYSCALL_SET(RW_SYSCALLS);

/* One bit per tgid, as iopaths.bpf.c's shared_memory_tgids: never set here, so every call leaves at it. */
__u64 bound_tgids[TGID_BIT_WORDS];
__u64 bound_hits;

/*
 * The least check: a read or write of a process that is not of interest leaves after its number's bit and
 * its process's bit (one helper call for the tgid, one load). Any tracer that tells one process's calls from
 * another's pays at least this on every read and write of every process; its exit tests the number only.
 */
SEC("tp_btf/sys_enter")
int BPF_PROG(least_check_syscall_enter_btf, struct pt_regs *regs, long id)
{
	__u32 tgid;

	if (!syscall_in(bound_enter_syscalls, id))
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (bound_tgids[(tgid >> 6) & (TGID_BIT_WORDS - 1)] & (1ULL << (tgid & 63)))
		__sync_fetch_and_add(&bound_hits, 1);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(least_check_syscall_exit_btf, struct pt_regs *regs, long ret)
{
	if (syscall_in(bound_exit_syscalls, syscall_nr(regs)))
		__sync_fetch_and_add(&bound_hits, 1);
	return 0;
}

/*
 * The least check without a helper: a per-CPU flag saying whether the task running on this CPU is of
 * interest, which a tracer would have to keep itself (at every context switch, fork, exec and new mapping;
 * that keeping is not measured here). Tested before the syscall number, so that every syscall of a process
 * of no interest leaves after one per-CPU load; its exit tests the number only (mmap's and shmat's exits
 * would keep the flag). Kept as the tracer keeps its own (iopaths.bpf.c, no_interest_here): a plain array by
 * the CPU's number, a cache line each (see the least count for why not a per-CPU map).
 */
#define BOUND_CPUS 512
struct bound_cpu_word {
	__u64 value;
	__u64 own_cache_line[7];
};
struct bound_cpu_word bound_cpu_flags[BOUND_CPUS];

SEC("tp_btf/sys_enter")
int BPF_PROG(least_cpu_check_syscall_enter_btf, struct pt_regs *regs, long id)
{
	__u32 cpu = bpf_get_smp_processor_id();

	if (cpu >= BOUND_CPUS || !bound_cpu_flags[cpu & (BOUND_CPUS - 1)].value)
		return 0;
	if (syscall_in(bound_enter_syscalls, id))
		__sync_fetch_and_add(&bound_hits, 1);
	return 0;
}

/*
 * The least attribution: which file a read or write moved its bytes to or from, and nothing else (no
 * process check, no latency, no user buffer, no map keyed by file): at exit, the current task's file at the
 * call's fd, its inode number, and a per-CPU sum. Any tracer that says per call which file it was pays at
 * least this on each such call (its entry does nothing: floor_syscall_enter_btf).
 */
struct bound_sum {
	__u64 bytes;
	__u64 inode;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bound_sum);
} bound_sums SEC(".maps");

SEC("tp_btf/sys_exit")
int BPF_PROG(least_attribution_syscall_exit_btf, struct pt_regs *regs, long ret)
{
	struct bound_sum *sum;
	struct file *file;
	__u32 zero = 0;

	if (!syscall_in(bound_rw_syscalls, syscall_nr(regs)) || ret <= 0)
		return 0;
	file = file_of_fd(bpf_get_current_task_btf(), syscall_arg(regs, 0));
	if (!file)
		return 0;
	sum = bpf_map_lookup_elem(&bound_sums, &zero);
	if (!sum)
		return 0;
	sum->bytes += ret;
	sum->inode = file->f_inode->i_ino;
	return 0;
}

/*
 * The least count: the bytes of each read or write, and nothing else (no process check, no file, no buffer, no
 * latency): at exit, the number's bit, the return, and a sum. On these hooks sys_exit is the only one that sees
 * what a cached read moved (filemap_read has no fentry here), so any tracer that counts a call's bytes pays at
 * least this on every such call, of interest or not (its entry does nothing: floor_syscall_enter_btf). The sum is
 * the cheapest kept here: a plain array indexed by the CPU's number (bpf_get_smp_processor_id, inlined on x86-64
 * since 6.10), a cache line each. A BPF_MAP_TYPE_PERCPU_ARRAY's inlined lookup cost ~10 instructions more
 * (2026-12-05, lab 7.2 under --icount: 1.139x against 1.106x the floor's added cost on a 4 KiB pread).
 */
struct bound_cpu_word bound_cpu_sums[BOUND_CPUS];

SEC("tp_btf/sys_exit")
int BPF_PROG(least_count_syscall_exit_btf, struct pt_regs *regs, long ret)
{
	__u32 cpu;

	if (!syscall_in(bound_rw_syscalls, syscall_nr(regs)) || ret <= 0)
		return 0;
	cpu = bpf_get_smp_processor_id();
	if (cpu < BOUND_CPUS)
		bound_cpu_sums[cpu & (BOUND_CPUS - 1)].value += ret;
	return 0;
}

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

/* What the tracer used before it moved to the raw syscall tracepoints: the perf syscall events. */
SEC("tracepoint/syscalls/sys_enter_pread64")
int classic_enter_pread64(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_pread64")
int classic_exit_pread64(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_copy_file_range")
int classic_enter_copy_file_range(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_copy_file_range")
int classic_exit_copy_file_range(void *ctx) { return 0; }

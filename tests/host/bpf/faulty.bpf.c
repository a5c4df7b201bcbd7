// SPDX-License-Identifier: GPL-2.0
/* Test-only programs that fail on purpose, to prove the binding's error paths. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Dereferences a hash lookup without the NULL check: the verifier must reject it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cells SEC(".maps");

SEC("?tracepoint/syscalls/sys_enter_getppid")
int unchecked_lookup(void *ctx)
{
	__u32 key = 0;
	__u64 *cell = bpf_map_lookup_elem(&cells, &key);

	return *cell;
}

/* Two attachable programs: the first attaches, the second names a tracepoint that does not exist. */
SEC("?tracepoint/syscalls/sys_enter_getppid")
int attaches_fine(void *ctx) { return 0; }

SEC("?tracepoint/no_such_category/no_such_event")
int attaches_nowhere(void *ctx) { return 0; }

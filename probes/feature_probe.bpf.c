// SPDX-License-Identifier: GPL-2.0
/*
 * Do-nothing programs, one per attach type, for feature detection by trial.
 *
 * A kernel can advertise an attach type in its BTF and still refuse it (the
 * CI host refuses every fentry program with EPERM), so `doctor` loads and
 * attaches these instead of reading config files. The fentry/fexit slots are
 * retargeted with bpf_program__set_attach_target() before load, so that one
 * object load (one parse of the kernel BTF) tries many kernel functions.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} trial_ringbuf SEC(".maps");

SEC("tracepoint")
int trial_tracepoint(void *ctx) { return 0; }

/*
 * A real round trip for the binding and for `doctor`: a read-only global set
 * before load filters by process, a hash map counts, a ring buffer carries one
 * record per call. Attached to syscalls:sys_enter_getppid, which nothing else
 * here uses.
 */
const volatile __u32 trial_target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} trial_counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int trial_round_trip(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *count;
	__u32 *record;

	if (trial_target_tgid && tgid != trial_target_tgid)
		return 0;
	count = bpf_map_lookup_elem(&trial_counts, &tgid);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&trial_counts, &tgid, &one, BPF_NOEXIST);
	record = bpf_ringbuf_reserve(&trial_ringbuf, sizeof(*record), 0);
	if (record) {
		*record = tgid;
		bpf_ringbuf_submit(record, 0);
	}
	return 0;
}

SEC("raw_tp")
int trial_raw_tracepoint(void *ctx) { return 0; }

SEC("tp_btf")
int trial_tp_btf(void *ctx) { return 0; }

SEC("kprobe")
int trial_kprobe(void *ctx) { return 0; }

SEC("kretprobe")
int trial_kretprobe(void *ctx) { return 0; }

SEC("iter/dmabuf")
int trial_iter_dmabuf(void *ctx) { return 0; }

SEC("iter/task_file")
int trial_iter_task_file(void *ctx) { return 0; }

SEC("iter/task_vma")
int trial_iter_task_vma(void *ctx) { return 0; }

SEC("fexit")
int trial_fexit(void *ctx) { return 0; }

#define FENTRY_SLOT(n) \
	SEC("fentry") int trial_fentry_##n(void *ctx) { return 0; }

/* FENTRY_SLOTS in feature_probe.py must equal the number of slots here. */
FENTRY_SLOT(0) FENTRY_SLOT(1) FENTRY_SLOT(2) FENTRY_SLOT(3)
FENTRY_SLOT(4) FENTRY_SLOT(5) FENTRY_SLOT(6) FENTRY_SLOT(7)
FENTRY_SLOT(8) FENTRY_SLOT(9) FENTRY_SLOT(10) FENTRY_SLOT(11)
FENTRY_SLOT(12) FENTRY_SLOT(13) FENTRY_SLOT(14) FENTRY_SLOT(15)
FENTRY_SLOT(16) FENTRY_SLOT(17) FENTRY_SLOT(18) FENTRY_SLOT(19)
FENTRY_SLOT(20) FENTRY_SLOT(21) FENTRY_SLOT(22) FENTRY_SLOT(23)
FENTRY_SLOT(24) FENTRY_SLOT(25) FENTRY_SLOT(26) FENTRY_SLOT(27)
FENTRY_SLOT(28) FENTRY_SLOT(29) FENTRY_SLOT(30) FENTRY_SLOT(31)

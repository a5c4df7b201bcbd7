/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the Tracer's two objects (iopaths.bpf.c, buffer_lifecycle.bpf.c) share: the filters the Tracer sets
 * before load, the maps both have under the same names (probes/tracer.py reads them by name:
 * traced_tgids, records, dropped, map_full), and the helpers around them.
 *
 * Include after vmlinux.h and bpf_helpers.h, with MAP_FULL_SLOTS defined first: the object's number of
 * maps whose full state is counted (its enum ..._counted's last value).
 */
#ifndef DMABUF_TOP_BPF_MAPS_H
#define DMABUF_TOP_BPF_MAPS_H

#ifndef MAP_FULL_SLOTS
#error "define MAP_FULL_SLOTS before including bpf_maps.h"
#endif

const volatile __u32 target_tgid = 0; /* 0: every process */
const volatile __u32 ignore_tgid = 0; /* the tracer itself */
const volatile bool record_events = false;
const volatile bool collect_stacks = true;
const volatile bool follow_children = false; /* with target_tgid: also what it forks (traced_tgids) */

/*
 * With follow_children: the tgids forked (transitively) by target_tgid. The Tracer loads
 * buffer_lifecycle's and hands it to iopaths (bpf_map__reuse_fd), whose sched_process_fork program
 * fills it. A thread's clone adds its tid too: harmless (a tid is not a tgid while it lives) and
 * simpler than telling threads from processes there.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} traced_tgids SEC(".maps");

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
	__uint(max_entries, MAP_FULL_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} map_full SEC(".maps"); /* per counted map: new keys it refused when full, so what they carried is lost */

static __always_inline bool traced_tgid(__u64 pid_tgid)
{
	__u32 tgid = pid_tgid >> 32;

	if (ignore_tgid && tgid == ignore_tgid)
		return false;
	if (!target_tgid || tgid == target_tgid)
		return true;
	return follow_children && bpf_map_lookup_elem(&traced_tgids, &tgid);
}

/* One per-CPU counter slot up by one (a per-CPU array: no atomics needed). */
static __always_inline void count_slot(void *map, __u32 which)
{
	__u64 *count = bpf_map_lookup_elem(map, &which);

	if (count)
		(*count)++;
}

static __always_inline void count_map_full(__u32 which)
{
	count_slot(&map_full, which);
}

static __always_inline void count_dropped(void)
{
	count_slot(&dropped, 0);
}

/* A hash map's value for key, made from zero when absent; which: the map's map_full slot, counted when full. */
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

#endif

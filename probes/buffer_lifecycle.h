/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dma-buf lifecycle: the records and counts shared by buffer_lifecycle.bpf.c and the ctypes
 * mirrors in buffer_lifecycle.py (whose test asserts the sizes match). Plain fixed-width types.
 */
#ifndef DMABUF_TOP_BUFFER_LIFECYCLE_H
#define DMABUF_TOP_BUFFER_LIFECYCLE_H

/* dma_buf:* tracepoints (7.0+), or the fentry fallbacks on older kernels; the numbers are the session's. */
enum lifecycle_event {
	LIFECYCLE_EXPORT = 1,
	LIFECYCLE_FD = 2,
	LIFECYCLE_GET = 3,
	LIFECYCLE_PUT = 4,
	LIFECYCLE_MMAP = 5,
	LIFECYCLE_MMAP_INTERNAL = 6,
	LIFECYCLE_ATTACH = 7,
	LIFECYCLE_DETACH = 8,
	LIFECYCLE_RELEASE = 9, /* fentry dma_buf_file_release: the last file reference went */
	LIFECYCLE_NAME = 10,   /* DMA_BUF_SET_NAME succeeded (fexit dma_buf_ioctl), or a name seen on a tp_btf event */
	LIFECYCLE_BACKING = 11, /* a udmabuf exported: the memfd behind it (backing_inode, backing_dev); records only */
	LIFECYCLE_COUNT = 12,
};

/* The maps whose counts are lost when they are full: map_full[which] counts the updates that found no room. */
enum lifecycle_map_counted {
	LIFECYCLE_MAP_COUNTS = 0,
	LIFECYCLE_MAP_COUNTED = 1,
};

#define LIFECYCLE_COMM_LEN 16
#define LIFECYCLE_EXPORTER_LEN 32
#define LIFECYCLE_NAME_LEN 32 /* DMA_BUF_NAME_LEN */

struct lifecycle_key { /* key of lifecycle_counts */
	__u64 inode;
	__u32 event; /* enum lifecycle_event */
	__u32 reserved;
};

struct lifecycle_counts { /* value of lifecycle_counts */
	__u64 count;
	__u64 size; /* the buffer's size at the last event */
};

/*
 * One ring buffer record per event (only when recording). Stacks and the cgroup are taken
 * at export only: a record of another event has kernel_stack = user_stack = -1, cgroup_id 0.
 */
struct lifecycle_record {
	__u32 event; /* enum lifecycle_event */
	__u32 tgid;
	__u32 tid;
	__s32 fd;	    /* dma_buf_fd/dma_buf_get; -1 otherwise */
	__s32 kernel_stack; /* into alloc_stacks; negative: none taken (or -errno of bpf_get_stackid) */
	__s32 user_stack;   /* into alloc_user_stacks (build id + offset frames); negative likewise */
	__u64 timestamp_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 inode;
	__u64 size;
	__u64 cgroup_id; /* bpf_get_current_cgroup_id of the exporting task (cgroup v2) */
	char comm[LIFECYCLE_COMM_LEN];
	char exporter[LIFECYCLE_EXPORTER_LEN]; /* dmabuf->exp_name, when the hook can read it */
	char name[LIFECYCLE_NAME_LEN];	       /* dmabuf->name at this event; empty: none (or not readable here) */
	__u64 backing_inode; /* LIFECYCLE_BACKING: the memfd's inode; 0 otherwise */
	__u64 backing_dev;   /* LIFECYCLE_BACKING: its superblock's s_dev (kernel encoding) */
};

#endif

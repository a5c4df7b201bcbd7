/* SPDX-License-Identifier: GPL-2.0 */
/*
 * I/O path tracing: the keys and values shared by iopaths.bpf.c and the ctypes
 * mirrors in iopaths.py (whose test asserts the sizes match). Plain
 * fixed-width types only. Map keys say "key", map values say "value".
 */
#ifndef DMABUF_TOP_IOPATHS_H
#define DMABUF_TOP_IOPATHS_H

/* The syscall (or kernel path) in progress that bytes, copies and pins are attributed to. */
enum iopath {
	IOPATH_OTHER = 0,	   /* work seen outside any traced syscall (kernel threads, faults, other syscalls) */
	IOPATH_READ = 1,	   /* read, pread64, readv, preadv */
	IOPATH_WRITE = 2,	   /* write, pwrite64, writev, pwritev */
	IOPATH_COPY_FILE_RANGE = 3,
	IOPATH_SENDFILE = 4,
	IOPATH_SPLICE = 5,
	IOPATH_RW_FILE = 6,	   /* patched kernels: dma_buf_rw_file (DMA_BUF_IOCTL_RW_FILE, kernel/series/rw-file) */
	IOPATH_IO_URING = 7,	   /* io_uring READ/READV/READ_FIXED/READV_FIXED and their WRITE twins, per request */
	IOPATH_AIO = 8,		   /* AIO IOCB_CMD_PREAD/PWRITE/PREADV/PWRITEV, per request */
	IOPATH_COUNT = 9,
};

/* What a file (or the file mapped at a user address) is. */
enum iofile_kind {
	IOFILE_NONE = 0,    /* no file: anonymous memory, or an address not mapped */
	IOFILE_DMABUF = 1,  /* a dma-buf (superblock magic DMA_BUF_MAGIC) */
	IOFILE_SHMEM = 2,   /* tmpfs/shmem: memfds, and so the memory behind a udmabuf */
	IOFILE_REGULAR = 3, /* any other file on a filesystem (magic says which) */
	IOFILE_PIPE = 4,
	IOFILE_SOCKET = 5,
	IOFILE_OTHER = 6,   /* a device node or anything else */
};

/* Where a kernel stack was taken. */
enum iostack_point {
	IOSTACK_COPY_READ = 1,	/* filemap_read: page cache -> user memory, CPU copy */
	IOSTACK_COPY_WRITE = 2, /* generic_perform_write: user memory -> page cache, CPU copy */
	IOSTACK_GUP = 3,	/* pages pinned or got for I/O */
};

enum iorecord_type {
	IORECORD_IO = 1,
	/* 2 was IORECORD_LIFECYCLE: lifecycle records come from buffer_lifecycle.bpf.c's own ring */
};

/* The maps whose counts are lost when they are full: map_full[which] counts the updates that found no room. */
enum iomap_counted {
	IOMAP_IO_BY_TARGET = 0,
	IOMAP_IO_BY_TASK = 1,
	IOMAP_PAGECACHE = 2,
	IOMAP_STACK_COUNTS = 3,
	IOMAP_TRACED_TGIDS = 4,
	IOMAP_COUNTED = 5,
};

#define IOPATHS_HIST_SLOTS 32 /* log2 buckets of microseconds: slot n holds [2^n, 2^(n+1)) us, slot 0 also < 1 us */
#define IOPATHS_COMM_LEN 16

/* The memory object bytes went into or out of, and the path that moved them. */
struct io_target_key { /* key of io_by_target */
	__u64 inode;	   /* dma-buf inode, memfd inode, file inode; 0 for anonymous memory */
	__u32 dev;	   /* the superblock's s_dev (kernel encoding, major << 20 | minor) */
	__u16 path;	   /* enum iopath */
	__u8 kind;	   /* enum iofile_kind */
	__u8 direct;	   /* 1: the file side was opened O_DIRECT */
};

/*
 * A process's calls by path and by outcome: the kinds of both ends, their
 * filesystems and the error (copy_file_range's -EXDEV lives here). Per-process
 * totals and the outcomes across processes are both sums over these keys, so the
 * exit of a traced call updates two maps, not three (a separate outcome map cost
 * a 4 KiB pread 3-5% more in the emulated guest).
 */
struct io_task_key { /* key of io_by_task */
	__u32 tgid;
	__u16 path;	 /* enum iopath */
	__u8 src_kind;	 /* enum iofile_kind of the source end (0 for IOPATH_OTHER) */
	__u8 dst_kind;	 /* ... and of the destination end */
	__s32 error;	 /* 0, or the negative errno returned */
	__u32 src_magic; /* superblock magic of each end (0 when none) */
	__u32 dst_magic;
};

struct io_counters { /* value of io_by_target and io_by_task */
	__u64 calls;
	__u64 errors;	    /* calls that returned < 0 */
	__u64 bytes;	    /* sum of positive return values */
	__u64 requested;    /* sum of the byte counts asked for */
	__u64 cpu_copied;   /* bytes the CPU copied between page cache and user memory inside these calls */
	__u64 pinned_pages; /* pages pinned (FOLL_PIN) by GUP inside these calls */
	__u64 got_pages;    /* pages got (FOLL_GET) by GUP inside these calls */
	__u64 gup_calls;
	__u64 pc_added;	    /* pages added to the page cache inside these calls */
	__u64 pc_removed;   /* pages removed from the page cache inside these calls */
	__u64 latency_ns;   /* total time from syscall entry to exit */
	__u64 latency_hist[IOPATHS_HIST_SLOTS];
};

struct pagecache_key { /* key of pagecache_by_file */
	__u64 inode;
	__u32 dev; /* kernel encoding */
	__u32 reserved;
};

struct pagecache_counts { /* value of pagecache_by_file */
	__u64 added;   /* pages (a folio of order n counts 2^n) */
	__u64 removed;
};

struct stack_key { /* key of stack_counts */
	__s32 stack_id; /* into stack_traces; negative: bpf_get_stackid failed (-EFAULT, -EEXIST...) */
	__u16 point;	/* enum iostack_point */
	__u16 path;	/* enum iopath in progress */
};

struct stack_counts { /* value of stack_counts */
	__u64 hits;
	__u64 amount; /* bytes copied, or pages pinned/got */
};

/* Ring buffer records (only when recording): each starts with its type. */
struct io_record {
	__u32 type; /* IORECORD_IO */
	__u32 tgid;
	__u32 tid;
	__u16 path;
	__u8 kind;
	__u8 direct;
	__u64 timestamp_ns; /* bpf_ktime_get_ns at exit (CLOCK_MONOTONIC) */
	__u64 latency_ns;
	__s64 ret;
	__u64 requested;
	__u64 inode;
	__u32 dev;
	__u32 reserved;
	__u64 cpu_copied;
	__u64 pinned_pages;
	__u64 pc_added;
	char comm[IOPATHS_COMM_LEN];
};

#endif

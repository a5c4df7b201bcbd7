/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Positive DMA evidence: where the storage device wrote, page frame by page frame.
 *
 * Shared by dma_evidence.bpf.c and the ctypes mirrors in dma_evidence.py (a test asserts the sizes match).
 * Maps:
 *   device_writes   key: __u64 page frame number      value: __u64 bytes the device wrote into it (reads), for
 *                   pages that belong to no file (or whose place this kernel cannot name)
 *   file_writes     key: struct dma_evidence_file_page value: struct dma_evidence_file_write: the same for pages
 *                   of a file (a memfd's, a file's page cache), by place; a page is in one of the two
 *   written_files   key: struct dma_evidence_file      value: __u64 pages that left the file after the device
 *                   wrote into it (their places forgotten), | DMA_EVIDENCE_PLACES_UNKNOWN
 *   tgid_writes     key: __u32 tgid (0: not known)     value: struct dma_evidence_tgid
 *   stats           key: __u32 0 (per-CPU array)       value: struct dma_evidence_stats
 *   traced_tgids    key: __u32 tgid                    value: __u8 (present = traced)
 *   bio_owner       key: __u64 struct bio address      value: __u32 tgid of the task that queued it
 */
#ifndef DMABUF_TOP_DMA_EVIDENCE_H
#define DMABUF_TOP_DMA_EVIDENCE_H

/* Page size the walk splits bio_vecs by: x86_64 (the only architecture the pfn arithmetic is written for). */
#define DMA_EVIDENCE_PAGE_SHIFT 12
#define DMA_EVIDENCE_PAGE_SIZE (1u << DMA_EVIDENCE_PAGE_SHIFT)

/*
 * Steps of one request's walk (one step per page touched, plus one per bio): 16 MiB of 4 KiB pages
 * and their bios. Bytes past the bound are counted in loop_bound_bytes, never lost silently.
 */
#define DMA_EVIDENCE_MAX_STEPS 8192

/* vmemmap's start with 4-level paging and no CONFIG_RANDOMIZE_MEMORY (Documentation/arch/x86/x86_64/mm.rst). */
#define DMA_EVIDENCE_VMEMMAP_L4 0xffffea0000000000ULL

/* value of tgid_writes */
struct dma_evidence_tgid {
	__u64 bytes;	/* bytes the device wrote for bios this process queued */
	__u64 bios;	/* bios (or bio splits) of this process that completed */
};

/*
 * A page by its place in a file (key of file_writes). A page frame names a page only while the page stays
 * where it is: compaction, THP collapse and swap move a memfd's pages to other frames, contents and all, at
 * any time. Its place (the file and the page's offset in it) is what stays the buffer's.
 */
struct dma_evidence_file_page {
	__u64 ino;	/* the file's inode number */
	__u64 index;	/* the page's offset in the file, in pages */
	__u32 dev;	/* its super_block's s_dev, as the kernel encodes dev_t (major << 20 | minor) */
	__u32 pad;
};

/* value of file_writes */
struct dma_evidence_file_write {
	__u64 bytes;	/* bytes the device wrote into the page at that place */
	__u64 pfn;	/* the frame it wrote them into (the last one, if it wrote there twice) */
};

/* Set in a written_files value when a folio of unknown size left the file: which places left is not known. */
#define DMA_EVIDENCE_PLACES_UNKNOWN (1ULL << 63)

/* The largest folio whose places the removal hook forgets one by one (a PMD's: 2 MiB of 4 KiB pages). */
#define DMA_EVIDENCE_MAX_FOLIO_PAGES 512

/* key of written_files: a file the device wrote pages of */
struct dma_evidence_file {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

/* value of stats, one per CPU; user space sums them */
struct dma_evidence_stats {
	__u64 read_requests;	  /* completions of REQ_OP_READ requests seen */
	__u64 read_bytes;	  /* bytes those completions reported (nr_bytes), traced or not */
	__u64 recorded_bytes;	  /* bytes added to device_writes */
	__u64 untraced_bytes;	  /* bytes of bios queued by tasks not traced (or queued before attach) */
	__u64 error_bytes;	  /* bytes of read completions with an error status: not counted as written */
	__u64 map_full_bytes;	  /* bytes not recorded: device_writes (or, for a file's page, file_writes) was full */
	__u64 tgid_map_full;	  /* bios whose tgid_writes entry could not be made */
	__u64 loop_bound_bytes;	  /* bytes past DMA_EVIDENCE_MAX_STEPS, not walked */
	__u64 unplaced_bytes;	  /* bytes a read completion reported that no bio vector places */
	__u64 bios_tagged;	  /* bios (and splits) tagged with their submitter at queue time */
	__u64 vmemmap_base;	  /* the vmemmap start used for struct page -> pfn (the last seen) */
	__u64 page_struct_size;	  /* sizeof(struct page) on the running kernel (CO-RE) */
	__u64 file_places;	  /* 1: the walk names a file's pages by their place (file_writes); 0: it cannot here */
	__u64 headless_bytes;	  /* bytes in pages whose folio was not found: a memfd's among them would lack a place */
	__u64 left_bytes;	  /* bytes in places whose page left its file (forgotten): device writes in no ledger */
	__u64 unfollowed_removals; /* truncate(2), madvise(MADV_REMOVE), io_uring fallocate/ftruncate: pages may
				      have left some file unseen */
};

/*
 * Written by the iter/dmabuf program dump_buffer_frames into the array map frame_runs (index 0, 1, ...),
 * one per run of consecutive page frames (and, for pages of a file, consecutive places) of the buffer whose inode
 * is frames_of_inode, in buffer order: the buffer's own pages, from the exporter. A map, not the iterator's
 * seq_file: one object's output is capped at 8 pages there (bpf_iter.c), 2048 runs, and a udmabuf's memfd pages
 * rarely touch.
 */
struct dma_evidence_frames {
	__u64 pfn;	/* first frame of the run */
	__u64 pages;	/* frames in the run */
	__u64 ino;	/* DMA_EVIDENCE_BY_PLACE: the run's file (its inode number), */
	__u64 index;	/* the first page's offset in it, in pages (the next pages follow) */
	__u32 dev;	/* and its super_block's s_dev */
	__u32 named_by;	/* the ledger a device write into these pages goes to: DMA_EVIDENCE_BY_* */
};

/*
 * How the completion walk names a page the device writes into, so the exporter walk names a buffer's page the same
 * way: by its frame (device_writes: a page of no file), by its place (file_writes), or neither (its folio's head
 * not found: the completion walk counts such bytes in headless_bytes).
 */
#define DMA_EVIDENCE_BY_FRAME 0
#define DMA_EVIDENCE_BY_PLACE 1
#define DMA_EVIDENCE_UNNAMED 2

/* value of frame_count[0] */
struct dma_evidence_frame_count {
	__u64 runs;	/* runs written to frame_runs */
	__u64 cut_pages; /* pages past frame_runs' size, not written */
	__u64 found;	/* 1 when the buffer was found and its exporter known */
};

/* Steps of the exporter walk (bpf_loop allows at most 1 << 23): 16 GiB of 4 KiB pages. */
#define DMA_EVIDENCE_MAX_FRAME_STEPS (1u << 22)

#endif

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records written by the iter/dmabuf program, one per dma-buf, with
 * bpf_seq_write. Shared by dmabuf_iter.bpf.c and mirrored by the ctypes
 * Structure in dmabuf_iter.py (whose test asserts the sizes match).
 * Plain fixed-width types only; no pointers cross to user space.
 */
#ifndef DMABUF_TOP_DMABUF_ITER_H
#define DMABUF_TOP_DMABUF_ITER_H

#define DMABUF_TOP_RECORD_MAGIC 0x64627566u /* "dbuf": lets the reader detect a torn or foreign stream */
#define DMABUF_NAME_LEN 32		    /* DMA_BUF_NAME_LEN in include/uapi/linux/dma-buf.h */
#define DMABUF_EXPORTER_LEN 32		    /* exporter names are static strings in the kernel; longer ones are cut */
#define DMABUF_DEVICE_NAME_LEN 32
#define DMABUF_MAX_DEVICES 8
#define DMABUF_RECORD_NAMED 1u		    /* the buffer has a name (possibly empty): unnamed and "" differ */		    /* attached devices named per buffer; attachment_count has the true total */

struct dmabuf_record {
	__u32 magic;
	__u32 record_size;	    /* sizeof(struct dmabuf_record): guards against a reader built for another layout */
	__u64 inode;
	__u64 size;
	__u64 file_refs;	    /* references to the dma-buf's file (fds, mappings, kernel users), the iterator's own excluded */
	__u64 backing_inode;	    /* udmabuf: inode of the memfd whose pages back the buffer; 0 otherwise */
	__u64 backing_dev;	    /* ... and its superblock's s_dev (kernel dev_t encoding: major << 20 | minor) */
	__u32 attachment_count;	    /* attachments walked, up to the bound in the program */
	__u32 vmapping_counter;	    /* >0 while the buffer is vmapped into the kernel */
	__u32 name_len;		    /* bytes of name before the first NUL (0: unnamed) */
	__u32 devices_named;	    /* entries of devices[] that are filled */
	__u32 flags;		    /* DMABUF_RECORD_* bits */
	__u32 reserved;
	char exporter[DMABUF_EXPORTER_LEN];
	char name[DMABUF_NAME_LEN];
	char devices[DMABUF_MAX_DEVICES][DMABUF_DEVICE_NAME_LEN];
};

#endif

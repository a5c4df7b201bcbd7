/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records written by the iter/task_file and iter/task_vma programs of
 * task_dmabufs.bpf.c: one per dma-buf fd or dma-buf mapping of any process.
 * Mirrored by the ctypes Structure in task_dmabufs.py (a test asserts the
 * sizes match). Plain fixed-width types only.
 */
#ifndef DMABUF_TOP_TASK_DMABUFS_H
#define DMABUF_TOP_TASK_DMABUFS_H

#define TASK_DMABUF_MAGIC 0x74646266u /* "tdbf" */
#define TASK_DMABUF_FD 1u	      /* the task's fd table holds the dma-buf's file */
#define TASK_DMABUF_MAP 2u	      /* a VMA of the task maps the dma-buf's file */
#define TASK_COMM_LEN_RECORDED 16

/* The dma-buf pseudo filesystem's superblock magic (include/uapi/linux/magic.h). */
#define DMA_BUF_MAGIC 0x444d4142

struct task_dmabuf_record {
	__u32 magic;
	__u32 kind;	/* TASK_DMABUF_FD or TASK_DMABUF_MAP */
	__u32 tgid;	/* the process */
	__u32 tid;	/* the task whose fd table / mm was walked (the leader unless it has its own) */
	__u64 inode;	/* the dma-buf's inode: the key shared with every other source */
	__u64 fd;	/* FD: the descriptor number; MAP: 0 */
	__u64 start;	/* MAP: vm_start; FD: 0 */
	__u64 end;	/* MAP: vm_end; FD: 0 */
	__u64 pgoff;	/* MAP: offset into the buffer, in pages */
	char comm[TASK_COMM_LEN_RECORDED]; /* the process's (group leader's) comm */
};

#endif

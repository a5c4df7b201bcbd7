// SPDX-License-Identifier: GPL-2.0
/*
 * Who holds which dma-buf: every dma-buf fd (iter/task_file) and every
 * dma-buf mapping (iter/task_vma) of every process, in one kernel pass each.
 *
 * A file is a dma-buf when its superblock is the dma-buf pseudo filesystem's
 * (s_magic DMA_BUF_MAGIC): no kallsyms lookup of dma_buf_fops needed, and it
 * holds on every kernel since the magic was introduced (5.3).
 *
 * The iterators skip threads that share their leader's fd table, so each fd
 * table and each mm is walked once; the reader still de-duplicates.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "task_dmabufs.h"

char LICENSE[] SEC("license") = "GPL";

/* Per-CPU scratch for the record; also puts the struct into the object's BTF, where a test checks its size. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct task_dmabuf_record);
} scratch SEC(".maps");

static __always_inline struct task_dmabuf_record *blank_record(void)
{
	__u32 zero = 0;
	struct task_dmabuf_record *rec = bpf_map_lookup_elem(&scratch, &zero);

	if (rec)
		__builtin_memset(rec, 0, sizeof(*rec));
	return rec;
}

static __always_inline bool is_dmabuf_file(struct file *file)
{
	return file && BPF_CORE_READ(file, f_inode, i_sb, s_magic) == DMA_BUF_MAGIC;
}

static __always_inline void fill_task(struct task_dmabuf_record *rec, struct task_struct *task, struct file *file)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	rec->magic = TASK_DMABUF_MAGIC;
	rec->tgid = BPF_CORE_READ(task, tgid);
	rec->tid = BPF_CORE_READ(task, pid);
	rec->inode = BPF_CORE_READ(file, f_inode, i_ino);
	if (leader)
		BPF_CORE_READ_STR_INTO(&rec->comm, leader, comm);
	else
		BPF_CORE_READ_STR_INTO(&rec->comm, task, comm);
}

SEC("iter/task_file")
int dump_dmabuf_fds(struct bpf_iter__task_file *ctx)
{
	struct task_dmabuf_record *rec;
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;

	if (!task || !is_dmabuf_file(file))
		return 0;
	rec = blank_record();
	if (!rec)
		return 0;
	fill_task(rec, task, file);
	rec->kind = TASK_DMABUF_FD;
	rec->fd = ctx->fd;
	bpf_seq_write(ctx->meta->seq, rec, sizeof(*rec));
	return 0;
}

SEC("iter/task_vma")
int dump_dmabuf_maps(struct bpf_iter__task_vma *ctx)
{
	struct task_dmabuf_record *rec;
	struct vm_area_struct *vma = ctx->vma;
	struct task_struct *task = ctx->task;
	struct file *file;

	if (!task || !vma)
		return 0;
	file = BPF_CORE_READ(vma, vm_file);
	if (!is_dmabuf_file(file))
		return 0;
	rec = blank_record();
	if (!rec)
		return 0;
	fill_task(rec, task, file);
	rec->kind = TASK_DMABUF_MAP;
	rec->start = BPF_CORE_READ(vma, vm_start);
	rec->end = BPF_CORE_READ(vma, vm_end);
	rec->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	bpf_seq_write(ctx->meta->seq, rec, sizeof(*rec));
	return 0;
}

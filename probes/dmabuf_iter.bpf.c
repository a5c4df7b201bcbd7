// SPDX-License-Identifier: GPL-2.0
/*
 * Inventory of every dma-buf, from the kernel's own list (iter/dmabuf, 6.16+).
 *
 * One binary struct dmabuf_record per buffer through bpf_seq_write: names are
 * set by any process (DMA_BUF_SET_NAME), so nothing here is text to be parsed.
 * The iterator holds a reference on the buffer it shows, so its fields are
 * stable while we read them. The name is swapped under name_lock, which a BPF
 * iterator cannot take: a rename racing with the read can give a stale string,
 * and bpf_probe_read_kernel_str keeps that safe, if not exact.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "core_defs.h"
#include "udmabuf_backing.h"
#include "dmabuf_iter.h"

char LICENSE[] SEC("license") = "GPL";

/* How far the attachment list is walked: a bound for the verifier, far above what real buffers carry. */
#define MAX_ATTACHMENTS_WALKED 64

/* Per-CPU scratch: the record is larger than the 512-byte BPF stack allows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dmabuf_record);
} scratch SEC(".maps");

static __always_inline __u64 file_reference_count(struct file *file)
{
	if (bpf_core_field_exists(struct file, f_ref)) {
		/* file_ref_t stores count - 1; values at or past FILE_REF_RELEASED (top bit) mean "dying". */
		__s64 raw = BPF_CORE_READ(file, f_ref.refcnt.counter);

		return raw < 0 ? 0 : (__u64)raw + 1;
	}
	return BPF_CORE_READ((struct file___with_f_count *)file, f_count.counter);
}

static __always_inline void walk_attachments(struct dma_buf *dmabuf, struct dmabuf_record *rec)
{
	struct list_head *head = &dmabuf->attachments;
	struct list_head *pos = BPF_CORE_READ(head, next);
	__u32 i;

	for (i = 0; i < MAX_ATTACHMENTS_WALKED; i++) {
		struct dma_buf_attachment *attach;
		const char *device_name;

		if (!pos || pos == head)
			break;
		attach = container_of(pos, struct dma_buf_attachment, node);
		rec->attachment_count++;
		if (rec->devices_named < DMABUF_MAX_DEVICES) {
			__u32 slot = rec->devices_named;

			device_name = BPF_CORE_READ(attach, dev, kobj.name);
			if (device_name && slot < DMABUF_MAX_DEVICES &&
			    bpf_probe_read_kernel_str(rec->devices[slot], DMABUF_DEVICE_NAME_LEN, device_name) > 0)
				rec->devices_named++;
		}
		pos = BPF_CORE_READ(pos, next);
	}
}

SEC("iter/dmabuf")
int dump_dmabufs(struct bpf_iter__dmabuf *ctx)
{
	struct dma_buf *dmabuf = ctx->dmabuf;
	struct dmabuf_record *rec;
	const char *name, *exporter;
	__u32 zero = 0;
	long copied;

	if (!dmabuf)
		return 0;
	rec = bpf_map_lookup_elem(&scratch, &zero);
	if (!rec)
		return 0;
	__builtin_memset(rec, 0, sizeof(*rec));
	rec->magic = DMABUF_TOP_RECORD_MAGIC;
	rec->record_size = sizeof(*rec);

	rec->inode = BPF_CORE_READ(dmabuf, file, f_inode, i_ino);
	rec->size = BPF_CORE_READ(dmabuf, size);
	/* The iterator holds one reference on the buffer it shows (dma_buf_iter_begin/next): not a user's. */
	rec->file_refs = file_reference_count(BPF_CORE_READ(dmabuf, file)) - 1;
	rec->vmapping_counter = BPF_CORE_READ(dmabuf, vmapping_counter);

	exporter = BPF_CORE_READ(dmabuf, exp_name);
	if (exporter)
		bpf_probe_read_kernel_str(rec->exporter, sizeof(rec->exporter), exporter);
	if (is_udmabuf(rec->exporter)) {
		struct inode *backing = udmabuf_backing_file(dmabuf);

		if (backing) {
			rec->backing_inode = BPF_CORE_READ(backing, i_ino);
			rec->backing_dev = BPF_CORE_READ(backing, i_sb, s_dev);
		}
	}

	name = BPF_CORE_READ(dmabuf, name);
	if (name) {
		rec->flags |= DMABUF_RECORD_NAMED;
		copied = bpf_probe_read_kernel_str(rec->name, sizeof(rec->name), name);
		rec->name_len = copied > 0 ? copied - 1 : 0;
	}

	walk_attachments(dmabuf, rec);
	bpf_seq_write(ctx->meta->seq, rec, sizeof(*rec));
	return 0;
}

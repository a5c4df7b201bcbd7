/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Which memfd a udmabuf was made from (its I/O targets are that memfd's pages): read by the iterator
 * (dmabuf_iter.bpf.c) for every buffer alive, and by the lifecycle probe (buffer_lifecycle.bpf.c) at export, so
 * a udmabuf freed before the next iterator read still has its memfd known. Needs vmlinux.h, bpf_core_read.h and
 * core_defs.h first.
 */
#ifndef DMABUF_TOP_UDMABUF_BACKING_H
#define DMABUF_TOP_UDMABUF_BACKING_H

/* The inode of the memfd a udmabuf was made from: the owner of its first page. */
static __always_inline struct inode *udmabuf_backing_file(struct dma_buf *dmabuf)
{
	struct udmabuf___dmabuf_top *ubuf;
	struct address_space *mapping = NULL;

	if (!bpf_core_type_exists(struct udmabuf___dmabuf_top))
		return NULL;
	ubuf = BPF_CORE_READ(dmabuf, priv);
	if (!ubuf)
		return NULL;
	if (bpf_core_field_exists(struct udmabuf___dmabuf_top, pages)) {
		struct page **pages = BPF_CORE_READ(ubuf, pages);
		struct page *first = NULL;

		if (pages && !bpf_probe_read_kernel(&first, sizeof(first), pages) && first)
			mapping = BPF_CORE_READ(first, mapping);
	} else if (bpf_core_field_exists(struct udmabuf___dmabuf_top, folios)) {
		struct folio **folios = BPF_CORE_READ(ubuf, folios);
		struct folio *first = NULL;

		if (folios && !bpf_probe_read_kernel(&first, sizeof(first), folios) && first)
			mapping = BPF_CORE_READ(first, mapping);
	}
	/* Low bits tag anonymous and movable pages; a memfd's pages are plain page cache. */
	if (!mapping || ((unsigned long)mapping & 3))
		return NULL;
	return BPF_CORE_READ(mapping, host);
}

/* exporter: dmabuf->exp_name copied into at least 8 bytes. */
static __always_inline bool is_udmabuf(const char *exporter)
{
	return exporter[0] == 'u' && exporter[1] == 'd' && exporter[2] == 'm' &&
	       exporter[3] == 'a' && exporter[4] == 'b' && exporter[5] == 'u' &&
	       exporter[6] == 'f' && exporter[7] == '\0';
}

#endif

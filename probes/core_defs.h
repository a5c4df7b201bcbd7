/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Local CO-RE definitions for kernel types that the build host's BTF lacks.
 *
 * vmlinux.h is generated from the build machine's BTF, and that machine may
 * have no dma-buf heaps and no udmabuf (ours has neither), so driver-private
 * structs are declared here with only the fields we read. The ___dmabuf_top
 * suffix is a CO-RE "flavour": libbpf strips it and matches the fields by name
 * against the running kernel's BTF, so the layout below need not be exact.
 * Every read of these types must sit behind bpf_core_type_exists() /
 * bpf_core_field_exists(): on a kernel without the driver the relocation fails
 * and the verifier must be able to prove the access dead.
 */
#ifndef DMABUF_TOP_CORE_DEFS_H
#define DMABUF_TOP_CORE_DEFS_H

/*
 * drivers/dma-buf/udmabuf.c: the buffer's pages came from the memfd it was
 * created over. 6.12 turned `pages` into `folios`; by 7.2 it is `pages` again
 * (with `pinned_folios` beside it), so both are declared and probed.
 */
struct udmabuf___dmabuf_top {
	unsigned long pagecount;
	struct folio **folios;
	struct page **pages;
} __attribute__((preserve_access_index));

/* struct file's reference count: f_count (atomic_long_t) until 6.12, f_ref (file_ref_t) since 6.13. */
struct file___with_f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

#endif

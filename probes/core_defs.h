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

/*
 * The registers a syscall's arguments and number are read from, per target
 * architecture. vmlinux.h describes the build host's architecture, whatever
 * the object is built for, so the probes name these fields through flavours
 * that CO-RE matches against the running kernel's own struct pt_regs
 * (arch/x86/include/asm/ptrace.h, arch/arm64/include/asm/ptrace.h: there
 * `regs` sits in an anonymous union, which CO-RE looks through).
 */
struct pt_regs___dmabuf_top_x86 {
	unsigned long r10;
	unsigned long r8;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct thread_info___dmabuf_top_x86 {
	__u32 status;
} __attribute__((preserve_access_index));

struct pt_regs___dmabuf_top_arm64 {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));

#endif

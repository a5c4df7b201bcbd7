/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What a program on the raw sys_enter/sys_exit tracepoints reads of a call, by architecture: the syscall
 * numbers of the I/O calls, the arguments and the number from the saved registers, the 32-bit compat check,
 * the bitmaps that tell our calls from every other (a shift and a load, no helper), and the current task's
 * file at an fd. Shared by the tracer's syscall path (iopaths.bpf.c) and the bounds that measure it
 * (hook_floor.bpf.c), so that both test the same calls the same way. Needs vmlinux.h, bpf_core_read.h,
 * bpf_helpers.h and core_defs.h first.
 */
#ifndef DMABUF_TOP_SYSCALL_PATH_H
#define DMABUF_TOP_SYSCALL_PATH_H

/*
 * Read-only view of a kernel pointer got as a plain number (an fd table slot,
 * a raw_tp argument): its fields are then plain loads (a fault reads 0) rather
 * than one bpf_probe_read_kernel call each, which cost ~35 ns apiece here.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/*
 * Syscall numbers, arguments and the 32-bit compat check by architecture. The
 * one program sees every syscall, so it tells ours by number; compat syscalls
 * have their own numbers and are left out, as the syscalls:* events do.
 */
#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile64 40
#define NR_splice 275
#define NR_preadv 295
#define NR_pwritev 296
#define NR_copy_file_range 326
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_bpf 321
#define TS_COMPAT_ 0x0002 /* arch/x86/include/asm/thread_info.h: inside an ia32 syscall */

static __always_inline __u64 syscall_arg(struct pt_regs *ctx_regs, int n)
{
	struct pt_regs___dmabuf_top_x86 *regs = (void *)ctx_regs;

	switch (n) {
	case 0:
		return regs->di;
	case 1:
		return regs->si;
	case 2:
		return regs->dx;
	case 3:
		return regs->r10;
	default:
		return regs->r8;
	}
}

static __always_inline __s64 syscall_nr(struct pt_regs *ctx_regs)
{
	return ((struct pt_regs___dmabuf_top_x86 *)ctx_regs)->orig_ax;
}

static __always_inline bool compat_syscall(struct task_struct *task)
{
	return ((struct thread_info___dmabuf_top_x86 *)&task->thread_info)->status & TS_COMPAT_;
}
#elif defined(__TARGET_ARCH_arm64)
/* include/uapi/asm-generic/unistd.h */
#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_pread64 67
#define NR_pwrite64 68
#define NR_preadv 69
#define NR_pwritev 70
#define NR_sendfile64 71
#define NR_splice 76
#define NR_copy_file_range 285
#define NR_preadv2 286
#define NR_pwritev2 287
#define NR_bpf 280
#define TIF_32BIT_ 22

static __always_inline __u64 syscall_arg(struct pt_regs *ctx_regs, int n)
{
	struct pt_regs___dmabuf_top_arm64 *regs = (void *)ctx_regs;

	return n == 0 ? regs->orig_x0 : regs->regs[n & 7];
}

static __always_inline __s64 syscall_nr(struct pt_regs *ctx_regs)
{
	return ((struct pt_regs___dmabuf_top_arm64 *)ctx_regs)->syscallno;
}

static __always_inline bool compat_syscall(struct task_struct *task)
{
	return task->thread_info.flags & (1UL << TIF_32BIT_);
}
#else
#error "syscall_path.h: syscall numbers are defined for x86 and arm64 only"
#endif


#if defined(__TARGET_ARCH_x86)
#define NR_io_getevents 208
#define NR_io_submit 209
#define NR_io_pgetevents 333
#elif defined(__TARGET_ARCH_arm64)
#define NR_io_submit 2
#define NR_io_getevents 4
#define NR_io_pgetevents 292
#endif

#if defined(__TARGET_ARCH_x86)
#define NR_mmap 9
#define NR_shmat 30
#elif defined(__TARGET_ARCH_arm64)
#define NR_mmap 222
#define NR_shmat 196
#endif
/*
 * The calls that put a new fd in the caller's table (the ones whose file can be shared memory), and those
 * after which the caller may hold fds the tracer never saw installed one by one (see iopaths.bpf.c,
 * "fd_holder_tgids"). open and creat exist on x86-64 only (arm64 has openat alone).
 */
#if defined(__TARGET_ARCH_x86)
#define NR_open 2
#define NR_ioctl 16
#define NR_recvmsg 47
#define NR_creat 85
#define NR_openat 257
#define NR_recvmmsg 299
#define NR_fanotify_init 300
#define NR_open_by_handle_at 304
#define NR_memfd_create 319
#define NR_io_uring_setup 425
#define NR_openat2 437
#define NR_pidfd_getfd 438
#elif defined(__TARGET_ARCH_arm64)
#define NR_ioctl 29
#define NR_openat 56
#define NR_recvmsg 212
#define NR_recvmmsg 243
#define NR_fanotify_init 262
#define NR_open_by_handle_at 265
#define NR_memfd_create 279
#define NR_io_uring_setup 425
#define NR_openat2 437
#define NR_pidfd_getfd 438
#endif
#ifdef NR_open
#define OPEN_CREAT_SYSCALLS(w) (SYSCALL_BIT(w, NR_open) | SYSCALL_BIT(w, NR_creat))
#else
#define OPEN_CREAT_SYSCALLS(w) 0
#endif
/* Their exits walk the returned fd to its file. */
#define FD_OPEN_SYSCALLS(w)                                                                                   \
	(OPEN_CREAT_SYSCALLS(w) | SYSCALL_BIT(w, NR_openat) | SYSCALL_BIT(w, NR_openat2) |                      \
	 SYSCALL_BIT(w, NR_open_by_handle_at) | SYSCALL_BIT(w, NR_memfd_create) | SYSCALL_BIT(w, NR_pidfd_getfd))
/* Their exits mark the caller without a walk (fds received, or installed later by reads and requests). */
#define FD_RECEIVE_SYSCALLS(w)                                                                                \
	(SYSCALL_BIT(w, NR_recvmsg) | SYSCALL_BIT(w, NR_recvmmsg) | SYSCALL_BIT(w, NR_io_uring_setup) |         \
	 SYSCALL_BIT(w, NR_fanotify_init) | SYSCALL_BIT(w, NR_ioctl))
#define FD_INSTALL_SYSCALLS(w) (FD_OPEN_SYSCALLS(w) | FD_RECEIVE_SYSCALLS(w))

/* One bit per tgid (PID_MAX_LIMIT is 2^22 on 64-bit), in words of 64: the per-process bitmaps' size. */
#define TGID_BIT_WORDS (1U << 16)
#define SYSCALL_WORDS 8 /* syscall numbers 0..511: every one below, on x86-64 and arm64 */
#define SYSCALL_BIT(word, nr) ((nr) / 64 == (word) ? 1ULL << ((nr) % 64) : 0)
#define RW_SYSCALLS(w)                                                                                        \
	(SYSCALL_BIT(w, NR_read) | SYSCALL_BIT(w, NR_write) | SYSCALL_BIT(w, NR_pread64) |                       \
	 SYSCALL_BIT(w, NR_pwrite64) | SYSCALL_BIT(w, NR_readv) | SYSCALL_BIT(w, NR_writev) |                    \
	 SYSCALL_BIT(w, NR_preadv) | SYSCALL_BIT(w, NR_pwritev) | SYSCALL_BIT(w, NR_preadv2) |                   \
	 SYSCALL_BIT(w, NR_pwritev2) | SYSCALL_BIT(w, NR_copy_file_range) | SYSCALL_BIT(w, NR_splice) |          \
	 SYSCALL_BIT(w, NR_sendfile64))
#define ENTER_SYSCALLS(w) (RW_SYSCALLS(w) | SYSCALL_BIT(w, NR_bpf) | SYSCALL_BIT(w, NR_io_submit))
/* At exit: the calls whose exit does work of its own, opened record or not. */
#define EXIT_SYSCALLS(w)                                                                                      \
	(SYSCALL_BIT(w, NR_io_getevents) | SYSCALL_BIT(w, NR_io_pgetevents) | SYSCALL_BIT(w, NR_mmap) |         \
	 SYSCALL_BIT(w, NR_shmat) | FD_INSTALL_SYSCALLS(w))
#define EXIT_ALL_SYSCALLS(w) (RW_SYSCALLS(w) | EXIT_SYSCALLS(w))
#define SYSCALL_SET(set) {set(0), set(1), set(2), set(3), set(4), set(5), set(6), set(7)}

static __always_inline bool syscall_in(const __u64 *set, __s64 nr)
{
	__u64 n = nr;

	return n < SYSCALL_WORDS * 64 && (set[n / 64] >> (n % 64)) & 1;
}

/* The task's (the current one's) open file at fd, read through its fd table. */
static __always_inline struct file *file_of_fd(struct task_struct *task, __u64 fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	/*
	 * fdt->fd is an array of pointers, which BTF loads cannot follow. Its slot is
	 * read as the first member of a kernel struct that starts with a struct file *
	 * (kiocb.ki_filp, at offset 0 since 2.6): a plain load, ~30 ns less than a
	 * bpf_probe_read_kernel here. A kernel that moved ki_filp gets the helper.
	 */
	if (bpf_core_field_offset(struct kiocb, ki_filp) == 0)
		return ((struct kiocb *)bpf_rdonly_cast(&fdt->fd[fd], bpf_core_type_id_kernel(struct kiocb)))->ki_filp;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	if (!file)
		return NULL;
	return bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
}

#endif

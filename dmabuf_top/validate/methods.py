"""The ways of loading a file into a buffer that people compare, one small function each.

METHODS is data: a Method names its buffer kind, whether the file is opened O_DIRECT,
the function that moves the bytes, and what the kernel must offer for it to exist
(`needs`). Adding a method is one entry. Methods that only exist on patched kernels (an
exporter `rw_file` reached through copy_file_range, a DMA_BUF_IOCTL_RW_FILE ioctl) say
so in `needs` and are shown "absent on this kernel" elsewhere, never assumed.

A load function is `load(buffer, file_fd, size, chunk) -> bytes moved into the buffer`;
it raises OSError with the kernel's errno when the kernel refuses. Reads and writes go
through libc with raw addresses, so the bytes land at the mapping's own address (a
Python bytes object would add a copy of ours).
"""
import ctypes
import errno
import fcntl
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from .. import alloc
from . import aio, uring

libc = ctypes.CDLL(None, use_errno=True)
libc.read.restype = ctypes.c_ssize_t
libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.write.restype = ctypes.c_ssize_t
libc.write.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
libc.munmap.restype = ctypes.c_int
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_FAILED = ctypes.c_void_p(-1).value
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20  # the default fs.pipe-max-size: the most an unprivileged splice loop gets per call

# DMA_BUF_IOCTL_RW_FILE as our own kernel patch defines it (kernel/series/rw-file/README), after the v1/v2
# proposal (May 2025, not merged): struct dma_buf_rw_file { __s32 fd; __u32 flags; __u64 file_offset;
# __u64 buf_offset; __u64 len; } on the dma-buf fd. No released uAPI header has it; a kernel that
# answers ENOTTY to this number lacks it.
RW_FILE_STRUCT = struct.Struct("=iIQQQ")
DMA_BUF_IOCTL_RW_FILE = alloc._IOW("b", 4, RW_FILE_STRUCT.size)
RW_FILE_READ = 1 << 0
RW_FILE_WRITE = 1 << 1
RW_FILE_DIRECT = 1 << 2


def _oserror(number, what):
    return OSError(number, f"{what}: {os.strerror(number)}")


def map_shared(fd, size):
    """A MAP_SHARED read-write mapping of fd through libc (Python's mmap would dup the fd)."""
    address = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if address in (None, MAP_FAILED):
        raise _oserror(ctypes.get_errno(), "mmap")
    return address


def map_anonymous(size):
    address = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if address in (None, MAP_FAILED):
        raise _oserror(ctypes.get_errno(), "mmap")
    return address


# ---------------------------------------------------------------------------------------------
# Buffers: what a method loads into


class Buffer:
    """The destination: `fd` is what fd-to-fd methods write into (the dma-buf, or the memfd),
    `address` the mapping read() fills; `view()` is the bytes for the content check."""

    def __init__(self, kind, size, fd, address, inode, keep=(), closers=()):
        self.kind, self.size, self.fd, self.address, self.inode = kind, size, fd, address, inode
        self._keep = list(keep)  # DmaBufs and fds that must live as long as the buffer
        self._closers = list(closers)

    def view(self):
        return memoryview((ctypes.c_char * self.size).from_address(self.address)).cast("B")

    def close(self):
        if self.address:
            libc.munmap(self.address, self.size)
            self.address = 0
        for close in self._closers:
            close()
        self._closers = []


def heap_buffer(size):
    """A system-heap dma-buf, mapped (the heap maps every page at mmap time)."""
    return _mapped_heap_buffer("heap", size)


def _mapped_heap_buffer(kind, size, heap="system"):
    """A dma-buf of `heap`, named validate:<kind>, mapped."""
    dmabuf = alloc.alloc_heap(size, heap=heap, name=f"validate:{kind}")
    try:
        address = map_shared(dmabuf.fd, dmabuf.size)
    except BaseException:
        dmabuf.close()
        raise
    return Buffer(kind, size, dmabuf.fd, address, dmabuf.inode, closers=[dmabuf.close])


def udmabuf_buffer(size):
    """One sealed memfd of `size` with udmabufs over it, each at most the kernel's size limit
    (the posters loaded 32 MB buffers); loads go into the memfd, whose pages the udmabufs pin."""
    aligned = alloc._page_align(size)
    memfd = os.memfd_create("validate:udmabuf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    fds = []

    def close_all():
        for fd in fds + [memfd]:
            os.close(fd)

    try:
        os.ftruncate(memfd, aligned)
        fcntl.fcntl(memfd, alloc.F_ADD_SEALS, alloc.F_SEAL_SHRINK)
        limit = alloc.udmabuf_size_limit()
        device = os.open(alloc.UDMABUF_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        try:
            for offset in range(0, aligned, limit):
                request = bytearray(alloc.UDMABUF_CREATE_STRUCT.pack(memfd, alloc.UDMABUF_FLAGS_CLOEXEC, offset,
                                                                     min(limit, aligned - offset)))
                fds.append(fcntl.ioctl(device, alloc.UDMABUF_CREATE, request, True))
        finally:
            os.close(device)
        address = map_shared(memfd, aligned)
    except BaseException:
        close_all()
        raise
    buffer = Buffer("udmabuf", size, memfd, address, os.fstat(fds[0]).st_ino, closers=[close_all])
    buffer.dmabuf_fds = fds
    buffer.dmabuf_span = limit  # read here, not in a load function: its sysfs read() would join the method's window
    return buffer


def memfd_buffer(size):
    memfd = os.memfd_create("validate:memfd", os.MFD_CLOEXEC)
    try:
        os.ftruncate(memfd, size)
        address = map_shared(memfd, size)
    except BaseException:
        os.close(memfd)
        raise
    return Buffer("memfd", size, memfd, address, os.fstat(memfd).st_ino, closers=[lambda: os.close(memfd)])


def cma_buffer(size):
    """A CMA-heap dma-buf, mapped: one physically contiguous run of the CMA area. Its mmap is VM_PFNMAP like
    the system heap's, each page inserted at its first touch (vmf_insert_pfn), so no pin can take it."""
    heap = alloc.cma_heap_name()
    if heap is None:
        raise alloc.KernelLacks("this kernel has no CMA heap")
    return _mapped_heap_buffer("cma", size, heap)


BUFFERS = {"heap": heap_buffer, "udmabuf": udmabuf_buffer, "memfd": memfd_buffer, "cma": cma_buffer}
# The kinds whose buffer is one dma-buf of its own (a udmabuf buffer is a memfd with dma-bufs over it).
DMABUF_KINDS = ("heap", "cma")


# ---------------------------------------------------------------------------------------------
# Load functions


def read_into_mapping(buffer, fd, size, chunk):
    """read() from the file straight into the buffer's mapping."""
    done = 0
    while done < size:
        got = libc.read(fd, buffer.address + done, min(chunk, size - done))
        if got < 0:
            raise _oserror(ctypes.get_errno(), "read")
        if got == 0:
            break
        done += got
    return done


def bounce_reads(fd, size, chunk):
    """read() the file chunk by chunk into one anonymous bounce buffer: yields (bounce address, bytes got,
    bytes before them) until `size` bytes or the end of the file. The loaders below differ only in where
    they put each chunk next."""
    bounce = map_anonymous(chunk)
    try:
        done = 0
        while done < size:
            got = libc.read(fd, bounce, min(chunk, size - done))
            if got < 0:
                raise _oserror(ctypes.get_errno(), "read")
            if got == 0:
                break
            yield bounce, got, done
            done += got
    finally:
        libc.munmap(bounce, chunk)


def read_then_write(buffer, fd, size, chunk):
    """read() into a user buffer, then write() it into the buffer's fd: the bounce people start from."""
    done = 0
    for bounce, got, _ in bounce_reads(fd, size, chunk):
        written = 0
        while written < got:
            put = libc.write(buffer.fd, bounce + written, got - written)
            if put < 0:
                raise _oserror(ctypes.get_errno(), "write")
            written += put
        done += got
    return done


def mmap_then_copy(buffer, fd, size, chunk):
    """mmap the file, memcpy each chunk into the buffer's mapping: the safetensors-style loader. The copy is user
    space's (page faults fill the page cache), so no kernel copy hook sees it; only the DMA evidence does."""
    source = libc.mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
    if source in (None, MAP_FAILED):
        raise _oserror(ctypes.get_errno(), "mmap")
    try:
        for offset in range(0, size, chunk):
            ctypes.memmove(buffer.address + offset, source + offset, min(chunk, size - offset))
        return size
    finally:
        libc.munmap(source, size)


def read_bounce_then_copy(buffer, fd, size, chunk):
    """read() (O_DIRECT: DMA, no page cache) into an anonymous buffer, memcpy into the buffer's mapping: no kernel
    copy, no page cache, pages pinned; it looks like zero-copy to every hook and is one copy."""
    done = 0
    for bounce, got, offset in bounce_reads(fd, size, chunk):
        ctypes.memmove(buffer.address + offset, bounce, got)
        done += got
    return done


POOL_THREADS = 4
POOL_PIECE = 4 << 20  # each thread preads pieces of this size (ctypes releases the GIL: the reads overlap)


def pread_pool(buffer, fd, size, chunk):
    """A pool of threads, each pread()ing pieces of the file straight into their place in the buffer's mapping."""
    def piece(offset):
        want = min(POOL_PIECE, size - offset)
        done = 0
        while done < want:
            got = libc.pread(fd, buffer.address + offset + done, want - done, offset + done)
            if got < 0:
                raise _oserror(ctypes.get_errno(), "pread")
            if got == 0:
                break
            done += got
        return done

    with ThreadPoolExecutor(POOL_THREADS) as pool:
        return sum(pool.map(piece, range(0, size, POOL_PIECE)))


def send_file(buffer, fd, size, chunk):
    """sendfile(buffer fd <- file): do_splice_direct through the kernel's internal pipe."""
    done = 0
    while done < size:
        moved = os.sendfile(buffer.fd, fd, done, min(chunk, size - done))
        if moved == 0:
            break
        done += moved
    return done


def splice_through_pipe(buffer, fd, size, chunk):
    """splice(file -> pipe), then splice(pipe -> buffer fd), a pipe's worth at a time."""
    read_end, write_end = os.pipe()
    try:
        try:
            pipe_size = fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pipe_size = 64 << 10
        done = 0
        while done < size:
            into_pipe = os.splice(fd, write_end, min(pipe_size, size - done), offset_src=done)
            if into_pipe == 0:
                break
            while into_pipe:
                out = os.splice(read_end, buffer.fd, into_pipe, offset_dst=done)
                into_pipe -= out
                done += out
        return done
    finally:
        os.close(read_end)
        os.close(write_end)


def copy_range(buffer, fd, size, chunk):
    """copy_file_range(file -> buffer fd)."""
    done = 0
    while done < size:
        moved = os.copy_file_range(fd, buffer.fd, min(chunk, size - done), done, done)
        if moved == 0:
            break
        done += moved
    return done


def copy_range_to_dmabuf(buffer, fd, size, chunk):
    """copy_file_range(file -> the dma-buf fd itself), served on patched kernels by the exporter's rw_file."""
    done = 0
    for target, start, length in dmabuf_spans(buffer, size):
        offset = 0
        while offset < length:
            moved = os.copy_file_range(fd, target, min(chunk, length - offset), start + offset, offset)
            if moved == 0:
                return done
            offset += moved
            done += moved
    return done


def dmabuf_spans(buffer, size):
    """[(dma-buf fd, payload offset, length)] covering size bytes: a heap buffer is one dma-buf, a udmabuf
    buffer several over one memfd (each at most the kernel's udmabuf size limit, kept at creation)."""
    targets = getattr(buffer, "dmabuf_fds", None) or [buffer.fd]
    span = getattr(buffer, "dmabuf_span", None) or size
    return [(target, index * span, min(span, size - index * span))
            for index, target in enumerate(targets) if index * span < size]


def rw_file_ioctl(buffer, fd, size, chunk, direct=False):
    """DMA_BUF_IOCTL_RW_FILE (patched kernels): the exporter reads the file into its own pages, a chunk per call."""
    flags = RW_FILE_READ | (RW_FILE_DIRECT if direct else 0)
    done = 0
    for target, start, length in dmabuf_spans(buffer, size):
        offset = 0
        while offset < length:
            request = bytearray(RW_FILE_STRUCT.pack(fd, flags, start + offset, offset, min(chunk, length - offset)))
            moved = fcntl.ioctl(target, DMA_BUF_IOCTL_RW_FILE, request, True)
            if moved == 0:
                return done
            offset += moved
            done += moved
    return done


def rw_file_ioctl_direct(buffer, fd, size, chunk):
    return rw_file_ioctl(buffer, fd, size, chunk, direct=True)


def uring_fixed_read(buffer, fd, size, chunk):
    """io_uring: the buffer's mapping registered once as a fixed buffer (IORING_REGISTER_BUFFERS pins its pages),
    then IORING_OP_READ_FIXED a chunk at a time into it. Registering a dma-buf's own mapping (VM_PFNMAP) fails."""
    with uring.Ring() as ring:
        ring.register_buffers([(buffer.address, alloc._page_align(size))])
        return ring.read_fully(fd, buffer.address, size, chunk, fixed=0)


def aio_read(buffer, fd, size, chunk):
    """Native AIO: io_submit IOCB_CMD_PREAD of chunks into the buffer's mapping, several in flight."""
    with aio.AioContext() as context:
        return context.read_fully(fd, buffer.address, size, chunk)


# ---------------------------------------------------------------------------------------------
# The matrix


@dataclass(frozen=True)
class Method:
    name: str
    buffer: str  # a key of BUFFERS
    direct: bool  # the file is opened O_DIRECT
    load: Callable
    summary: str
    # "symbol:NAME" (BTF or kallsyms); tried: "ioctl:rw_file", "cfr:rw_file", "uring:fixed", "aio:pread"
    needs: Tuple[str, ...] = ()
    # The reads run inside io_uring or AIO, not in a read syscall of the caller's the I/O tracer follows.
    async_io: bool = False


def _both(name, buffer, load, summary, needs=(), async_io=False):
    """A method in its buffered and O_DIRECT flavours."""
    return (Method(name, buffer, False, load, summary, needs, async_io),
            Method(f"{name}-direct", buffer, True, load, f"{summary}, O_DIRECT file", needs, async_io))


METHODS = (
    *_both("heap-read", "heap", read_into_mapping, "system-heap dma-buf: mmap + read()"),
    Method("heap-sendfile", "heap", False, send_file, "system-heap dma-buf: sendfile into the dma-buf fd"),
    Method("heap-splice", "heap", False, splice_through_pipe, "system-heap dma-buf: splice file -> pipe -> dma-buf fd"),
    *_both("heap-cfr", "heap", copy_range, "system-heap dma-buf: copy_file_range into the dma-buf fd"),
    *_both("udmabuf-read", "udmabuf", read_into_mapping, "udmabuf over a sealed memfd: mmap memfd + read()"),
    *_both("udmabuf-sendfile", "udmabuf", send_file, "udmabuf: sendfile into the memfd"),
    *_both("udmabuf-splice", "udmabuf", splice_through_pipe, "udmabuf: splice file -> pipe -> memfd"),
    Method("udmabuf-cfr", "udmabuf", False, copy_range, "udmabuf: copy_file_range into the memfd"),
    # The loaders people write whose copy no kernel hook sees (issue 15): judged by where the device wrote.
    Method("udmabuf-mmap-memcpy", "udmabuf", False, mmap_then_copy,
           "udmabuf: mmap the file + memcpy into the memfd mapping (user-space copy)"),
    Method("udmabuf-bounce-memcpy-direct", "udmabuf", True, read_bounce_then_copy,
           "udmabuf: O_DIRECT read() into anonymous memory + memcpy into the memfd mapping"),
    *_both("udmabuf-pread-pool", "udmabuf", pread_pool,
           f"udmabuf: {POOL_THREADS} threads pread() pieces into the memfd mapping"),
    # Asynchronous interfaces (issue 15): judged by where the device wrote.
    *_both("udmabuf-uring-fixed", "udmabuf", uring_fixed_read,
           "udmabuf: io_uring READ_FIXED into the memfd mapping, registered as a fixed buffer", ("uring:fixed",),
           async_io=True),
    *_both("heap-uring-fixed", "heap", uring_fixed_read,
           "system-heap dma-buf: io_uring READ_FIXED, its mapping registered as a fixed buffer", ("uring:fixed",),
           async_io=True),
    *_both("udmabuf-aio", "udmabuf", aio_read, "udmabuf: native AIO (io_submit IOCB_CMD_PREAD) into the memfd mapping",
           ("aio:pread",), async_io=True),
    # The CMA heap (camera and codec buffers on arm64 boards): a read() into its mapping is a CPU copy, and
    # O_DIRECT cannot pin its VM_PFNMAP pages (EFAULT); a bounce through anonymous memory is a copy no hook sees.
    *_both("cma-read", "cma", read_into_mapping, "CMA-heap dma-buf: mmap + read()"),
    Method("cma-bounce-memcpy-direct", "cma", True, read_bounce_then_copy,
           "CMA-heap dma-buf: O_DIRECT read() into anonymous memory + memcpy into its mapping"),
    *_both("memfd-rw", "memfd", read_then_write, "memfd: read() into a user buffer + write()"),
    *_both("memfd-read", "memfd", read_into_mapping, "memfd: mmap + read()"),
    Method("memfd-sendfile", "memfd", False, send_file, "memfd: sendfile"),
    *_both("memfd-splice", "memfd", splice_through_pipe, "memfd: splice file -> pipe -> memfd"),
    Method("memfd-cfr", "memfd", False, copy_range, "memfd: copy_file_range"),
    # Patched kernels only (the 2025 proposals): detected, never assumed.
    # The v3/v4 shape: tried (a page copied into a heap dma-buf), since an exporter rw_file symbol alone
    # does not say copy_file_range reaches it (our kernel/series serve the ioctl only).
    *_both("heap-cfr-rwfile", "heap", copy_range_to_dmabuf,
           "system-heap dma-buf: copy_file_range served by the exporter's rw_file (patched)", ("cfr:rw_file",)),
    *_both("udmabuf-cfr-rwfile", "udmabuf", copy_range_to_dmabuf,
           "udmabuf: copy_file_range into the dma-buf fd, served by udmabuf's rw_file (patched)", ("cfr:rw_file",)),
    Method("heap-rwfile-ioctl", "heap", False, rw_file_ioctl,
           "system-heap dma-buf: DMA_BUF_IOCTL_RW_FILE (patched)", ("ioctl:rw_file",)),
    Method("heap-rwfile-ioctl-direct", "heap", True, rw_file_ioctl_direct,
           "system-heap dma-buf: DMA_BUF_IOCTL_RW_FILE with DIRECT (patched)", ("ioctl:rw_file",)),
    Method("udmabuf-rwfile-ioctl", "udmabuf", False, rw_file_ioctl,
           "udmabuf: DMA_BUF_IOCTL_RW_FILE on each udmabuf (patched)", ("ioctl:rw_file", "symbol:udmabuf_rw_file")),
    Method("udmabuf-rwfile-ioctl-direct", "udmabuf", True, rw_file_ioctl_direct,
           "udmabuf: DMA_BUF_IOCTL_RW_FILE with DIRECT on each udmabuf (patched)",
           ("ioctl:rw_file", "symbol:udmabuf_rw_file")),
)

BY_NAME = {method.name: method for method in METHODS}
BUFFER_NEEDS = {"heap": ("heaps", "no /dev/dma_heap/system"), "udmabuf": ("udmabuf", "no /dev/udmabuf"),
                "cma": ("cma_heap", "no CMA heap (CONFIG_DMABUF_HEAPS_CMA and a CMA area: cma=SIZE)")}


def select(names=None):
    """Methods by name (all when names is empty), in matrix order; ValueError naming the unknown ones."""
    if not names:
        return list(METHODS)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown method(s): {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [method for method in METHODS if method.name in names]


# ---------------------------------------------------------------------------------------------
# What this kernel offers


def rw_file_ioctl_answer():
    """None if DMA_BUF_IOCTL_RW_FILE exists, else why not (tried on a one-page heap buffer with fd -1)."""
    try:
        dmabuf = alloc.alloc_heap(alloc.PAGE_SIZE)
    except Exception as error:  # any failure means the ioctl cannot be tried here
        return f"cannot try the ioctl without a heap buffer ({error})"
    try:
        request = bytearray(RW_FILE_STRUCT.pack(-1, RW_FILE_READ, 0, 0, alloc.PAGE_SIZE))
        fcntl.ioctl(dmabuf.fd, DMA_BUF_IOCTL_RW_FILE, request, True)
    except OSError as error:
        if error.errno == errno.ENOTTY:
            return "absent on this kernel (DMA_BUF_IOCTL_RW_FILE answers ENOTTY)"
        return None  # EBADF and friends: the ioctl exists and refused our fd -1
    finally:
        dmabuf.close()
    return None


def copy_file_range_answer():
    """None if copy_file_range from a regular file into a heap dma-buf works, else why not (one page, tried)."""
    import tempfile

    try:
        dmabuf = alloc.alloc_heap(alloc.PAGE_SIZE)
    except Exception as error:  # any failure means it cannot be tried here
        return f"cannot try copy_file_range without a heap buffer ({error})"
    try:
        with tempfile.TemporaryFile() as source:
            source.write(bytes(alloc.PAGE_SIZE))
            source.flush()
            os.copy_file_range(source.fileno(), dmabuf.fd, alloc.PAGE_SIZE, 0, 0)
    except OSError as error:
        return (f"absent on this kernel (copy_file_range into a dma-buf answers "
                f"{errno.errorcode.get(error.errno, error.errno)}: no exporter rw_file behind it)")
    finally:
        dmabuf.close()
    return None


class KernelOffer:
    """Answers `needs` entries once per run: symbols from BTF and kallsyms, the ioctl and copy_file_range by trial."""

    # "kind:name" needs decided by one trial each: the function returns None (offered) or why not.
    TRIALS = {"ioctl:rw_file": rw_file_ioctl_answer, "cfr:rw_file": copy_file_range_answer,
              "uring:fixed": uring.fixed_buffers_answer, "aio:pread": aio.answer}

    def __init__(self, report, symbols=None, ioctl_answer=None, cfr_answer=None, answers=None):
        self.report = report
        self._symbols = symbols
        # need -> "" (offered) or why not; tried on first use unless given
        self._answers = dict(answers or {})
        if ioctl_answer is not None:
            self._answers["ioctl:rw_file"] = ioctl_answer
        if cfr_answer is not None:
            self._answers["cfr:rw_file"] = cfr_answer

    def _has_symbol(self, name):
        if self._symbols is None:
            from ..bpf import KernelBtf
            from ..kernelfs import Kallsyms

            self._symbols = set(Kallsyms.from_file().names)
            with KernelBtf() as btf:
                self._symbols |= {fn for fn in ("system_heap_rw_file", "udmabuf_rw_file", "dma_buf_rw_file")
                                  if btf.has_function(fn)}
        return name in self._symbols

    def missing(self, method) -> Optional[str]:
        """None if the kernel offers what the method needs, else why not."""
        if method.buffer in BUFFER_NEEDS:
            feature, why = BUFFER_NEEDS[method.buffer]
            if not self.report.available(feature):
                return f"{why} on this kernel"
        for need in method.needs:
            kind, _, name = need.partition(":")
            if kind == "symbol":
                if not self._has_symbol(name):
                    return f"absent on this kernel ({name} is in neither BTF nor kallsyms: needs a patched kernel)"
                continue
            if need not in self._answers:
                self._answers[need] = self.TRIALS[need]() or ""
            if self._answers[need]:
                return self._answers[need]
        return None

"""Create real dma-bufs from Python: dma-buf heaps and udmabuf, plus naming.

Stdlib only (os, fcntl, mmap, ctypes, struct) so that tests, benchmarks and the
`validate` command can make buffers on any kernel that offers them, with no
compiled helper.

The uAPI comes from the kernel headers:
  include/uapi/linux/dma-heap.h  struct dma_heap_allocation_data, DMA_HEAP_IOCTL_ALLOC
  include/uapi/linux/udmabuf.h   struct udmabuf_create, UDMABUF_CREATE
  include/uapi/linux/dma-buf.h   DMA_BUF_SET_NAME_A/_B, DMA_BUF_IOCTL_SYNC, DMA_BUF_NAME_LEN

The ioctl numbers below follow the generic _IOC encoding (x86, arm, arm64,
riscv, s390); alpha, mips, powerpc and sparc encode direction differently and
are not supported.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from typing import Optional, Union

from .errors import DmabufTopError, KernelLacks, NeedsPrivilege

# --- ioctl number encoding (include/uapi/asm-generic/ioctl.h) ----------------

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, ioctl_type: Union[str, int], number: int, size: int) -> int:
    if isinstance(ioctl_type, str):
        ioctl_type = ord(ioctl_type)
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (ioctl_type << _IOC_TYPESHIFT)
        | (number << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IOW(ioctl_type, number, size):
    return _IOC(_IOC_WRITE, ioctl_type, number, size)


def _IOR(ioctl_type, number, size):
    return _IOC(_IOC_READ, ioctl_type, number, size)


def _IOWR(ioctl_type, number, size):
    return _IOC(_IOC_READ | _IOC_WRITE, ioctl_type, number, size)


# --- struct layouts ------------------------------------------------------------

# struct dma_heap_allocation_data { __u64 len; __u32 fd; __u32 fd_flags; __u64 heap_flags; }
HEAP_ALLOCATION_DATA = struct.Struct("=QIIQ")
# struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; }
UDMABUF_CREATE_STRUCT = struct.Struct("=IIQQ")
# struct dma_buf_sync { __u64 flags; }
DMA_BUF_SYNC_STRUCT = struct.Struct("=Q")

DMA_HEAP_IOCTL_ALLOC = _IOWR("H", 0x0, HEAP_ALLOCATION_DATA.size)
UDMABUF_CREATE = _IOW("u", 0x42, UDMABUF_CREATE_STRUCT.size)
DMA_BUF_IOCTL_SYNC = _IOW("b", 0, DMA_BUF_SYNC_STRUCT.size)

# The header's DMA_BUF_SET_NAME is _IOW('b', 1, const char *), so its number
# depends on the pointer size of whoever compiled the caller; the kernel
# accepts both spellings (_A for 32-bit, _B for 64-bit) on every kernel that
# has the ioctl (5.3+). We send the one a C program built here would send.
DMA_BUF_SET_NAME_A = _IOW("b", 1, 4)
DMA_BUF_SET_NAME_B = _IOW("b", 1, 8)
DMA_BUF_SET_NAME = _IOW("b", 1, ctypes.sizeof(ctypes.c_void_p))

# The kernel copies at most this many bytes including the terminating NUL
# (strndup_user(buf, DMA_BUF_NAME_LEN) answers -EINVAL beyond it).
DMA_BUF_NAME_LEN = 32
MAX_NAME_BYTES = DMA_BUF_NAME_LEN - 1

DMA_BUF_SYNC_READ = 1 << 0
DMA_BUF_SYNC_WRITE = 2 << 0
DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
DMA_BUF_SYNC_START = 0 << 2
DMA_BUF_SYNC_END = 1 << 2

UDMABUF_FLAGS_CLOEXEC = 0x01

DMA_HEAP_DIR = "/dev/dma_heap"
UDMABUF_DEVICE = "/dev/udmabuf"
UDMABUF_SIZE_LIMIT_PARAM = "/sys/module/udmabuf/parameters/size_limit_mb"
UDMABUF_DEFAULT_SIZE_LIMIT_MB = 64  # udmabuf.c: module_param size_limit_mb

# Older Pythons lack some of these names in fcntl; the values are the Linux ABI.
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)

PAGE_SIZE = mmap.PAGESIZE

_IN_THE_LAB = "run it in the kernel lab instead: `dmabuf-top vm -- COMMAND`"


class InvalidName(DmabufTopError, ValueError):
    """A dma-buf name the kernel would refuse or silently cut."""


class DmaBuf:
    """One dma-buf file descriptor this process owns.

    `memfd` is set for udmabufs only: it is the shmem file whose pages back the
    buffer, kept open because loading data means reading into it.
    """

    def __init__(self, fd: int, size: int, exporter: str, memfd: Optional[int] = None,
                 name: Optional[bytes] = None):
        self.fd = fd
        self.size = size
        self.exporter = exporter
        self.memfd = memfd
        self.name = name
        self.inode = os.fstat(fd).st_ino

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError("dma-buf is closed")
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def mmap(self, length: Optional[int] = None, offset: int = 0,
             access: int = mmap.ACCESS_WRITE) -> mmap.mmap:
        """Map the dma-buf itself (shared: udmabuf refuses private mappings)."""
        length = self.size - offset if length is None else length
        return mmap.mmap(self.fileno(), length, mmap.MAP_SHARED,
                         _prot_for(access), offset=offset)

    def mmap_memfd(self, length: Optional[int] = None, offset: int = 0) -> mmap.mmap:
        """Map the udmabuf's backing memfd: the pages the buffer is made of."""
        if self.memfd is None:
            raise ValueError(f"a {self.exporter} dma-buf has no memfd; only udmabufs do")
        length = self.size - offset if length is None else length
        return mmap.mmap(self.memfd, length, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)

    def set_name(self, name: Union[bytes, str]) -> None:
        set_name(self.fileno(), name)
        self.name = _encode_name(name)

    def sync(self, start: bool, read: bool = True, write: bool = True) -> None:
        """Bracket CPU access (DMA_BUF_IOCTL_SYNC) as exporters with caches need."""
        flags = (DMA_BUF_SYNC_START if start else DMA_BUF_SYNC_END)
        flags |= (DMA_BUF_SYNC_READ if read else 0) | (DMA_BUF_SYNC_WRITE if write else 0)
        request = bytearray(DMA_BUF_SYNC_STRUCT.pack(flags))
        fcntl.ioctl(self.fileno(), DMA_BUF_IOCTL_SYNC, request, True)

    def close(self) -> None:
        """Close our descriptors; the buffer dies when the last reference goes."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        if self.memfd is not None and self.memfd >= 0:
            memfd, self.memfd = self.memfd, -1
            os.close(memfd)

    def __enter__(self) -> "DmaBuf":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd}"
        return (f"DmaBuf({state}, size={self.size}, exporter={self.exporter!r}, "
                f"inode={self.inode}, name={self.name!r})")


def _prot_for(access: int) -> int:
    if access == mmap.ACCESS_READ:
        return mmap.PROT_READ
    return mmap.PROT_READ | mmap.PROT_WRITE


def _encode_name(name: Union[bytes, str]) -> bytes:
    if isinstance(name, str):
        # surrogateescape lets a name read back as str with undecodable bytes
        # go back to the kernel unchanged.
        name = name.encode("utf-8", "surrogateescape")
    elif not isinstance(name, (bytes, bytearray, memoryview)):
        raise TypeError(f"a dma-buf name is bytes or str, not {type(name).__name__}")
    name = bytes(name)
    if b"\0" in name:
        raise InvalidName(f"dma-buf name {name!r} contains a NUL byte; "
                          "the kernel would keep only what comes before it")
    if len(name) > MAX_NAME_BYTES:
        raise InvalidName(f"dma-buf name {name!r} is {len(name)} bytes; "
                          f"the kernel takes at most {MAX_NAME_BYTES}")
    return name


def set_name(fd: int, name: Union[bytes, str]) -> None:
    """Name a dma-buf (DMA_BUF_SET_NAME): any bytes but NUL, at most 31 of them.

    The kernel stores the bytes as they are (no escaping, no UTF-8 check) and
    prints them raw in fdinfo, debugfs bufinfo and /proc/PID/maps.
    """
    encoded = _encode_name(name)
    # The ioctl's argument is a pointer to a NUL-terminated user string, which
    # is what fcntl.ioctl passes for a buffer (an int argument would be a C int,
    # too small for a pointer).
    c_string = bytearray(encoded + b"\0")
    try:
        fcntl.ioctl(fd, DMA_BUF_SET_NAME, c_string, True)
    except OSError as error:
        if error.errno == errno.ENOTTY:
            raise KernelLacks(f"fd {fd} is not a dma-buf, or this kernel (before 5.3) "
                              "cannot name dma-bufs") from None
        if error.errno == errno.EBUSY:
            # Kernels before 6.2 refused renaming a buffer attached to a device.
            raise DmabufTopError(f"cannot rename dma-buf fd {fd}: it is attached to a device "
                                 "and this kernel renames only unattached buffers") from None
        raise


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"a dma-buf size is an int, not {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"a dma-buf size must be positive, not {size}")
    return size


def _page_align(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def _open_device(path: str, what_is_missing: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KernelLacks(f"{what_is_missing} ({path} does not exist); {_IN_THE_LAB}") from None
    except PermissionError:
        raise NeedsPrivilege(f"no permission to open {path}; run as root or get "
                             "read-write access to it (e.g. a udev rule)") from None


def _buffer_size(fd: int, asked: int) -> int:
    # A dma-buf answers SEEK_END with its real size: heaps round up to pages.
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return asked


def _exporter_from_fdinfo(fd: int, expected: str) -> str:
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as fdinfo:
            for line in fdinfo:
                if line.startswith(b"exp_name:"):
                    return line.split(b":", 1)[1].strip().decode("utf-8", "backslashreplace")
    except OSError:
        pass
    return expected


def available_heaps() -> list:
    """Names of the dma-buf heaps this kernel offers (empty if none)."""
    try:
        return sorted(os.listdir(DMA_HEAP_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return []


# The CMA heap's names (drivers/dma-buf/heaps/cma_heap.c): the default CMA area's heap is "default_cma_region"
# since Linux 6.17 (DEFAULT_CMA_NAME); before, it had the area's own name, "reserved" for an area made by cma= or
# CONFIG_CMA_SIZE_*, "linux,cma" for a device tree's default pool. Its buffers' exporter is the heap's name.
CMA_HEAP_NAMES = ("default_cma_region", "reserved", "linux,cma")


def cma_heap_name(heaps=None) -> Optional[str]:
    """The CMA heap among `heaps` (default: this kernel's), or None when there is none."""
    heaps = available_heaps() if heaps is None else heaps
    return next((name for name in CMA_HEAP_NAMES if name in heaps), None)


def alloc_heap(size: int, heap: str = "system", name: Union[bytes, str, None] = None) -> DmaBuf:
    """Allocate a dma-buf of at least `size` bytes from /dev/dma_heap/<heap>.

    The heap rounds `size` up to whole pages; `DmaBuf.size` is the real size.
    """
    _check_size(size)
    if name is not None:
        _encode_name(name)  # refuse a bad name before allocating anything
    if "/" in heap or heap in ("", ".", ".."):
        raise ValueError(f"{heap!r} is not a dma-buf heap name")
    path = os.path.join(DMA_HEAP_DIR, heap)
    if not os.path.exists(path):
        heaps = available_heaps()
        if heaps:
            raise KernelLacks(f"this kernel has no dma-buf heap {heap!r} ({path} does not exist); "
                              f"it offers: {', '.join(heaps)}")
    heap_fd = _open_device(path, f"this kernel has no dma-buf heap {heap!r}")
    try:
        request = bytearray(HEAP_ALLOCATION_DATA.pack(size, 0, os.O_RDWR | os.O_CLOEXEC, 0))
        try:
            fcntl.ioctl(heap_fd, DMA_HEAP_IOCTL_ALLOC, request, True)
        except OSError as error:
            raise _allocation_error(error, f"the {heap!r} heap", size) from None
        _, buffer_fd, _, _ = HEAP_ALLOCATION_DATA.unpack(request)
    finally:
        os.close(heap_fd)
    return _finish(buffer_fd, size, heap, None, name)


def udmabuf_size_limit() -> int:
    """Largest udmabuf this kernel will make, in bytes (module parameter size_limit_mb)."""
    try:
        with open(UDMABUF_SIZE_LIMIT_PARAM) as param:
            return int(param.read().strip()) * 1024 * 1024
    except (OSError, ValueError):
        return UDMABUF_DEFAULT_SIZE_LIMIT_MB * 1024 * 1024


def alloc_udmabuf(size: int, name: Union[bytes, str, None] = None) -> DmaBuf:
    """Make a udmabuf of `size` bytes (rounded up to pages) over a new sealed memfd.

    udmabuf wants a shmem memfd sealed against shrinking (F_SEAL_SHRINK) and not
    against writing, page-aligned offset and size, and at most size_limit_mb
    (64 MiB unless changed) per buffer.
    """
    _check_size(size)
    if name is not None:
        _encode_name(name)
    aligned_size = _page_align(size)
    limit = udmabuf_size_limit()
    if aligned_size > limit:
        raise DmabufTopError(
            f"a udmabuf of {aligned_size} bytes is over this kernel's limit of {limit} bytes; "
            f"raise {UDMABUF_SIZE_LIMIT_PARAM} or make several smaller buffers")
    device_fd = _open_device(UDMABUF_DEVICE, "this kernel has no udmabuf device")
    memfd = -1
    try:
        memfd_name = "dmabuf-top-udmabuf"
        memfd = os.memfd_create(memfd_name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(memfd, aligned_size)
        fcntl.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
        request = bytearray(UDMABUF_CREATE_STRUCT.pack(memfd, UDMABUF_FLAGS_CLOEXEC, 0,
                                                        aligned_size))
        try:
            buffer_fd = fcntl.ioctl(device_fd, UDMABUF_CREATE, request, True)
        except OSError as error:
            raise _allocation_error(error, "udmabuf", aligned_size) from None
    except BaseException:
        if memfd >= 0:
            os.close(memfd)
        raise
    finally:
        os.close(device_fd)
    try:
        return _finish(buffer_fd, aligned_size, "udmabuf", memfd, name)
    except BaseException:
        os.close(memfd)
        raise


def _finish(buffer_fd: int, size: int, expected_exporter: str, memfd: Optional[int],
            name: Union[bytes, str, None]) -> DmaBuf:
    try:
        real_size = _buffer_size(buffer_fd, size)
        exporter = _exporter_from_fdinfo(buffer_fd, expected_exporter)
        if name is not None:
            set_name(buffer_fd, name)
        return DmaBuf(buffer_fd, real_size, exporter, memfd,
                      None if name is None else _encode_name(name))
    except BaseException:
        os.close(buffer_fd)
        raise


def _allocation_error(error: OSError, source: str, size: int) -> Exception:
    if error.errno == errno.ENOMEM:
        return DmabufTopError(f"{source} could not allocate {size} bytes: out of memory")
    if error.errno in (errno.EPERM, errno.EACCES):
        return NeedsPrivilege(f"{source} refused to allocate: {error.strerror}")
    if error.errno == errno.ENOTTY:
        return KernelLacks(f"{source} does not understand the allocation ioctl "
                           "(a kernel older than its uAPI?)")
    return DmabufTopError(f"{source} refused to allocate {size} bytes: "
                          f"{errno.errorcode.get(error.errno, error.errno)} ({error.strerror})")

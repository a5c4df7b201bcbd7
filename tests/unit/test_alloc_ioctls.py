"""The uAPI encoding in dmabuf_top.alloc, and its errors where the devices are absent."""
import ctypes
import errno
import os

import pytest

from dmabuf_top import alloc
from dmabuf_top.errors import DmabufTopError, KernelLacks, NeedsPrivilege


def test_ioctl_numbers_match_the_kernel_headers():
    assert alloc.DMA_HEAP_IOCTL_ALLOC == 0xC0184800
    assert alloc.UDMABUF_CREATE == 0x40187542
    assert alloc.DMA_BUF_SET_NAME_A == 0x40046201
    assert alloc.DMA_BUF_SET_NAME_B == 0x40086201
    assert alloc.DMA_BUF_IOCTL_SYNC == 0x40086200


def test_set_name_uses_the_pointer_sized_variant_like_a_c_caller():
    expected = alloc.DMA_BUF_SET_NAME_B if ctypes.sizeof(ctypes.c_void_p) == 8 \
        else alloc.DMA_BUF_SET_NAME_A
    assert alloc.DMA_BUF_SET_NAME == expected


def test_ioc_macros_encode_direction_size_type_number():
    assert alloc._IOC(0, "b", 0, 0) == 0x6200
    assert alloc._IOR("T", 0x13, 8) == 0x80085413
    assert alloc._IOWR(ord("H"), 0, 24) == 0xC0184800
    with pytest.raises(ValueError):
        alloc._IOW("x", 0, 1 << 14)


def test_struct_layouts_match_the_uapi():
    # struct dma_heap_allocation_data { u64 len; u32 fd; u32 fd_flags; u64 heap_flags; }
    assert alloc.HEAP_ALLOCATION_DATA.size == 24
    packed = alloc.HEAP_ALLOCATION_DATA.pack(0x1122334455667788, 3, os.O_RDWR | os.O_CLOEXEC, 0)
    assert packed[:8] == (0x1122334455667788).to_bytes(8, "little")
    assert int.from_bytes(packed[8:12], "little") == 3
    assert int.from_bytes(packed[12:16], "little") == os.O_RDWR | os.O_CLOEXEC
    # struct udmabuf_create { u32 memfd; u32 flags; u64 offset; u64 size; }
    assert alloc.UDMABUF_CREATE_STRUCT.size == 24
    packed = alloc.UDMABUF_CREATE_STRUCT.pack(5, 1, 4096, 8192)
    assert packed == (5).to_bytes(4, "little") + (1).to_bytes(4, "little") \
        + (4096).to_bytes(8, "little") + (8192).to_bytes(8, "little")


def test_seal_constants_are_the_linux_abi():
    assert (alloc.F_ADD_SEALS, alloc.F_GET_SEALS, alloc.F_SEAL_SHRINK) == (1033, 1034, 2)


@pytest.mark.parametrize("name", [b"x" * 32, "é" * 16, b"a\0b", "a\0"])
def test_names_the_kernel_would_refuse_or_cut_are_refused(name):
    with pytest.raises(alloc.InvalidName):
        alloc._encode_name(name)


@pytest.mark.parametrize("name, encoded", [
    (b"x" * 31, b"x" * 31),
    ("frame-0", b"frame-0"),
    ("", b""),
    (b"\n\t\x1b\xff", b"\n\t\x1b\xff"),
    ("bad\udcff", b"bad\xff"),  # surrogateescape: a decoded raw name goes back unchanged
])
def test_names_are_raw_bytes(name, encoded):
    assert alloc._encode_name(name) == encoded


def test_name_type_is_checked():
    with pytest.raises(TypeError):
        alloc._encode_name(42)


def test_invalid_name_is_a_user_error():
    assert issubclass(alloc.InvalidName, DmabufTopError)
    assert issubclass(alloc.InvalidName, ValueError)


@pytest.mark.parametrize("size", [0, -4096, 1.5, True])
def test_bad_sizes_are_refused_before_touching_the_kernel(size):
    with pytest.raises((ValueError, TypeError)):
        alloc.alloc_heap(size)
    with pytest.raises((ValueError, TypeError)):
        alloc.alloc_udmabuf(size)


def test_page_alignment():
    page = alloc.PAGE_SIZE
    assert alloc._page_align(1) == page
    assert alloc._page_align(page) == page
    assert alloc._page_align(page + 1) == 2 * page


def test_set_name_on_a_non_dmabuf_says_so(tmp_path):
    with open(tmp_path / "plain", "w") as plain:
        with pytest.raises(KernelLacks, match="not a dma-buf"):
            alloc.set_name(plain.fileno(), "x")


def test_udmabuf_over_the_size_limit_is_refused_with_the_limit(monkeypatch):
    monkeypatch.setattr(alloc, "udmabuf_size_limit", lambda: 64 << 20)
    with pytest.raises(DmabufTopError, match="size_limit_mb"):
        alloc.alloc_udmabuf((64 << 20) + 1)


def test_heap_name_cannot_escape_the_heap_directory():
    with pytest.raises(ValueError):
        alloc.alloc_heap(4096, heap="../udmabuf")


# --- on a kernel without heaps or udmabuf (this project's host) ----------------

needs_absent_heap = pytest.mark.skipif(
    os.path.exists("/dev/dma_heap/system"), reason="this kernel has a system heap")
needs_absent_udmabuf = pytest.mark.skipif(
    os.path.exists("/dev/udmabuf"), reason="this kernel has udmabuf")


@needs_absent_heap
def test_missing_heap_is_kernel_lacks_with_advice():
    with pytest.raises(KernelLacks) as raised:
        alloc.alloc_heap(4096)
    message = str(raised.value)
    assert "/dev/dma_heap/system" in message and "dmabuf-top vm" in message
    assert "\n" not in message


@needs_absent_udmabuf
def test_missing_udmabuf_is_kernel_lacks_with_advice():
    with pytest.raises(KernelLacks) as raised:
        alloc.alloc_udmabuf(4096)
    message = str(raised.value)
    assert "/dev/udmabuf" in message and "dmabuf-top vm" in message


@needs_absent_udmabuf
def test_missing_udmabuf_leaks_no_descriptor():
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(KernelLacks):
        alloc.alloc_udmabuf(4096)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_permission_denied_is_needs_privilege(monkeypatch, tmp_path):
    def refuse(path, flags, *args):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(alloc.os, "open", refuse)
    with pytest.raises(NeedsPrivilege, match="/dev/udmabuf"):
        alloc._open_device("/dev/udmabuf", "no udmabuf")


def test_missing_named_heap_lists_the_heaps_there_are(monkeypatch):
    monkeypatch.setattr(alloc, "available_heaps", lambda: ["system", "reserved"])
    monkeypatch.setattr(alloc.os.path, "exists", lambda path: False)
    with pytest.raises(KernelLacks, match="system, reserved"):
        alloc.alloc_heap(4096, heap="cma")


def test_allocation_errors_are_one_line():
    for code in (errno.ENOMEM, errno.EPERM, errno.ENOTTY, errno.EINVAL):
        error = alloc._allocation_error(OSError(code, os.strerror(code)), "udmabuf", 4096)
        assert isinstance(error, DmabufTopError)
        assert "\n" not in str(error)

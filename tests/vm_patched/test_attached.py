"""A real importer on the patched lab kernel: vgem (kernel/config/lab.config) attaches a dma-buf when user
space imports it with DRM_IOCTL_PRIME_FD_TO_HANDLE, and detaches it when the GEM handle is closed.

That proves two promises no stock lab kernel can show, for lack of any importer there:
- DMA_BUF_IOCTL_RW_FILE refuses with EBUSY while a device is attached (kernel/series/rw-file/README), and works
  again once it is detached;
- the inventory names the attached device, from iter/dmabuf, from debugfs bufinfo and in `snapshot --json`.
"""
import ctypes
import errno
import fcntl
import glob
import json
import mmap
import os
import struct
import subprocess
import sys
from contextlib import contextmanager

import pytest
from rw_file_request import rw_file, scratch_file

from dmabuf_top import alloc
from dmabuf_top.inventory.bufinfo import read_bufinfo
from dmabuf_top.probes.dmabuf_iter import read_buffers
from dmabuf_top.validate.methods import RW_FILE_READ

pytestmark = pytest.mark.guest

SIZE = 1 << 20


def _iowr(nr, size):
    return (3 << 30) | (size << 16) | (ord("d") << 8) | nr


def _iow(nr, size):
    return (1 << 30) | (size << 16) | (ord("d") << 8) | nr


class DrmVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patchlevel", ctypes.c_int),
                ("name_len", ctypes.c_size_t), ("name", ctypes.c_char_p),
                ("date_len", ctypes.c_size_t), ("date", ctypes.c_char_p),
                ("desc_len", ctypes.c_size_t), ("desc", ctypes.c_char_p)]


DRM_IOCTL_VERSION = _iowr(0x00, ctypes.sizeof(DrmVersion))
PRIME_HANDLE = struct.Struct("=IIi")  # struct drm_prime_handle { u32 handle; u32 flags; s32 fd; }
DRM_IOCTL_PRIME_FD_TO_HANDLE = _iowr(0x2E, PRIME_HANDLE.size)
GEM_CLOSE = struct.Struct("=II")  # struct drm_gem_close { u32 handle; u32 pad; }
DRM_IOCTL_GEM_CLOSE = _iow(0x09, GEM_CLOSE.size)


def driver_name(fd):
    name = ctypes.create_string_buffer(64)
    version = DrmVersion(name_len=len(name), name=ctypes.cast(name, ctypes.c_char_p))
    fcntl.ioctl(fd, DRM_IOCTL_VERSION, version)
    return name.value.decode()


@pytest.fixture(scope="module")
def vgem():
    """An open vgem render node."""
    for node in sorted(glob.glob("/dev/dri/renderD*")):
        fd = os.open(node, os.O_RDWR)
        if driver_name(fd) == "vgem":
            yield fd
            os.close(fd)
            return
        os.close(fd)
    pytest.fail("the patched lab kernel has no vgem render node: kernel/config/lab.config asks for CONFIG_DRM_VGEM")


@contextmanager
def imported(vgem_fd, dmabuf_fd):
    """The dma-buf imported by vgem (attached) for the duration of the block."""
    request = bytearray(PRIME_HANDLE.pack(0, 0, dmabuf_fd))
    fcntl.ioctl(vgem_fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, request, True)
    handle = PRIME_HANDLE.unpack(request)[0]
    try:
        yield handle
    finally:
        fcntl.ioctl(vgem_fd, DRM_IOCTL_GEM_CLOSE, GEM_CLOSE.pack(handle, 0))


def allocate(kind):
    return alloc.alloc_heap(SIZE) if kind == "heap" else alloc.alloc_udmabuf(SIZE)


def record_of(inode):
    return next(buffer for buffer in read_buffers() if buffer.inode == inode)


@pytest.fixture(scope="module")
def source():
    with scratch_file("attached-source.bin", SIZE) as made:
        yield made


@pytest.mark.parametrize("kind", ["heap", "udmabuf"])
def test_rw_file_is_refused_while_a_device_is_attached(vgem, source, kind):
    path, data = source
    fd = os.open(path, os.O_RDONLY)
    try:
        with allocate(kind) as dmabuf:
            with imported(vgem, dmabuf.fd):
                with pytest.raises(OSError) as refused:
                    rw_file(dmabuf.fd, fd, RW_FILE_READ, 0, 0, SIZE)
                assert refused.value.errno == errno.EBUSY
            # Detached: the same request now moves every byte.
            assert rw_file(dmabuf.fd, fd, RW_FILE_READ, 0, 0, SIZE) == SIZE
            with mmap.mmap(dmabuf.fd, SIZE) as view:
                assert bytes(view) == data
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["heap", "udmabuf"])
def test_the_iterator_names_the_attached_device(vgem, kind):
    with allocate(kind) as dmabuf:
        assert (record_of(dmabuf.inode).attachment_count, record_of(dmabuf.inode).attached_devices) == (0, ())
        with imported(vgem, dmabuf.fd):
            attached = record_of(dmabuf.inode)
            assert (attached.attachment_count, attached.attached_devices) == (1, ("vgem",))
            # debugfs bufinfo, the kernel's own account, agrees.
            listed = next(b for b in read_bufinfo().buffers if b.inode == dmabuf.inode)
            assert list(listed.devices) == ["vgem"]
        assert record_of(dmabuf.inode).attachment_count == 0


def test_snapshot_json_shows_the_attachment(vgem):
    with alloc.alloc_heap(SIZE, name="imported-by-vgem") as dmabuf, imported(vgem, dmabuf.fd):
        out = subprocess.run([sys.executable, "-m", "dmabuf_top", "snapshot", "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        entry = next(b for b in json.loads(out.stdout)["buffers"] if b["inode"] == dmabuf.inode)
        assert (entry["attachments"], entry["devices"]) == (1, ["vgem"])
        assert entry["name_hex"] == b"imported-by-vgem".hex()

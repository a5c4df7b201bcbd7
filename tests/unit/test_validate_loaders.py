"""The user-space loaders of the method matrix move exactly the file's bytes (no kernel needed: a memfd is
the buffer). Their verdicts are judged in the guest (tests/vm/test_validate.py); here, only that each loader
is the program it claims to be."""
import ctypes
import errno
import mmap
import os
from types import SimpleNamespace

import pytest

from dmabuf_top.validate import methods

CHUNK = 64 << 10


@pytest.fixture
def source(tmp_path):
    data = os.urandom(3 * CHUNK + 1234)  # a short last chunk
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def buffer(source):
    _, data = source
    fd = os.memfd_create("loader-test")
    os.ftruncate(fd, len(data))
    mapping = mmap.mmap(fd, len(data))
    start = ctypes.c_char.from_buffer(mapping)  # the mapping's address, as a method's buffer.address is
    yield SimpleNamespace(fd=fd, address=ctypes.addressof(start), mapping=mapping)
    del start
    mapping.close()
    os.close(fd)


def assert_loads_the_file(loader, source, buffer, chunk=CHUNK):
    """The loader, given the file open for reading, says it moved the whole file, and the buffer holds it."""
    path, data = source
    fd = os.open(path, os.O_RDONLY)
    try:
        assert loader(buffer, fd, len(data), chunk) == len(data)
    finally:
        os.close(fd)
    assert buffer.mapping[:] == data


@pytest.mark.parametrize("loader", [methods.read_then_write, methods.read_bounce_then_copy, methods.mmap_then_copy])
def test_loader_moves_exactly_the_file(loader, source, buffer):
    assert_loads_the_file(loader, source, buffer)


# The asynchronous interfaces: tried here as validate tries them (a container's seccomp may refuse io_uring).
ASYNC_LOADERS = {methods.uring_fixed_read: "uring:fixed", methods.aio_read: "aio:pread"}


@pytest.mark.parametrize("loader", list(ASYNC_LOADERS), ids=lambda loader: loader.__name__)
@pytest.mark.parametrize("chunk", [CHUNK, 1 << 20], ids=["chunks", "one-read"])
def test_async_loader_moves_exactly_the_file(loader, chunk, source, buffer):
    why_not = methods.KernelOffer.TRIALS[ASYNC_LOADERS[loader]]()
    if why_not:
        pytest.skip(why_not)
    assert_loads_the_file(loader, source, buffer, chunk)


def test_a_fixed_buffer_the_kernel_cannot_pin_is_refused_with_its_errno():
    """Memory pin_user_pages refuses (here: nothing mapped; in the guest: a dma-buf's PFN mapping) cannot be
    registered: OSError with the kernel's errno, which the method's verdict shows."""
    if methods.KernelOffer.TRIALS["uring:fixed"]():
        pytest.skip("no io_uring fixed buffers here")
    from dmabuf_top.validate import uring

    with uring.Ring() as ring:
        with pytest.raises(OSError) as refused:
            ring.register_buffers([(0, 4096)])  # nothing mapped at address 0
    assert refused.value.errno == errno.EFAULT

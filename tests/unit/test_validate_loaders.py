"""The user-space loaders of the method matrix move exactly the file's bytes (no kernel needed: a memfd is
the buffer). Their verdicts are judged in the guest (tests/vm/test_validate.py); here, only that each loader
is the program it claims to be."""
import ctypes
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


@pytest.mark.parametrize("loader", [methods.read_then_write, methods.read_bounce_then_copy, methods.mmap_then_copy])
def test_loader_moves_exactly_the_file(loader, source, buffer):
    path, data = source
    fd = os.open(path, os.O_RDONLY)
    try:
        assert loader(buffer, fd, len(data), CHUNK) == len(data)
    finally:
        os.close(fd)
    assert buffer.mapping[:] == data

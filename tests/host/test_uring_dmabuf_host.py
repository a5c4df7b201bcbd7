"""The io_uring dma-buf client on this machine's kernel, which lacks the series: absent, with the reason, while
the same ring code reads into ordinary registered memory (so the refusal is the kernel's, not the client's)."""
import errno
import hashlib
import os

import pytest
import uring_dmabuf as client  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)
from uring_read import Ring


def test_stock_kernel_refuses_the_extended_update_and_only_it():
    with Ring(4) as ring:
        answer = client.uapi_answer(ring)
        assert answer is not None, "this kernel takes IORING_RSRC_UPDATE_EXTENDED: it carries the series"
        assert (answer.step, answer.errno) == ("extended-update", errno.EINVAL)
        # the same update2 without the flag, emptying the same slot, is taken: the struct itself is well formed
        assert client.update_iovec(ring, client.SLOT, 0, 0) == 1


def test_read_fixed_into_registered_memory_lands_the_file_bytes(tmp_path):
    path = tmp_path / "read-fixed.bin"
    payload = os.urandom(1 << 20)
    path.write_bytes(payload)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as error:
        pytest.skip(f"no O_DIRECT on {tmp_path}: {error}")
    answer = client.probe_user_memory(str(path), 64 << 10, 8192)
    assert answer.present, answer.reason
    assert answer.bytes_read == 64 << 10
    assert answer.sha256 == hashlib.sha256(payload[8192:8192 + (64 << 10)]).hexdigest()

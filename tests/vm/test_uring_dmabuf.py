"""io_uring READ_FIXED into a registered dma-buf on the stock lab kernel: absent, with the reason, for both
exporters; READ_FIXED from the same raw NVMe device into ordinary registered memory works (the comparison row,
and the control that the refusal is the kernel's). The device is only read."""
import errno
import os

import pytest
import uring_dmabuf as client  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf

pytestmark = pytest.mark.guest

NVME = "/dev/nvme0n1"  # the lab's scratch disk (kernel/init.sh); multipath is off, so this is the controller's disk
LENGTH = 256 << 10


@pytest.fixture(scope="module")
def nvme():
    if not os.path.exists(NVME):
        pytest.skip(f"{NVME} is missing: this suite runs inside `dmabuf-top vm`")
    return NVME


@pytest.mark.parametrize("allocate", [alloc_heap, alloc_udmabuf], ids=["system-heap", "udmabuf"])
def test_dmabuf_read_fixed_is_absent_with_the_reason(nvme, heap_available, udmabuf_available, allocate):
    with allocate(1 << 20) as buffer:
        answer = client.probe(nvme, buffer, LENGTH)
    assert not answer.present
    assert (answer.step, answer.errno) == ("extended-update", errno.EINVAL), answer.reason
    assert "lacks the io_uring dma-buf uAPI" in answer.reason


def test_read_fixed_into_registered_memory_from_the_raw_nvme_device(nvme):
    """probe_user_memory compares the registered memory with an O_DIRECT pread of the same device range."""
    answer = client.probe_user_memory(nvme, LENGTH, 1 << 20)
    assert answer.present, answer.reason
    assert answer.bytes_read == LENGTH

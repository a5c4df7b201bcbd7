"""Fixtures for tests that run inside the lab guest, where real dma-bufs exist."""
import os

import pytest

from dmabuf_top import features

SYSTEM_HEAP = "/dev/dma_heap/system"
UDMABUF_DEVICE = "/dev/udmabuf"
BUFINFO = "/sys/kernel/debug/dma_buf/bufinfo"

NOT_IN_GUEST = ("not inside the lab guest ({} is missing); run this suite with "
                "`python3 -m dmabuf_top vm -- python3 -m pytest tests/vm`")


@pytest.fixture(scope="module")
def report():
    """What this kernel offers (the feature trials), once per test module."""
    return features.detect()


@pytest.fixture
def heap_available():
    if not os.path.exists(SYSTEM_HEAP):
        pytest.skip(NOT_IN_GUEST.format(SYSTEM_HEAP))
    return SYSTEM_HEAP


@pytest.fixture
def udmabuf_available():
    if not os.path.exists(UDMABUF_DEVICE):
        pytest.skip(NOT_IN_GUEST.format(UDMABUF_DEVICE))
    return UDMABUF_DEVICE


@pytest.fixture
def bufinfo_available():
    if not os.path.exists(BUFINFO):
        pytest.skip(f"{BUFINFO} is missing: debugfs is not mounted here, or not the lab guest")
    return BUFINFO

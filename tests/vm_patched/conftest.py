"""Tests that need the patched lab kernel (kernel/series): `.ci/test-all` runs them in a second boot,
only when that kernel is built (`make kernel`) or DMABUF_TOP_BUILD_KERNEL=1 asks for it, and says so
otherwise. By hand:

    dmabuf-top vm --kernel "$(python -m dmabuf_top.kernel.build --cached)" -- python -m pytest tests/vm_patched
"""
import os

import pytest

from dmabuf_top.validate import methods

SCRATCH = "/mnt/scratch"


@pytest.fixture(scope="session", autouse=True)
def patched_kernel():
    """Outside the guest: skip, saying how to run. Inside a guest without the patch: fail (it was booted for it)."""
    if not os.path.exists("/dev/dma_heap/system") or not os.path.ismount(SCRATCH):
        pytest.skip("not inside the lab guest on the patched kernel: run with `dmabuf-top vm --kernel "
                    "\"$(python -m dmabuf_top.kernel.build --cached)\" -- python -m pytest tests/vm_patched`")
    why = methods.rw_file_ioctl_answer()
    if why:
        pytest.fail(f"the booted kernel lacks kernel/series: {why}")

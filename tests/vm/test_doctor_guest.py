"""`dmabuf-top doctor --json` in the lab guest: everything the CI host lacks is there."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def features():
    if not os.path.exists("/dev/dma_heap/system"):
        pytest.skip("not inside the lab guest: run with `dmabuf-top vm -- python -m pytest tests/vm`")
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "doctor", "--json"],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["features"]


@pytest.mark.parametrize("name", ["fentry", "fexit", "kprobe", "kretprobe", "tp_btf", "heaps", "udmabuf",
                                  "iter/dmabuf", "iter/task_file", "iter/task_vma", "bufinfo", "ringbuf"])
def test_available_in_the_guest(features, name):
    assert features[name]["available"], features[name]


def test_all_dma_buf_tracepoints(features):
    names = [name for name in features if name.startswith("tracepoint/dma_buf:")]
    assert len(names) == 8 and all(features[name]["available"] for name in names)


def test_hooks_resolve_to_fentry_where_the_kernel_allows(features):
    assert features["fn/vfs_copy_file_range"]["via"] == "fentry"
    assert features["fn/dma_buf_export"]["via"] == "fentry"
    assert features["fn/dma_buf_rw_file"] == {"available": False, "via": None,
                                              "detail": "absent (needs a patched kernel)"}

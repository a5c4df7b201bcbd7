"""`dmabuf-top doctor` on the running kernel: verdicts match what the kernel really does."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

DMABUF_TOP = [sys.executable, "-m", "dmabuf_top"]


@pytest.fixture(scope="module")
def doctor():
    result = subprocess.run([*DMABUF_TOP, "doctor", "--json"], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_json_shape(doctor):
    assert set(doctor) == {"kernel", "features"}
    assert doctor["kernel"]["release"] == os.uname().release
    for name, feature in doctor["features"].items():
        assert set(feature) == {"available", "via", "detail"}, name
        assert feature["available"] or feature["detail"], f"{name}: a 'no' must say why"


def test_verdicts_match_the_kernel(doctor):
    features = doctor["features"]
    release = tuple(int(part) for part in os.uname().release.split(".")[:2])
    assert features["iter/dmabuf"]["available"] is (release >= (6, 16))
    assert features["heaps"]["available"] is Path("/dev/dma_heap").is_dir()
    assert features["udmabuf"]["available"] is Path("/dev/udmabuf").exists()
    kprobe_pmu = Path("/sys/bus/event_source/devices/kprobe").exists()
    assert features["kprobe"]["available"] is kprobe_pmu
    assert features["tracepoint"]["available"] and features["ringbuf"]["available"]


def test_fentry_refusal_is_reported_with_the_kernels_errno(doctor):
    fentry = doctor["features"]["fentry"]
    if fentry["available"]:
        pytest.skip("this kernel accepts fentry; the refusal path is covered where it refuses (the CI host)")
    assert fentry["detail"] == "EPERM"
    assert doctor["features"]["fn/vfs_copy_file_range"]["available"] is doctor["features"]["kprobe"]["available"]


def test_table_is_readable(doctor):
    table = subprocess.run([*DMABUF_TOP, "doctor"], capture_output=True, text=True, check=True).stdout
    assert table.startswith(f"kernel {os.uname().release}")
    for line in table.splitlines():
        if line.startswith("  fentry "):
            assert ("yes" in line) is doctor["features"]["fentry"]["available"]


def test_not_root_is_one_clear_line_and_exit_2(tmp_path):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    result = subprocess.run(
        [*nobody, sys.executable, "-m", "dmabuf_top", "doctor"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "root" in result.stderr and "Traceback" not in result.stderr

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def faulty_object(tmp_path_factory):
    """Compile the test-only faulty programs with the same flags as the real probes."""
    out = tmp_path_factory.mktemp("bpf") / "faulty.bpf.o"
    subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{ROOT / 'build'}", f"-I{ROOT / 'probes'}",
         "-c", str(ROOT / "tests/host/bpf/faulty.bpf.c"), "-o", str(out)],
        check=True,
    )
    return out

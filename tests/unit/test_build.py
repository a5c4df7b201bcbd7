"""The BPF build says what to install when a tool is missing, in one line."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make(*args):
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True)


def test_missing_clang_names_the_package():
    result = make("-W", "probes/feature_probe.bpf.c", "probes/feature_probe.x86.bpf.o", "CLANG=no-such-clang")
    assert result.returncode != 0
    assert "'no-such-clang' not found: install it with 'apt-get install clang llvm'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_bpftool_names_the_package(tmp_path):
    result = make("-B", f"VMLINUX_H={tmp_path}/vmlinux.h", f"{tmp_path}/vmlinux.h", "BPFTOOL=no-such-bpftool")
    assert result.returncode != 0
    assert "install it with 'apt-get install bpftool'" in result.stderr
    assert not (tmp_path / "vmlinux.h").exists()


def test_missing_btf_says_how_to_point_at_one(tmp_path):
    result = make("-B", f"VMLINUX_H={tmp_path}/vmlinux.h", f"{tmp_path}/vmlinux.h", f"VMLINUX_BTF={tmp_path}/none")
    assert result.returncode != 0
    assert "VMLINUX_BTF=" in result.stderr


def test_objects_are_built_for_both_architectures():
    """`make bpf` builds each concern for x86 and arm64, from any host (the arm64 ones never ran here)."""
    result = make("-n", "bpf", "-B")
    assert result.returncode == 0, result.stderr
    for arch in ("x86", "arm64"):
        assert f"-D__TARGET_ARCH_{arch} -c probes/iopaths.bpf.c -o probes/iopaths.{arch}.bpf.o.tmp" in result.stdout

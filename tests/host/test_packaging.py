"""The wheel carries the BPF objects and maps the three top-level rooms into one namespace."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_bpf_objects_under_one_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("dmabuf_top-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for concern in ("dmabuf_iter", "feature_probe"):
        assert f"dmabuf_top/probes/{concern}.bpf.o" in names
    assert "dmabuf_top/kernel/init.sh" in names
    assert "dmabuf_top/analysis/__init__.py" in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("dmabuf_top-")}
    assert top_level == {"dmabuf_top"}, "nothing but dmabuf_top may land in site-packages"


def test_editable_install_sees_the_same_modules():
    import dmabuf_top.analysis
    import dmabuf_top.kernel
    import dmabuf_top.probes

    assert Path(dmabuf_top.probes.__file__).parent == ROOT / "probes"
    assert Path(dmabuf_top.kernel.__file__).parent == ROOT / "kernel"
    assert Path(dmabuf_top.analysis.__file__).parent == ROOT / "analysis"

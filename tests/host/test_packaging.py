"""What a new user gets from `pip install`: the wheel and the sdist carry every module and data file,
and the installed tool runs, outside this checkout.

Every other test runs from the editable install, which sees the source tree whatever setup.cfg lists:
a module missing from the wheel (dmabuf_top.validate once was) is caught only by installing the wheel
into a fresh environment and using it there.
"""
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Source directory -> installed package: the design card's four rooms, one namespace.
ROOMS = {"dmabuf_top": "dmabuf_top", "probes": "dmabuf_top.probes", "analysis": "dmabuf_top.analysis",
         "kernel": "dmabuf_top.kernel"}
# Files the code opens at run time, as installed paths.
DATA_FILES = ("dmabuf_top/kernel/init.sh", "dmabuf_top/kernel/config/lab.config")


def source_modules():
    """Every module of the source tree, by its installed name."""
    modules = []
    for directory, package in ROOMS.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT / directory).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue  # runs the tool when imported; test_installed_commands_start runs it
            if parts[-1] == "__init__":
                parts.pop()
            modules.append(".".join([package, *parts]))
    return modules


def data_files():
    """Installed paths of the files the code opens at run time: BPF objects, patches, init and config."""
    # One object per concern and target architecture: the wheel serves x86_64 and arm64 machines alike.
    bpf_objects = [f"dmabuf_top/probes/{p.name.replace('.bpf.c', f'.{arch}.bpf.o')}"
                   for p in (ROOT / "probes").glob("*.bpf.c") for arch in ("x86", "arm64")]
    # Every patch series (kernel/series/<name>/*.patch) with the README that says what it is for.
    series = [f"dmabuf_top/kernel/{p.relative_to(ROOT / 'kernel')}"
              for pattern in ("series/*/*.patch", "series/*/README") for p in (ROOT / "kernel").glob(pattern)]
    assert any(p.endswith("/rw-file/README") for p in series)
    return [*bpf_objects, *series, *DATA_FILES]


def package_files(module):
    """A module's file in the wheel: a package's __init__.py, or the module's own .py."""
    path = module.replace(".", "/")
    return (f"{path}/__init__.py", f"{path}.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("dmabuf_top-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel):
    """A new virtualenv with the wheel installed (not editable). The dependencies (click, numpy...) come from
    the test environment's site-packages through a path entry, which puts them on sys.path without running
    that directory's .pth files: its editable finder for this checkout is never installed."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True)
    return venv


def run_in(venv, *args, **kwargs):
    # Run away from the checkout: a working directory inside it would put the source tree on sys.path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=venv, env=env, timeout=300,
                          **kwargs)


def test_wheel_holds_every_module_and_data_file_under_one_namespace(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [m for m in source_modules() if not any(f in names for f in package_files(m))]
    assert not missing, f"modules of the source tree missing from the wheel: {missing}"
    assert not [f for f in data_files() if f not in names], "data files missing from the wheel"
    top_level = {name.split("/")[0] for name in names if not name.startswith("dmabuf_top-")}
    assert top_level == {"dmabuf_top"}, "nothing but dmabuf_top may land in site-packages"


def test_sdist_builds_and_holds_the_sources_a_wheel_is_made_from(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (sdist,) = tmp_path.glob("dmabuf[-_]top-*.tar.gz")  # setuptools < 69 keeps the dash
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = ["Makefile", "setup.py", "setup.cfg", "kernel/init.sh", "kernel/config/lab.config",
              *[str(p.relative_to(ROOT)) for p in (ROOT / "kernel" / "series").glob("*/*")],
              *[str(p.relative_to(ROOT)) for p in (ROOT / "probes").glob("*.bpf.c")],
              *[str(p.relative_to(ROOT)) for p in (ROOT / "probes").glob("*.h")]]
    for directory in ROOMS:
        wanted += [str(p.relative_to(ROOT)) for p in (ROOT / directory).rglob("*.py") if "__pycache__" not in p.parts]
    assert not [w for w in wanted if w not in names], "files missing from the sdist"


def test_installed_wheel_imports_every_module_from_site_packages(fresh_venv):
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {source_modules()!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    if '/site-packages/' not in (module.__file__ or ''):\n"
        "        bad.append((name, module.__file__))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = run_in(fresh_venv, fresh_venv / "bin" / "python", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_commands_start(fresh_venv):
    tool = fresh_venv / "bin" / "dmabuf-top"
    listed = run_in(fresh_venv, tool, "--help")
    assert listed.returncode == 0, listed.stderr
    as_module = run_in(fresh_venv, fresh_venv / "bin" / "python", "-m", "dmabuf_top", "--help")
    assert as_module.returncode == 0 and as_module.stdout == listed.stdout, as_module.stderr
    commands = sorted(p.stem for p in (ROOT / "dmabuf_top" / "commands").glob("[!_]*.py"))
    for command in commands:
        assert command in listed.stdout
        shown = run_in(fresh_venv, tool, command, "--help")
        assert shown.returncode == 0 and "Usage:" in shown.stdout, (command, shown.stderr)


@pytest.mark.root
def test_installed_tool_runs_host_commands(fresh_venv):
    tool = fresh_venv / "bin" / "dmabuf-top"
    doctor = run_in(fresh_venv, tool, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    assert '"iter/dmabuf"' in doctor.stdout
    snapshot = run_in(fresh_venv, tool, "snapshot", "--json")
    assert snapshot.returncode == 0, snapshot.stderr
    # validate needs a dma-buf heap; this machine has none: one sentence, never a traceback (it was a
    # ModuleNotFoundError when the wheel lacked dmabuf_top.validate).
    validate = run_in(fresh_venv, tool, "validate", "--size", "1M")
    assert "Traceback" not in validate.stderr and validate.stderr.startswith("dmabuf-top: "), validate.stderr


def test_editable_install_sees_the_same_modules():
    import dmabuf_top.analysis
    import dmabuf_top.kernel
    import dmabuf_top.probes

    assert Path(dmabuf_top.probes.__file__).parent == ROOT / "probes"
    assert Path(dmabuf_top.kernel.__file__).parent == ROOT / "kernel"
    assert Path(dmabuf_top.analysis.__file__).parent == ROOT / "analysis"

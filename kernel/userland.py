"""A foreign-architecture root for the lab guest, assembled from Debian's packages and PyPI's wheels.

The amd64 guest boots on the host's own root; an arm64 guest cannot (wrong
architecture), so the lab builds it a root of its own: busybox, a shell,
python3 and libbpf1 with everything they depend on, unpacked with `dpkg-deb -x`
(no maintainer script runs: nothing of arm64 ever executes on the host), and
the project's Python dependencies installed as aarch64 wheels by pip's
cross-platform mode. The project itself is not copied in: the guest mounts the
host's copy at the same path, and a small import hook in the tree maps the
`dmabuf_top` packages onto it (see FINDER).

The tree is cached under the lab's cache directory, one per architecture, and
reused offline once complete; `refresh=True` assembles it again.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import dmabuf_top
from dmabuf_top.errors import DmabufTopError

from .arch import GuestArch
from .fetch import PrivateApt, cache_root, foreign_apt

# Bump when what goes into the tree changes, so a stale cached tree is rebuilt.
LAYOUT_VERSION = "2"
COMPLETE_MARK = ".dmabuf-top-complete"

# Debian packages the guest needs; their dependencies come along.
# libstdc++6: manylinux wheels with C++ inside (numpy) expect the system's, like every manylinux library but libpython.
GUEST_PACKAGES = ("busybox-static", "dash", "coreutils", "python3", "libbpf1", "libstdc++6")
# Python packages for the guest besides the project's own requirements (the guest test suites run pytest).
GUEST_EXTRA_WHEELS = ("pytest",)

# Where the guest's init expects to find what the host mounts or creates.
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "mnt", "root")

# The guest environment variable that tells FINDER where the host's packages are.
PACKAGES_VARIABLE = "DMABUF_TOP_LAB_PACKAGES"

# Loaded by site.py through a .pth file in the guest's dist-packages: maps the installed package names to the
# host directories given in $DMABUF_TOP_LAB_PACKAGES ("name=path:name=path"), like an editable install does.
FINDER_MODULE = "_dmabuf_top_lab_finder"
FINDER = '''"""dmabuf-top lab: import the project from the host checkout shared into this guest."""
import importlib.util
import os
import sys


class LabFinder:
    def __init__(self, mapping):
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):
        directory = self.mapping.get(fullname)
        if directory is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])


_mapping = dict(item.split("=", 1) for item in os.environ.get("DMABUF_TOP_LAB_PACKAGES", "").split(":") if "=" in item)
if _mapping:
    sys.meta_path.insert(0, LabFinder(_mapping))
'''

CONSOLE_SCRIPT = """#!/usr/bin/python3
# dmabuf-top in the lab guest: the project comes from the host checkout (see {finder}).
import sys

from dmabuf_top.cli import main

sys.exit(main())
"""


# ---------------------------------------------------------------- dependencies


def parse_depends(text: str) -> Dict[str, List[str]]:
    """`apt-cache depends` output -> {package: the packages it needs}.

    Of alternatives (a line marked '|' and the ones after it) the first real package is taken; a virtual
    package (<name>) stands for its first provider, listed indented under it."""
    groups: Dict[str, List[List[tuple]]] = {}
    current: Optional[str] = None
    continues = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            current, continues = line.strip(), False
            groups[current] = []
            continue
        if current is None:
            continue
        match = re.match(r"^\s(\|)?\s*(?:PreDepends|Depends):\s+(\S+)", line)
        if match:
            if not continues or not groups[current]:
                groups[current].append([])
            groups[current][-1].append((match.group(2), []))
            continues = match.group(1) == "|"
        elif line.startswith("    ") and groups[current]:
            groups[current][-1][-1][1].append(line.strip())  # a provider of the virtual package above
    return {package: [name for name in map(_first_real, alternatives) if name]
            for package, alternatives in groups.items()}


def _first_real(alternatives: List[tuple]) -> Optional[str]:
    for name, providers in alternatives:
        if not name.startswith("<"):
            return name
        if providers:
            return providers[0]
    return None


def dependency_closure(apt: PrivateApt, roots: Iterable[str]) -> List[str]:
    """Every package `roots` need, by breadth (one apt-cache call per level)."""
    seen = set()
    frontier = sorted(set(roots))
    while frontier:
        seen.update(frontier)
        out = apt.run("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                      "--no-breaks", "--no-replaces", "--no-enhances", *frontier)
        found = {dep for deps in parse_depends(out).values() for dep in deps}
        frontier = sorted(found - seen)
    return sorted(seen)


# ---------------------------------------------------------------- the tree


def userland_dir(arch: GuestArch, cache_dir: Optional[Path] = None) -> Path:
    return cache_root(cache_dir) / "userland" / f"{arch.debian}-{LAYOUT_VERSION}"


def python_version_in(tree: Path) -> str:
    """The X.Y of the python3 unpacked in the tree."""
    versions = sorted(
        (p.name[len("python"):] for p in (tree / "usr" / "lib").glob("python3.*") if (p / "os.py").is_file()),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    if not versions:
        raise DmabufTopError(f"the guest tree {tree} holds no Python standard library")
    return versions[-1]


def project_requirements() -> List[str]:
    """The installed project's own requirements (no extras), as pip understands them."""
    try:
        requires = importlib.metadata.requires("dmabuf-top") or []
    except importlib.metadata.PackageNotFoundError:
        raise DmabufTopError("dmabuf-top is not installed (metadata missing): run `make venv` first") from None
    return [req.split(";")[0].strip() for req in requires if "extra ==" not in req]


def wheel_platforms(arch: GuestArch) -> List[str]:
    return [f"manylinux_2_{minor}_{arch.wheel}" for minor in (28, 17)] + [f"manylinux2014_{arch.wheel}"]


def pip_install_args(arch: GuestArch, python: str, target: Path, requirements: Iterable[str]) -> List[str]:
    """pip's cross install: wheels only, for the guest's platform and Python, into `target`."""
    nodot = python.replace(".", "")
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-compile", "--target", str(target), "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none"]
    for platform in wheel_platforms(arch):
        args += ["--platform", platform]
    return args + list(requirements)


def assemble_userland(arch: GuestArch, cache_dir: Optional[Path] = None, refresh: bool = False,
                      log=None) -> Path:
    """The guest root for `arch`, assembled once and then reused from the cache."""
    destination = userland_dir(arch, cache_dir)
    if (destination / COMPLETE_MARK).is_file() and not refresh:
        return destination
    say = log or (lambda message: print(f"dmabuf-top vm: {message}", file=sys.stderr, flush=True))
    apt = foreign_apt(arch, cache_dir)
    apt.update()
    packages = dependency_closure(apt, GUEST_PACKAGES)
    say(f"assembling the {arch.debian} guest root from {len(packages)} Debian packages and PyPI wheels "
        f"(once; cached in {destination})")
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise DmabufTopError("dpkg-deb not found: assembling the guest root needs it (`apt-get install dpkg`)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".assemble-") as work:
        work = Path(work)
        debs = work / "debs"
        debs.mkdir()
        tree = work / "tree"
        _merged_usr(tree)
        apt.run("apt-get", "download", *packages, cwd=debs)  # one call: apt's start-up costs a second each
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run([dpkg_deb, "-x", str(deb), str(tree)], check=True)
        _finish_tree(tree)
        python = python_version_in(tree)
        site = tree / "usr" / "local" / "lib" / f"python{python}" / "dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        requirements = [*project_requirements(), *GUEST_EXTRA_WHEELS]
        result = subprocess.run(pip_install_args(arch, python, site, requirements), capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise DmabufTopError(f"pip could not install the guest's wheels ({arch.wheel}, Python {python}): {reason}")
        _install_project_hooks(tree, site)
        (tree / COMPLETE_MARK).write_text(" ".join(packages) + "\n")
        if destination.exists():
            shutil.rmtree(destination)
        tree.rename(destination)
    return destination


def _merged_usr(tree: Path) -> None:
    """Debian's merged /usr: /bin, /sbin and /lib are links into /usr (the ELF interpreter is /lib/ld-...)."""
    for name in ("bin", "sbin", "lib"):
        (tree / "usr" / name).mkdir(parents=True, exist_ok=True)
        (tree / name).symlink_to(f"usr/{name}")


def _finish_tree(tree: Path) -> None:
    for point in MOUNT_POINTS:
        (tree / point).mkdir(parents=True, exist_ok=True)
    sh = tree / "usr" / "bin" / "sh"
    if not sh.exists() and not sh.is_symlink():
        sh.symlink_to("dash")
    etc = tree / "etc"
    etc.mkdir(exist_ok=True)
    for name, text in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n"),
                       ("hostname", "dmabuf-top-lab\n")):
        if not (etc / name).exists():
            (etc / name).write_text(text)


def _install_project_hooks(tree: Path, site: Path) -> None:
    (site / f"{FINDER_MODULE}.py").write_text(FINDER)
    (site / "dmabuf_top_lab.pth").write_text(f"import {FINDER_MODULE}\n")
    script = tree / "usr" / "local" / "bin" / "dmabuf-top"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(CONSOLE_SCRIPT.format(finder=FINDER_MODULE))
    script.chmod(0o755)


def package_mapping() -> Dict[str, str]:
    """Where this host's dmabuf_top packages live: {installed name: directory} (an editable install
    maps probes/ and friends; a wheel keeps them under dmabuf_top/)."""
    mapping = {"dmabuf_top": str(Path(dmabuf_top.__file__).resolve().parent)}
    for sub in ("probes", "analysis", "kernel"):
        module = importlib.import_module(f"dmabuf_top.{sub}")
        mapping[f"dmabuf_top.{sub}"] = str(Path(module.__file__).resolve().parent)
    return mapping


def encode_mapping(mapping: Dict[str, str]) -> str:
    for directory in mapping.values():
        if ":" in directory or "=" in directory:
            raise DmabufTopError(f"cannot share {directory} with the guest: its path holds ':' or '='")
    return ":".join(f"{name}={directory}" for name, directory in mapping.items())


def shared_source_root(mapping: Dict[str, str]) -> Path:
    """The one host directory holding every package of the mapping: the guest mounts it read-only."""
    return Path(os.path.commonpath(list(mapping.values())))


def guest_busybox(tree: Path) -> Path:
    """The static busybox of the guest's architecture, for its initramfs."""
    for place in ("usr/bin/busybox", "bin/busybox"):
        path = tree / place
        if path.is_file() and not path.is_symlink():
            return path
    raise DmabufTopError(f"the guest tree {tree} holds no busybox (busybox-static): assemble it again")


def make_mount_points(tree: Path, host_paths: Iterable[str], under_tmpfs: Iterable[str] = ()) -> None:
    """Create, in the tree, the directories the guest mounts host directories on: the root is read-only
    in the guest, so init cannot make them there. Under a tmpfs of the guest (`under_tmpfs`) init makes them."""
    covered = [Path(p) for p in under_tmpfs]
    for path in map(Path, host_paths):
        if not any(c in path.parents for c in covered):
            (tree / str(path).lstrip("/")).mkdir(parents=True, exist_ok=True)

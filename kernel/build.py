"""Build the lab's own kernels: Debian's source of the lab kernel's version, our patch series, a small config.

A patch series is a directory kernel/series/<name>/ of *.patch files (applied in name order)
and a README saying what they do and why. A kernel is an ordered list of series (KERNELS);
its cache key covers every patch of every series, so two kernels never share an image.

Stages, each announced on one line: fetch (Debian's `linux-source-<major.minor>` .deb of
exactly the version the lab boots, through the same private apt state as kernel/fetch.py),
unpack (the .tar.xz inside it, once per source version), patch (the kernel's series in
order; a different set is reversed and re-applied, so make rebuilds only what changed),
config (`make allnoconfig` with the target's fragments merged as the base: kernel/config/lab.config,
and for arm64 lab-arm64.config after it; then every option asked for is checked to have taken effect)
and build (`make bzImage`, or `make Image` cross-compiled for arm64; niced, logged).

The result lands in <cache>/patched/<key>/ with its config and a manifest; the key hashes
the source version, the series and their patches, the fragments and the target's recipe (which names
its architecture and cross compiler), so building again with
nothing changed returns at once, and a patched kernel never shadows the stock one the
lab boots by default (that one lives in <cache>/kernels/).

    python -m dmabuf_top.kernel.build            # build (or reuse) the lab kernel and print the bzImage path
    python -m dmabuf_top.kernel.build --cached   # print it only if already built, else exit 1
    python -m dmabuf_top.kernel.build --kernel rw-file   # another kernel of KERNELS
    python -m dmabuf_top.kernel.build --arch arm64       # the arm64 lab kernel (aarch64-linux-gnu-gcc)

The kernel source tree is shared by every build of one source version and architecture (that is
what makes a rebuild incremental), so a build holds a lock on it from patching to the copied image.
Each architecture has a tree of its own (<cache>/kernel-src/<version> for x86, <version>-arm64):
the x86 build runs in its tree, and the kernel refuses an `O=` build beside an in-tree one
("The source tree is not clean"), so a second architecture cannot share it through O= alone.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from dmabuf_top.errors import DmabufTopError, MissingDependency

from . import fetch
from .arch import ARM64, X86_64, GuestArch, guest_arch
from .kconfig import read_kconfig

HERE = Path(__file__).resolve().parent
SERIES_DIR = HERE / "series"
# The patched kernels the lab builds: name -> the series it carries, applied in this order. Adding
# a series to a kernel is one more name in its tuple. "lab" is what `make kernel` and tests/vm_patched
# use: the rw_file ioctl, and the hidden-copy instrument behind a switch that is off by default
# (kernel/series/rw-file-hidden-copy/README says why one kernel rather than two).
KERNELS = {
    "lab": ("rw-file", "rw-file-hidden-copy"),
    "rw-file": ("rw-file",),
}
DEFAULT_KERNEL = "lab"
CONFIG_FRAGMENT = HERE / "config" / "lab.config"
ARM64_FRAGMENT = HERE / "config" / "lab-arm64.config"
# Bump when the way a kernel is built changes (make targets, flags): old builds stop matching.
RECIPE = "allnoconfig+fragment/bzImage/v1"
ARM64_RECIPE = "allnoconfig+fragments/Image/ARCH=arm64/CROSS_COMPILE=aarch64-linux-gnu-/v1"
DEFAULT_JOBS = 2


@dataclass(frozen=True)
class Target:
    """How one architecture's lab kernel is built from Debian's (architecture-independent) source."""

    arch: GuestArch
    make_arch: str  # make's ARCH=
    cross_compile: str  # make's CROSS_COMPILE= ("" builds with the host's gcc)
    image: str  # the make target
    image_path: str  # where make leaves it, relative to the tree
    fragments: tuple  # config fragments merged in this order (a later line wins)
    recipe: str  # part of the cache key: names the architecture and the compiler, so keys never collide
    tools: tuple = ()  # (program, Debian package) the cross build needs besides BUILD_TOOLS

    @property
    def make_variables(self) -> list:
        return [f"ARCH={self.make_arch}"] + ([f"CROSS_COMPILE={self.cross_compile}"] if self.cross_compile else [])


# The x86 target is what the lab always built: its recipe and single fragment keep its cache key as it was.
TARGETS = {
    X86_64.name: Target(X86_64, "x86_64", "", "bzImage", "arch/x86/boot/bzImage", (CONFIG_FRAGMENT,), RECIPE),
    ARM64.name: Target(ARM64, "arm64", "aarch64-linux-gnu-", "Image", "arch/arm64/boot/Image",
                       (CONFIG_FRAGMENT, ARM64_FRAGMENT), ARM64_RECIPE,
                       (("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
                        ("aarch64-linux-gnu-ld", "binutils-aarch64-linux-gnu"))),
}


def target_of(arch: "GuestArch | str" = X86_64) -> Target:
    return TARGETS[guest_arch(arch).name if isinstance(arch, str) else arch.name]

# program -> Debian package, for the one-line hint when something is missing.
BUILD_TOOLS = {
    "make": "make", "gcc": "gcc", "ld": "binutils", "flex": "flex", "bison": "bison", "bc": "bc",
    "pahole": "dwarves", "patch": "patch", "xz": "xz-utils", "tar": "tar", "perl": "perl",
    "dpkg-deb": "dpkg", "nice": "coreutils",
}
BUILD_HEADERS = {"/usr/include/libelf.h": "libelf-dev", "/usr/include/openssl/opensslv.h": "libssl-dev"}


@dataclass(frozen=True)
class BuiltKernel:
    vmlinuz: Path
    config: Path
    key: str
    source_version: str  # Debian version of linux-source-*, e.g. 7.2.13-1
    patches: tuple  # "<series>/<file name>", in the order applied
    series: tuple = ()  # the series' names, in the order applied
    arch: str = X86_64.name  # builds from before the arm64 target were all x86


def log(message: str) -> None:
    print(f"dmabuf-top kernel: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs and the cache key


def patch_series(series_dir: Path) -> list:
    """One series' *.patch files in the order they apply (their names sort that way)."""
    return sorted(Path(series_dir).glob("*.patch"))


def kernel_patches(series: Sequence[str], series_root: Path = SERIES_DIR) -> list:
    """Every patch of the named series, series by series in the order given."""
    patches = []
    for name in series:
        found = patch_series(Path(series_root) / name)
        if not found:
            raise DmabufTopError(f"no patch series {name!r}: {Path(series_root) / name} holds no *.patch")
        patches.extend(found)
    return patches


def series_of(kernel: str) -> tuple:
    try:
        return KERNELS[kernel]
    except KeyError:
        raise DmabufTopError(f"no lab kernel named {kernel!r}: choose one of {', '.join(KERNELS)}") from None


def patch_label(patch: Path) -> str:
    """<series>/<file>: a patch's name is unique only within its series."""
    return f"{patch.parent.name}/{patch.name}"


def _fragment_list(fragments) -> list:
    return [fragments] if isinstance(fragments, Path) else list(fragments)


def build_key(source_version: str, patches: Sequence[Path], fragments, recipe: str = RECIPE) -> str:
    """What decides the image: any change to these builds a new one. `fragments` is one path or several
    (in the order merged); one fragment hashes exactly as before the arm64 target, so x86 keys stay."""
    digest = hashlib.sha256()
    for part in (recipe, source_version, *[f.read_bytes() for f in _fragment_list(fragments)],
                 *[item for p in patches for item in (patch_label(p), p.read_bytes())]):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def inputs_digest(patches: Sequence[Path], fragments, recipe: str = RECIPE) -> str:
    """The key without the source version: what a cached build must match to be current."""
    return build_key("", patches, fragments, recipe)


def patched_dir(cache_dir: Optional[Path] = None) -> Path:
    return fetch.cache_root(cache_dir) / "patched"


def cached_build(cache_dir: Optional[Path] = None, series: Sequence[str] = KERNELS[DEFAULT_KERNEL],
                 series_root: Path = SERIES_DIR, fragment: Optional[Path] = None,
                 arch: GuestArch = X86_64) -> Optional[BuiltKernel]:
    """The `arch` kernel already built from the current patches of `series` and its fragments, if any
    (no network). `fragment` replaces the target's fragments (tests)."""
    root = patched_dir(cache_dir)
    if not root.is_dir():
        return None
    target = target_of(arch)
    wanted = inputs_digest(kernel_patches(series, series_root), fragment or target.fragments, target.recipe)
    found = []
    for entry in root.iterdir():
        built = _read_manifest(entry)
        if built is not None and built[1] == wanted:
            found.append(built[0])
    found.sort(key=lambda k: k.vmlinuz.stat().st_mtime, reverse=True)
    return found[0] if found else None


def _read_manifest(directory: Path):
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    vmlinuz = directory / "vmlinuz"
    if not vmlinuz.is_file():
        return None
    kernel = BuiltKernel(vmlinuz, directory / "config", manifest["key"], manifest["source_version"],
                         tuple(manifest["patches"]), tuple(manifest.get("series", ())),
                         manifest.get("arch", X86_64.name))
    return kernel, manifest.get("inputs")


# ---------------------------------------------------------------- fetch: the matching source


def source_package(kernel_version: str) -> str:
    """linux-source-<major>.<minor> for a kernel version such as 7.2.13+deb14."""
    match = re.match(r"(\d+)\.(\d+)", kernel_version)
    if not match:
        raise DmabufTopError(f"cannot tell the source package of kernel version {kernel_version!r}")
    return f"linux-source-{match.group(1)}.{match.group(2)}"


def package_version(show_output: str) -> Optional[str]:
    """The Version field of the first stanza of `apt-cache show`."""
    match = re.search(r"^Version: (\S+)$", show_output, re.MULTILINE)
    return match.group(1) if match else None


def resolve_source(apt: fetch.PrivateApt, lab: fetch.Kernel, flavour: str = fetch.DEFAULT_FLAVOUR) -> tuple:
    """(package, Debian version) of the source the lab kernel was built from.

    The binary package's version (e.g. 7.2.13-1) is the source's: both come from one
    upload of Debian's linux package."""
    def show(package):
        try:
            return apt.run("apt-cache", "show", package)
        except DmabufTopError:
            return ""

    binary = fetch.binary_package(lab.version, flavour)
    version = package_version(show(binary))
    if version is None:
        apt.update()
        version = package_version(show(binary))
    if version is None:
        raise DmabufTopError(
            f"the archive no longer lists {binary}, the lab kernel's package, so its source version is "
            "unknown: run 'dmabuf-top vm --refresh --fetch-only' to move the lab to the archive's kernel")
    return source_package(lab.version), version


def fetch_source(apt: fetch.PrivateApt, package: str, version: str, cache_dir: Optional[Path]) -> Path:
    debs = fetch.cache_root(cache_dir) / "source-debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = debs / f"{package}_{version}_all.deb"
    if wanted.is_file():
        return wanted
    with tempfile.TemporaryDirectory(dir=debs, prefix=".fetch-") as work:
        def download():
            apt.run("apt-get", "download", f"{package}={version}", cwd=Path(work))
            return next(Path(work).glob(f"{package}_*.deb"))

        try:
            deb = download()
        except DmabufTopError:
            apt.update()
            try:
                deb = download()
            except DmabufTopError as error:
                raise DmabufTopError(
                    f"cannot download {package} {version} to match the lab kernel ({error}); if the archive "
                    "moved on, run 'dmabuf-top vm --refresh --fetch-only' and build again") from None
        deb.rename(wanted)
    return wanted


# ---------------------------------------------------------------- unpack and patch


def unpack_source(deb: Path, package: str, into: Path) -> Path:
    """<into>/<package>: the kernel tree out of the .tar.xz inside the .deb, unpacked once."""
    tree = into / package
    if (tree / ".dmabuf-top-unpacked").is_file():
        return tree
    into.mkdir(parents=True, exist_ok=True)
    if tree.exists():
        shutil.rmtree(tree)
    with tempfile.TemporaryDirectory(dir=into, prefix=".unpack-") as work:
        work = Path(work)
        member = f"./usr/src/{package}.tar.xz"
        with open(work / "source.tar.xz", "wb") as tarball:
            fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            pick = subprocess.run(["tar", "-xO", member], stdin=fsys.stdout, stdout=tarball, stderr=subprocess.PIPE)
            fsys.stdout.close()
            if fsys.wait() != 0 or pick.returncode != 0:
                raise DmabufTopError(f"{deb.name} holds no {member}: {pick.stderr.decode().strip()}")
        _run(["tar", "-xJf", "source.tar.xz"], cwd=work, what="unpacking the kernel source")
        (work / package / ".dmabuf-top-unpacked").touch()
        (work / package).rename(tree)
    return tree


def apply_series(tree: Path, patches: Sequence[Path]) -> list:
    """Make `tree` carry exactly `patches`, reversing what a different set applied before.

    Copies of the applied patches live in the tree, so they can be reversed even after
    their files in kernel/series/ changed. Patches the two sets share at their start stay
    applied (their files keep their times, so make does not recompile them: adding a series
    on top costs only what it touches). Returns the names of the patches applied now."""
    applied_dir = tree / ".dmabuf-top-applied"
    applied = sorted(applied_dir.glob("*.patch")) if applied_dir.is_dir() else []
    wanted = [p.read_bytes() for p in patches]
    kept = 0
    while kept < min(len(applied), len(patches)) and applied[kept].read_bytes() == wanted[kept]:
        kept += 1
    if kept == len(applied) == len(patches):
        return []
    for old in reversed(applied[kept:]):
        _patch(tree, old, reverse=True)
        old.unlink()
    applied_dir.mkdir(exist_ok=True)
    for index, new in enumerate(patches[kept:], start=kept):
        _patch(tree, new)
        # The index keeps the order even if two series use the same names.
        shutil.copyfile(new, applied_dir / f"{index:04d}-{new.parent.name}-{new.name}")
    return [p.name for p in patches[kept:]]


def _patch(tree: Path, patch_file: Path, reverse: bool = False) -> None:
    args = ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", str(patch_file)]
    if reverse:
        args.insert(1, "--reverse")
    result = subprocess.run(args, cwd=tree, capture_output=True, text=True)
    if result.returncode != 0:
        verb = "reverse" if reverse else "apply"
        detail = " | ".join(line for line in result.stdout.splitlines() if "FAILED" in line or "rej" in line)
        raise DmabufTopError(f"cannot {verb} {patch_file.name} on {tree.name}: {detail or result.stdout.strip()}")


# ---------------------------------------------------------------- config and build


def fragment_options(fragments) -> dict:
    """The options the fragments ask for, merged in order (a later line wins, as in Kconfig)."""
    options = {}
    for fragment in _fragment_list(fragments):
        options.update(read_kconfig(fragment))
    return options


def merged_fragment(fragments, into: Path) -> Path:
    """One file for KCONFIG_ALLCONFIG (which takes one): the fragments in order, each under its name."""
    fragments = _fragment_list(fragments)
    if len(fragments) == 1:
        return fragments[0]
    into.write_text("".join(f"# ---- {f.name}\n{f.read_text()}\n" for f in fragments))
    return into


def unmet_options(wanted: dict, got: dict) -> list:
    """Fragment options the configured kernel does not have as asked (unmet dependencies, typos)."""
    return [f"CONFIG_{name}={value} (got {got.get(name, 'nothing')})"
            for name, value in wanted.items() if got.get(name, "n") != value]


def configure(tree: Path, fragments, build_log: Path, target: Optional[Target] = None) -> Path:
    target = target or TARGETS[X86_64.name]
    fragments = _fragment_list(fragments)
    allconfig = merged_fragment(fragments, tree / ".dmabuf-top-allconfig")
    _make(tree, ["KCONFIG_ALLCONFIG=" + str(allconfig), "allnoconfig"], build_log, jobs=1, target=target)
    config = tree / ".config"
    missing = unmet_options(fragment_options(fragments), read_kconfig(config))
    if missing:
        names = " + ".join(f.name for f in fragments)
        raise DmabufTopError(f"{names} asks for options the kernel did not take: {'; '.join(missing)}")
    return config


def make_command(targets: Sequence[str], jobs: int, target: Optional[Target] = None) -> list:
    # Other work shares the machine's cores: the compiler runs at the lowest priority.
    target = target or TARGETS[X86_64.name]
    return ["nice", "-n", "19", "make", f"-j{jobs}", *target.make_variables, *targets]


def _make(tree: Path, targets: Sequence[str], build_log: Path, jobs: int, heartbeat: Optional[Callable] = None,
          target: Optional[Target] = None):
    args = make_command(targets, jobs, target)
    with open(build_log, "ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        process = subprocess.Popen(args, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                process.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                if heartbeat:
                    heartbeat()
    if process.returncode != 0:
        raise DmabufTopError(f"make {' '.join(targets)} failed: {_last_error(build_log)} (full log: {build_log})")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _last_error(build_log: Path) -> str:
    lines = build_log.read_text(errors="replace").splitlines()
    errors = [line.strip() for line in lines if "error" in line.lower() and "Error " not in line]
    return (errors or [line.strip() for line in lines[-3:]] or ["no output"])[-1][:300]


def _run(args, cwd, what):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DmabufTopError(f"{what} failed: {(result.stderr or result.stdout).strip()[-300:]}")


def require_build_tools(target: Optional[Target] = None) -> None:
    target = target or TARGETS[X86_64.name]
    tools = {**BUILD_TOOLS, **dict(target.tools)}
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
                     | {pkg for path, pkg in BUILD_HEADERS.items() if not os.path.exists(path)})
    if missing:
        deps = "kernel" if target.arch == X86_64 else f"kernel-{target.arch.name}"
        raise MissingDependency(
            f"building the {target.arch.name} lab kernel needs {', '.join(missing)}: install with "
            f"'apt-get install {' '.join(missing)}' (or 'bash .ci/install-deps {deps}' as root)")


def source_work_dir(version: str, arch: GuestArch = X86_64, cache_dir: Optional[Path] = None) -> Path:
    """Where one architecture's source tree of `version` is unpacked, patched and built (x86 keeps its place)."""
    name = version if arch == X86_64 else f"{version}-{arch.name}"
    return fetch.cache_root(cache_dir) / "kernel-src" / name


# ---------------------------------------------------------------- the whole build


@contextlib.contextmanager
def _tree_lock(work: Path):
    """One build at a time in a source tree: a second waits (patching under a running make breaks both)."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build in {work}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_kernel(cache_dir: Optional[Path] = None, *, jobs: int = DEFAULT_JOBS,
                 series: Sequence[str] = KERNELS[DEFAULT_KERNEL], series_root: Path = SERIES_DIR,
                 fragment: Optional[Path] = None, lab: Optional[fetch.Kernel] = None,
                 arch: GuestArch = X86_64) -> BuiltKernel:
    """Build (or reuse) the `arch` lab kernel carrying `series` and return where it is.

    The source is Debian's of the version of that architecture's lab kernel (`lab`, default the cached
    Debian kernel of `arch`); `fragment` replaces the target's fragments (tests)."""
    started = time.monotonic()
    target = target_of(arch)
    fragments = _fragment_list(fragment) if fragment is not None else list(target.fragments)
    series = tuple(series)
    patches = kernel_patches(series, series_root)
    lab = lab or fetch.fetch_kernel(cache_dir=cache_dir, arch=target.arch)
    # The binary package that names the source version is the architecture's own; the source .deb
    # itself is architecture-independent, fetched through the machine's own private apt.
    arch_apt = fetch._private_apt(cache_dir, fetch.DEFAULT_SUITE, fetch.SYSTEM_SOURCES, target.arch)
    package, version = resolve_source(arch_apt, lab, target.arch.flavour)
    key = build_key(version, patches, fragments, target.recipe)
    destination = patched_dir(cache_dir) / key
    if (destination / "vmlinuz").is_file():
        log(f"up to date: {target.arch.name} {package} {version} with {', '.join(series)} "
            f"({len(patches)} patch(es)), key {key}")
        return _read_manifest(destination)[0]
    require_build_tools(target)

    log(f"fetch: {package} {version} (the source of the {target.arch.name} lab kernel {lab.version})")
    apt = arch_apt if target.arch == X86_64 else fetch._private_apt(cache_dir, fetch.DEFAULT_SUITE,
                                                                     fetch.SYSTEM_SOURCES)
    deb = fetch_source(apt, package, version, cache_dir)

    work = source_work_dir(version, target.arch, cache_dir)
    with _tree_lock(work):
        if (destination / "vmlinuz").is_file():  # built by the build we waited for
            return _read_manifest(destination)[0]
        log(f"unpack: {deb.name} -> {work / package}")
        tree = unpack_source(deb, package, work)

        changed = apply_series(tree, patches)
        log(f"patch: {', '.join(patch_label(p) for p in patches) or 'no patches'}"
            + ("" if changed or not patches else " (already applied)"))

        build_log = work / "build.log"
        build_log.write_text("")
        log(f"config: {' '.join(target.make_variables)} allnoconfig + {' + '.join(f.name for f in fragments)} "
            f"({len(fragment_options(fragments))} options)")
        config = configure(tree, fragments, build_log, target)

        log(f"build: make -j{jobs} {target.image} under nice (log: {build_log}; load average {_load()})")
        build_started = time.monotonic()
        cpu_before = _children_cpu_seconds()

        def heartbeat():
            compiled = sum(1 for line in build_log.read_text(errors="replace").splitlines() if line.startswith("  CC"))
            log(f"build: {compiled} files compiled, {(time.monotonic() - build_started) / 60:.1f} min")

        _make(tree, [target.image], build_log, jobs, heartbeat, target)

        staged = Path(tempfile.mkdtemp(dir=patched_dir(cache_dir).parent, prefix=".build-"))
        shutil.copyfile(tree / target.image_path, staged / "vmlinuz")
        shutil.copyfile(config, staged / "config")
        manifest = {"key": key, "arch": target.arch.name, "source_version": version, "source_package": package,
                    "series": list(series), "patches": [patch_label(p) for p in patches],
                    "inputs": inputs_digest(patches, fragments, target.recipe),
                    "lab_kernel": lab.version, "build_seconds": round(time.monotonic() - build_started),
                    "total_seconds": round(time.monotonic() - started),
                    # The compiler's own CPU time: what the build costs whatever else shares the cores
                    # (make runs niced, so a busy machine stretches the wall clock, not this).
                    "cpu_seconds": round(_children_cpu_seconds() - cpu_before), "jobs": jobs, "cpus": os.cpu_count()}
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            shutil.rmtree(staged)
        else:
            staged.rename(destination)
        log(f"done in {manifest['total_seconds'] / 60:.1f} min (make {manifest['build_seconds'] / 60:.1f} min, "
            f"compiler CPU {manifest['cpu_seconds'] / 60:.1f} min over {jobs} jobs; load average {_load()}): "
            f"{destination / 'vmlinuz'}")
        return _read_manifest(destination)[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmabuf_top.kernel.build",
                                     description="Build a patched lab kernel into the cache and print its path.")
    parser.add_argument("--cached", action="store_true",
                        help="only print the path of an already built kernel for the current patches; exit 1 if none")
    parser.add_argument("--kernel", choices=sorted(KERNELS), default=DEFAULT_KERNEL,
                        help="which kernel: " + "; ".join(f"{name} = {' + '.join(series)}"
                                                          for name, series in KERNELS.items())
                        + f" (default {DEFAULT_KERNEL})")
    parser.add_argument("--arch", choices=sorted(TARGETS), default=X86_64.name,
                        help="the guest architecture to build for (arm64 cross-compiles with aarch64-linux-gnu-gcc)")
    parser.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS)
    args = parser.parse_args(argv)
    series = series_of(args.kernel)
    arch = guest_arch(args.arch)
    try:
        built = (cached_build(series=series, arch=arch) if args.cached
                 else build_kernel(jobs=args.jobs, series=series, arch=arch))
    except DmabufTopError as error:
        log(str(error))
        return error.exit_code
    if built is None:
        make_target = "kernel" if arch == X86_64 else f"kernel-{arch.name}"
        flags = (["--kernel", args.kernel] if args.kernel != DEFAULT_KERNEL else []) + (
            ["--arch", arch.name] if arch != X86_64 else [])
        log(f"no {args.kernel} {arch.name} kernel built from the current patches in the cache: "
            + (f"run '{parser.prog} {' '.join(flags)}'" if args.kernel != DEFAULT_KERNEL
               else f"run 'make {make_target}'"))
        return 1
    print(built.vmlinuz)
    return 0


if __name__ == "__main__":
    sys.exit(main())

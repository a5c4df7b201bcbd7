"""Fetch a test kernel from Debian's own archive and keep it in a local cache.

The kernel we boot is Debian's *cloud* flavour: unlike the generic amd64
flavour it builds ext4, NVMe and virtio-fs into the image, so the guest needs no
modules at all, and it keeps everything the lab is for (dma-buf heaps, udmabuf,
kprobes, BTF, the dma_buf tracepoints). Its version moves with the archive, so
it is resolved at run time, never written down here.

apt is pointed at a private state directory built from the machine's own
source definition with the suite switched to sid: the system's apt state is
never touched and no archive host name lives in this code.
"""
from __future__ import annotations

import functools
import gzip
import mmap
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from dmabuf_top.errors import DmabufTopError, MissingDependency

from .arch import X86_64, GuestArch, is_native

SYSTEM_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_FLAVOUR = "cloud-amd64"
DEFAULT_SUITE = "sid"


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel image and, when known, the config it was built with."""

    version: str
    vmlinuz: Path
    config: Optional[Path] = None
    # What `uname -r` will say in the guest, read from the image itself.
    release: str = ""


def bzimage_release(vmlinuz: Path) -> str:
    """The release string an x86 bzImage announces in its setup header ("" if none).

    The boot protocol keeps a pointer to it at 0x20e, relative to 0x200, behind
    the "HdrS" magic; this works for any self-built kernel too."""
    try:
        with open(vmlinuz, "rb") as image:
            header = image.read(0x1000)
            if header[0x202:0x206] != b"HdrS":
                return ""
            offset = int.from_bytes(header[0x20E:0x210], "little") + 0x200
            image.seek(offset)
            text = image.read(256).split(b"\0", 1)[0].decode("ascii", "replace")
    except OSError:
        return ""
    return text.split(" ", 1)[0]


LINUX_BANNER = b"Linux version "


def image_release(vmlinuz: Path) -> str:
    """The release of any kernel image we boot: an x86 bzImage's header, else the banner in an
    uncompressed image (arm64's Image carries "Linux version <release> (...)" in its rodata)."""
    release = bzimage_release(vmlinuz)
    if release:
        return release
    try:
        with open(vmlinuz, "rb") as image, mmap.mmap(image.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(LINUX_BANNER)
            while at >= 0:
                text = data[at + len(LINUX_BANNER):at + len(LINUX_BANNER) + 128].split(b" ", 1)[0]
                # The format string "Linux version %s" is in the image too: skip it.
                if text and text[:1].isdigit():
                    return text.decode("ascii", "replace")
                at = data.find(LINUX_BANNER, at + 1)
    except (OSError, ValueError):
        pass
    return ""


def uncompressed_arm64_image(data: bytes) -> bytes:
    """Debian's arm64 vmlinuz as QEMU's -kernel takes it: a plain Image, a gzip of one, or an EFI
    zboot image (a PE stub with "zimg" at offset 4, the payload offset and size at 8 and 12, the
    compression name at 24)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[4:8] == b"zimg":
        offset = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        method = data[24:32].split(b"\0", 1)[0].decode("ascii", "replace")
        if method != "gzip":
            raise DmabufTopError(f"the arm64 kernel is an EFI zboot image compressed with {method}: "
                                 "only gzip is unpacked here; pass --kernel with an uncompressed Image")
        return gzip.decompress(data[offset:offset + size])
    return data


def cache_root(cache_dir: Optional[Path] = None) -> Path:
    """Where dmabuf-top keeps what it downloads: argument, then $DMABUF_TOP_CACHE,
    then the XDG cache directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("DMABUF_TOP_CACHE"):
        return Path(os.environ["DMABUF_TOP_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dmabuf-top"


def kernels_dir(cache_dir: Optional[Path] = None, arch: GuestArch = X86_64) -> Path:
    # amd64 keeps the directory it always had; other architectures get their own.
    name = "kernels" if arch == X86_64 else f"kernels-{arch.debian}"
    return cache_root(cache_dir) / name


# ---------------------------------------------------------------- apt sources


def derive_apt_source(sources_text: str, suite: str = DEFAULT_SUITE, architecture: Optional[str] = None) -> str:
    """Turn the machine's deb822 source definition into one stanza for `suite`.

    The first stanza offering binary packages from the main archive is kept
    (security and update suites have no kernels of another release), with its
    URIs and Signed-By untouched so the download is verified against the
    keyring the machine already trusts. `architecture` (a Debian name) asks for
    that architecture's packages instead of the machine's own.
    """
    for stanza in re.split(r"\n\s*\n", sources_text):
        fields = _deb822_fields(stanza)
        if "deb" not in fields.get("Types", "").split():
            continue
        if fields.get("Enabled", "yes").lower() == "no":
            continue
        suites = fields.get("Suites", "").split()
        if not suites or any("security" in s for s in suites):
            continue
        fields["Types"] = "deb"
        if architecture:
            fields["Architectures"] = architecture
        fields["Suites"] = suite
        fields["Components"] = "main"
        return "".join(f"{key}: {value}\n" for key, value in fields.items())
    raise DmabufTopError(
        "found no Debian archive in the apt sources to fetch a kernel from; "
        "pass --kernel PATH to boot a kernel you already have"
    )


def _deb822_fields(stanza: str) -> dict:
    """Parse one deb822 stanza; continuation lines (leading space) join the field above."""
    fields: dict = {}
    last = None
    for line in stanza.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and last:
            fields[last] += "\n" + line
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            fields[last] = value.strip()
    return fields


class PrivateApt:
    """apt-get/apt-cache run against a private source list and state directory."""

    def __init__(self, state_dir: Path, source_stanza: str, architecture: Optional[str] = None):
        self.state_dir = state_dir
        parts = state_dir / "sources.list.d"
        for sub in (parts, state_dir / "lists" / "partial", state_dir / "cache" / "archives" / "partial"):
            sub.mkdir(parents=True, exist_ok=True)
        (parts / "dmabuf-top.sources").write_text(source_stanza)
        self.options = [
            "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={state_dir / 'lists'}",
            "-o", f"Dir::Cache={state_dir / 'cache'}",
            # The private directories belong to the caller, so apt's _apt user cannot
            # write them; fetch as the caller instead of warning about it.
            "-o", "APT::Sandbox::User=" + _current_user(),
            "-o", "Debug::NoLocking=1",
            "-q",
        ]
        if architecture:
            # Resolve and download that architecture's packages only (they are unpacked, never installed).
            self.options += ["-o", f"APT::Architecture={architecture}", "-o", f"APT::Architectures={architecture}"]

    def run(self, tool: str, *args: str, cwd: Optional[Path] = None) -> str:
        program = _require_program(tool, "apt")
        result = subprocess.run(
            [program, *self.options, *args], cwd=cwd, capture_output=True, text=True
        )
        if result.returncode != 0:
            reason = _last_error_line(result.stderr) or f"exit code {result.returncode}"
            raise DmabufTopError(f"{tool} {args[0]} failed: {reason}")
        return result.stdout

    def update(self) -> None:
        self.run("apt-get", "update")

    def package_names(self, pattern: str) -> list:
        out = self.run("apt-cache", "search", "--names-only", pattern)
        return [line.split(" ", 1)[0] for line in out.splitlines() if line.strip()]

    def download(self, package: str, into: Path) -> Path:
        self.run("apt-get", "download", package, cwd=into)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if not debs:
            raise DmabufTopError(f"apt-get download {package} left no .deb behind")
        return debs[-1]


def _current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "Err"))]
    return (errors or lines or [""])[-1]


def _require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependency(f"{name} not found: fetching a kernel needs Debian's apt tools "
                                f"(`apt-get install {package}`), or pass --kernel PATH")
    return path


# ---------------------------------------------------------------- versions


def binary_package(version: str, flavour: str = DEFAULT_FLAVOUR) -> str:
    return f"linux-binary-{version}-{flavour}"


def base_package(version: str, flavour: str = DEFAULT_FLAVOUR) -> str:
    # linux-base-<ver>-<flavour> carries the config next to the (empty) System.map.
    return f"linux-base-{version}-{flavour}"


def versions_from_names(names: Iterable[str], flavour: str = DEFAULT_FLAVOUR) -> list:
    """Kernel versions offered as `linux-binary-<ver>-<flavour>`, newest first.

    The unsigned twin packages and other flavours that share the prefix are ignored."""
    pattern = re.compile(rf"^linux-binary-(\d[^\s]*?)-{re.escape(flavour)}$")
    found = {m.group(1) for m in map(pattern.match, names) if m}
    return sorted(found, key=functools.cmp_to_key(compare_versions), reverse=True)


def compare_versions(a: str, b: str) -> int:
    """Debian version order (the part that kernel versions use: digits, letters, ~ + .)."""
    if a == b:
        return 0
    return _compare_fragment(a, b)


def _compare_fragment(a: str, b: str) -> int:
    # dpkg's algorithm: alternate non-digit and digit runs; '~' sorts before everything.
    def order(ch: str) -> int:
        if ch == "~":
            return -1
        if ch.isalpha():
            return ord(ch)
        return ord(ch) + 256

    while a or b:
        a_text = re.match(r"\D*", a).group(0)
        b_text = re.match(r"\D*", b).group(0)
        for i in range(max(len(a_text), len(b_text))):
            ca = order(a_text[i]) if i < len(a_text) else 0
            cb = order(b_text[i]) if i < len(b_text) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(a_text):], b[len(b_text):]
        a_num = re.match(r"\d*", a).group(0)
        b_num = re.match(r"\d*", b).group(0)
        if int(a_num or 0) != int(b_num or 0):
            return -1 if int(a_num or 0) < int(b_num or 0) else 1
        a, b = a[len(a_num):], b[len(b_num):]
    return 0


# ---------------------------------------------------------------- the cache


def cached_kernels(cache_dir: Optional[Path] = None, arch: GuestArch = X86_64) -> list:
    """Kernels already in the cache, newest first."""
    root = kernels_dir(cache_dir, arch)
    if not root.is_dir():
        return []
    kernels = [_kernel_in(entry) for entry in root.iterdir() if (entry / "vmlinuz").is_file()]
    return sorted(kernels, key=functools.cmp_to_key(lambda x, y: compare_versions(x.version, y.version)), reverse=True)


def _kernel_in(directory: Path) -> Kernel:
    config = directory / "config"
    vmlinuz = directory / "vmlinuz"
    return Kernel(directory.name, vmlinuz, config if config.is_file() else None, image_release(vmlinuz))


def fetch_kernel(
    version: Optional[str] = None,
    *,
    cache_dir: Optional[Path] = None,
    flavour: Optional[str] = None,
    refresh: bool = False,
    suite: str = DEFAULT_SUITE,
    sources_file: Path = SYSTEM_SOURCES,
    arch: GuestArch = X86_64,
) -> Kernel:
    """Return a cached Debian kernel, downloading it first if needed.

    Without `version`, the newest cached kernel is used as is (no network), so
    a machine that fetched once works offline; `refresh=True` asks the archive
    for its newest version instead. `arch` picks the architecture (default
    amd64) and with it the flavour (cloud-<arch>) unless `flavour` is given.
    """
    flavour = flavour or arch.flavour
    if version is not None:
        cached = kernels_dir(cache_dir, arch) / version
        if (cached / "vmlinuz").is_file():
            return _kernel_in(cached)
    elif not refresh:
        kernels = cached_kernels(cache_dir, arch)
        if kernels:
            return kernels[0]

    apt = _private_apt(cache_dir, suite, sources_file, arch)
    apt.update()
    if version is None:
        offered = versions_from_names(apt.package_names(rf"^linux-binary-.*-{flavour}$"), flavour)
        if not offered:
            raise DmabufTopError(
                f"the {suite} archive offers no linux-binary-*-{flavour} package; "
                "pass --kernel PATH to boot a kernel you already have"
            )
        version = offered[0]
        cached = kernels_dir(cache_dir, arch) / version
        if (cached / "vmlinuz").is_file():
            return _kernel_in(cached)
    return _download_and_unpack(apt, version, flavour, cache_dir, arch)


def foreign_apt(arch: GuestArch, cache_dir: Optional[Path] = None, suite: str = DEFAULT_SUITE,
                sources_file: Path = SYSTEM_SOURCES) -> PrivateApt:
    """A private apt for `arch`'s packages (its own state directory, the machine's archive)."""
    return _private_apt(cache_dir, suite, sources_file, arch)


def _private_apt(cache_dir: Optional[Path], suite: str, sources_file: Path, arch: GuestArch = X86_64) -> PrivateApt:
    try:
        sources_text = Path(sources_file).read_text()
    except OSError as error:
        raise MissingDependency(
            f"cannot read {sources_file} ({error.strerror}): fetching a kernel needs a Debian "
            "apt setup; pass --kernel PATH instead"
        ) from None
    # amd64 keeps the state directory it always had; the machine's own architecture needs no override.
    state = cache_root(cache_dir) / ("apt" if arch == X86_64 else f"apt-{arch.debian}")
    architecture = None if is_native(arch) else arch.debian
    return PrivateApt(state, derive_apt_source(sources_text, suite, architecture), architecture)


def _download_and_unpack(apt: PrivateApt, version: str, flavour: str, cache_dir, arch: GuestArch = X86_64) -> Kernel:
    dpkg_deb = _require_program("dpkg-deb", "dpkg")
    destination = kernels_dir(cache_dir, arch) / version
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Unpack next to the final place and rename: a half-finished download never
    # looks like a cached kernel.
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".fetch-") as work:
        work = Path(work)
        tree = work / "tree"
        for package in (binary_package(version, flavour), base_package(version, flavour)):
            deb = apt.download(package, work)
            subprocess.run([dpkg_deb, "-x", str(deb), str(tree)], check=True)
        module_dir = tree / "usr" / "lib" / "modules" / f"{version}-{flavour}"
        vmlinuz = _first_existing(module_dir / "vmlinuz", tree / "boot" / f"vmlinuz-{version}-{flavour}")
        config = _first_existing(module_dir / "config", tree / "boot" / f"config-{version}-{flavour}")
        if vmlinuz is None:
            raise DmabufTopError(f"{binary_package(version, flavour)} holds no vmlinuz where expected")
        staged = work / "kernel"
        staged.mkdir()
        if arch == X86_64:
            shutil.move(str(vmlinuz), staged / "vmlinuz")
        else:  # QEMU's arm64 loader wants the plain Image
            (staged / "vmlinuz").write_bytes(uncompressed_arm64_image(vmlinuz.read_bytes()))
        if config is not None:
            shutil.move(str(config), staged / "config")
        if destination.exists():  # another process won the race; keep theirs
            return _kernel_in(destination)
        staged.rename(destination)
    return _kernel_in(destination)


def _first_existing(*paths: Path) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)

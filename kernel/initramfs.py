"""The lab guest's initramfs: a static busybox and kernel/init.sh, nothing else.

The image is written by Python (cpio "newc" is a simple format) rather than by
the cpio tool, so it can carry /dev/console without root and comes out
byte-identical for identical inputs: it is cached under its content hash.

What changes from run to run (the command, its environment, which shares
exist) is a second, tiny cpio archive appended to the cached one. The kernel
unpacks concatenated archives in order, so one boot sees both.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Mapping, Optional, Sequence

from dmabuf_top.errors import DmabufTopError, MissingDependency

from .fetch import cache_root

# Bump when the layout written below changes, so stale cached images are not reused.
LAYOUT_VERSION = "1"

ROOT_TAG = "dmabuf-top-root"
RESULTS_TAG = "dmabuf-top-results"
SOURCE_TAG = "dmabuf-top-source"
OUTPUT_PORT = "dmabuf-top.output"
STATUS_PORT = "dmabuf-top.status"


# ---------------------------------------------------------------- cpio newc


class CpioWriter:
    """Writes an uncompressed SVR4 "newc" cpio archive, owner root, mtime 0."""

    def __init__(self):
        self._buffer = io.BytesIO()
        self._next_inode = 1

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"", inode=0)
        return self._buffer.getvalue()

    def _entry(self, name: str, mode: int, data: bytes, rdev=(0, 0), inode=None) -> None:
        encoded_name = name.lstrip("/").encode() + b"\0"
        if inode is None:
            inode, self._next_inode = self._next_inode, self._next_inode + 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded_name), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._write_padded(header + encoded_name)
        self._write_padded(data)

    def _write_padded(self, chunk: bytes) -> None:
        self._buffer.write(chunk)
        self._buffer.write(b"\0" * (-len(chunk) % 4))


# ---------------------------------------------------------------- base image


def find_static_busybox() -> Path:
    """The busybox to run as the guest's shell; it must not need the host's libc."""
    candidates = [shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"]
    for candidate in filter(None, candidates):
        path = Path(candidate).resolve()
        if path.is_file() and is_static_elf(path):
            return path
    raise MissingDependency(
        "no statically linked busybox found: the lab's initramfs needs it (`apt-get install busybox-static`)"
    )


def is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF (any machine) without a program interpreter (PT_INTERP)."""
    with open(path, "rb") as binary:
        header = binary.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # ELFCLASS64 only
            return False
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        binary.seek(phoff)
        table = binary.read(phentsize * phnum)
    pt_interp = 3
    return all(
        int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") != pt_interp for i in range(phnum)
    )


def init_script() -> bytes:
    return resources.files(__package__).joinpath("init.sh").read_bytes()


def base_archive(busybox: Path, init: bytes) -> bytes:
    """The uncompressed cpio of the fixed part of the initramfs."""
    cpio = CpioWriter()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "job", "tmp", "mnt"):
        cpio.directory(directory)
    # The kernel opens /dev/console for PID 1 before any devtmpfs exists.
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", init, 0o755)
    return cpio.finish()


def build_base_initramfs(cache_dir: Optional[Path] = None, busybox: Optional[Path] = None) -> Path:
    """Build (or reuse) the gzip-compressed fixed initramfs; returns its cached path."""
    busybox = busybox or find_static_busybox()
    init = init_script()
    digest = hashlib.sha256()
    for part in (LAYOUT_VERSION.encode(), init, busybox.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    target = cache_root(cache_dir) / "initramfs" / f"base-{digest.hexdigest()[:16]}.cpio.gz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    compressed = gzip.compress(base_archive(busybox, init), compresslevel=6, mtime=0)
    staging = target.with_suffix(f".tmp{os.getpid()}")
    staging.write_bytes(compressed)
    staging.replace(target)
    return target


# ---------------------------------------------------------------- per-run job


# Host directories init.sh covers with a tmpfs in the guest (keep in step with it).
TMPFS_COVERED = ("/tmp", "/run", "/var/tmp")


@dataclass
class GuestJob:
    """What one boot runs; turned into /job/lab.env and /job/command.sh."""

    argv: Sequence[str]
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    home: str = "/root"
    results_path: Optional[str] = None
    scratch: bool = False
    # A guest of another architecture boots on a root of its own; the project's directory is then shared
    # read-only at this path (the same as the host's), so the command runs the host's checkout.
    source_path: Optional[str] = None

    @property
    def kept_path(self) -> str:
        """The working directory, if it lies where the guest mounts a tmpfs: init carries it through."""
        cwd = PurePosixPath(self.cwd)
        for covered in (*TMPFS_COVERED, f"{self.home}/.cache"):
            if cwd != PurePosixPath(covered) and PurePosixPath(covered) in cwd.parents:
                return self.cwd
        return ""

    def lab_env(self) -> str:
        values = {
            "LAB_ROOT_TAG": ROOT_TAG,
            "LAB_RESULTS_TAG": RESULTS_TAG if self.results_path else "",
            "LAB_RESULTS_PATH": self.results_path or "",
            "LAB_SOURCE_TAG": SOURCE_TAG if self.source_path else "",
            "LAB_SOURCE_PATH": self.source_path or "",
            "LAB_SCRATCH": "1" if self.scratch else "0",
            "LAB_HOME": self.home,
            "LAB_KEEP_PATH": self.kept_path,
        }
        return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())

    def command_script(self) -> str:
        if not self.argv:
            raise DmabufTopError("no command given to run in the guest")
        lines = ["# written by dmabuf-top for one guest run"]
        for key, value in self.env.items():
            if not _is_env_name(key):
                raise DmabufTopError(f"cannot pass {key!r} to the guest: not a valid environment variable name")
            lines.append(f"export {key}={shlex.quote(str(value))}")
        cwd = shlex.quote(self.cwd)
        lines.append(f'cd {cwd} || {{ echo "dmabuf-top-lab: cannot enter "{cwd} >&2; exit 126; }}')
        program = shlex.quote(self.argv[0])
        # Say it in our words (the shell's would name this script) and keep 127.
        lines.append(f'command -v {program} >/dev/null 2>&1 || '
                     f'{{ echo "dmabuf-top-lab: "{program}": command not found" >&2; exit 127; }}')
        lines.append("exec " + " ".join(shlex.quote(arg) for arg in self.argv))
        return "\n".join(lines) + "\n"

    def archive(self) -> bytes:
        cpio = CpioWriter()
        cpio.directory("job")
        cpio.file("job/lab.env", self.lab_env().encode())
        cpio.file("job/command.sh", self.command_script().encode())
        return cpio.finish()


def _is_env_name(name: str) -> bool:
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(c.isalnum() or c == "_" for c in name)


def write_initrd(base: Path, job: GuestJob, destination: Path) -> Path:
    """The initrd for one boot: the cached base image followed by the job archive."""
    with open(destination, "wb") as out:
        with open(base, "rb") as cached:
            shutil.copyfileobj(cached, out)
        # Concatenated members must start 4-byte aligned; gzip output has any length.
        out.write(b"\0" * (-out.tell() % 4))
        out.write(job.archive())
    return destination

"""The guest architectures the lab can boot, and what differs between them (names, QEMU, console)."""
from __future__ import annotations

import platform
from dataclasses import dataclass

from dmabuf_top.errors import DmabufTopError


@dataclass(frozen=True)
class GuestArch:
    name: str  # as `dmabuf-top vm --arch` spells it
    debian: str  # Debian's architecture name (packages, kernel flavours)
    machine: str  # platform.machine() on such a system
    wheel: str  # the platform suffix of its wheels on PyPI
    qemu: str  # the QEMU system emulator
    qemu_package: str  # the Debian package that ships it
    qemu_machine: str
    console: str  # the kernel's name for the first serial port of that machine

    @property
    def flavour(self) -> str:
        """Debian's cloud kernel flavour: ext4, NVMe and virtio-fs built in, no modules needed."""
        return f"cloud-{self.debian}"


X86_64 = GuestArch("x86_64", "amd64", "x86_64", "x86_64", "qemu-system-x86_64", "qemu-system-x86", "pc", "ttyS0")
ARM64 = GuestArch("arm64", "arm64", "aarch64", "aarch64", "qemu-system-aarch64", "qemu-system-arm", "virt", "ttyAMA0")
ARCHES = {arch.name: arch for arch in (X86_64, ARM64)}
ALIASES = {"amd64": "x86_64", "aarch64": "arm64"}


def guest_arch(name: str) -> GuestArch:
    key = ALIASES.get(name, name)
    if key not in ARCHES:
        raise DmabufTopError(f"no lab for architecture {name!r}: choose one of {', '.join(ARCHES)}")
    return ARCHES[key]


def host_arch() -> GuestArch:
    return guest_arch(platform.machine())


def is_native(arch: GuestArch) -> bool:
    """True when the guest can share the host's root filesystem (same architecture)."""
    return platform.machine() == arch.machine

"""What a lab kernel can do, read from the config it was built with.

The guest boots without modules, so only options built in (=y) count; an
option built as a module is reported as such, because "you have it, but as a
module" is the usual surprise with a self-built kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from dmabuf_top.errors import KernelLacks

from .arch import ARM64, X86_64, GuestArch

# Without these the lab cannot boot the kernel or hand back the command's result.
BOOT_NEEDS = {
    "DEVTMPFS": "device nodes in the guest",
    "VIRTIO_PCI": "virtio devices on PCI",
    "FUSE_FS": "virtio-fs (host root filesystem)",
    "VIRTIO_FS": "virtio-fs (host root filesystem)",
    "VIRTIO_CONSOLE": "the output and exit-status ports",
    "SERIAL_8250_CONSOLE": "the kernel console log",
    "BLK_DEV_NVME": "the NVMe scratch disk",
    "EXT4_FS": "the ext4 scratch filesystem",
}

# qemu's arm64 `virt` machine instead of a PC: a PL011 UART, the generic PCI host bridge, PSCI to power off.
ARM64_BOOT_NEEDS = {
    **{name: why for name, why in BOOT_NEEDS.items() if name != "SERIAL_8250_CONSOLE"},
    "SERIAL_AMBA_PL011_CONSOLE": "the kernel console log (ttyAMA0)",
    "PCI_HOST_GENERIC": "the PCI bus the lab's devices sit on",
    "ARM_PSCI_FW": "poweroff ending qemu",
}

# What dmabuf-top's own guest tests use.
DMABUF_NEEDS = {
    "DMA_SHARED_BUFFER": "dma-buf itself",
    "DMABUF_HEAPS": "dma-buf heaps",
    "DMABUF_HEAPS_SYSTEM": "/dev/dma_heap/system",
    "UDMABUF": "/dev/udmabuf",
    "BPF_SYSCALL": "BPF programs",
    "DEBUG_INFO_BTF": "/sys/kernel/btf/vmlinux (CO-RE relocation)",
    "KPROBES": "kprobes on dma_buf_export and friends",
    "DEBUG_FS": "/sys/kernel/debug/dma_buf/bufinfo",
    "FTRACE": "/sys/kernel/tracing",
}

# The arm64 lab adds the CMA heap: where camera and codec buffers come from on arm64 boards.
ARM64_DMABUF_NEEDS = {**DMABUF_NEEDS, "DMABUF_HEAPS_CMA": "the CMA heap (/dev/dma_heap/default_cma_region)"}


def boot_needs(arch: GuestArch = X86_64) -> dict:
    return ARM64_BOOT_NEEDS if arch == ARM64 else BOOT_NEEDS


def dmabuf_needs(arch: GuestArch = X86_64) -> dict:
    return ARM64_DMABUF_NEEDS if arch == ARM64 else DMABUF_NEEDS


def read_kconfig(path: Path) -> dict:
    """CONFIG_FOO=value lines as {"FOO": "value"}; "is not set" lines as "n"."""
    options = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line[len("CONFIG_"):].split("=", 1)
            options[name] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[len("# CONFIG_"):-len(" is not set")]] = "n"
    return options


def find_kernel_config(vmlinuz: Path) -> Optional[Path]:
    """The config of a kernel image, looked for where kernels usually leave it:
    beside the image (our cache, /usr/lib/modules/<rel>/), as /boot/config-<rel>,
    or at the top of a build tree (arch/x86/boot/bzImage -> .config)."""
    vmlinuz = Path(vmlinuz).resolve()
    name = vmlinuz.name
    candidates = [vmlinuz.parent / "config"]
    if name.startswith("vmlinuz-"):
        candidates.append(vmlinuz.parent / ("config-" + name[len("vmlinuz-"):]))
    candidates += [parent / ".config" for parent in list(vmlinuz.parents)[:4]]
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class FeatureReport:
    """Which of the wanted options a kernel has built in."""

    config: Optional[Path]
    present: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # (option, why, how it is set)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.missing

    def describe(self) -> str:
        if self.config is None:
            return "kernel config not found, so its features are unknown"
        if not self.missing:
            return f"kernel has all {len(self.present)} needed options built in"
        parts = [f"CONFIG_{name} ({why}) is {_how(setting)}" for name, why, setting in self.missing]
        return "kernel lacks: " + "; ".join(parts)


def _how(setting: Optional[str]) -> str:
    if setting == "m":
        return "a module, but the lab boots without modules"
    return "not set"


def check_features(
    config: Union[Path, Mapping[str, str], None],
    needs: Union[Mapping[str, str], Iterable[str]] = DMABUF_NEEDS,
) -> FeatureReport:
    """Compare a kernel config (a path or an already read mapping) with what is needed.

    `needs` maps option names (without CONFIG_) to why they are needed; a plain
    list of names works too."""
    if not isinstance(needs, Mapping):
        needs = {name: "needed" for name in needs}
    if config is None:
        return FeatureReport(None)
    options = config if isinstance(config, Mapping) else read_kconfig(config)
    report = FeatureReport(config if isinstance(config, Path) else Path("<given>"))
    for name, why in needs.items():
        name = name[len("CONFIG_"):] if name.startswith("CONFIG_") else name
        if options.get(name) == "y":
            report.present.append(name)
        else:
            report.missing.append((name, why, options.get(name)))
    return report


def require_features(config, needs=DMABUF_NEEDS) -> FeatureReport:
    """check_features, raising KernelLacks (one line) when something is missing."""
    report = check_features(config, needs)
    if report.config is not None and report.missing:
        raise KernelLacks(report.describe())
    return report

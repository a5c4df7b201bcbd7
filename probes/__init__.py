"""Kernel side: one *.bpf.c per concern, with the Python that loads and decodes it beside it."""
import platform
from pathlib import Path

from ..errors import BpfError

PROBES_DIR = Path(__file__).resolve().parent

# platform.machine() -> the architecture name the objects are built for (the kernel's, as in __TARGET_ARCH_x86):
# `make bpf` builds probes/<concern>.<arch>.bpf.o for each of these, and the wheel carries them all.
BPF_ARCHES = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64"}


def bpf_arch(machine=None):
    """The BPF object architecture for this machine (or `machine`), e.g. 'x86_64' -> 'x86'."""
    machine = machine or platform.machine()
    if machine not in BPF_ARCHES:
        raise BpfError(f"dmabuf-top has no BPF objects for {machine}: it is built for "
                       f"{', '.join(sorted(set(BPF_ARCHES)))}")
    return BPF_ARCHES[machine]


def object_path(concern, machine=None):
    """Path of the compiled BPF object for a concern on this machine: 'dmabuf_iter' -> .../dmabuf_iter.x86.bpf.o."""
    path = PROBES_DIR / f"{concern}.{bpf_arch(machine)}.bpf.o"
    if not path.is_file():
        raise BpfError(
            f"BPF object {path} is missing: build it with 'make bpf' in the source tree, or reinstall dmabuf-top"
        )
    return path

"""Kernel side: one *.bpf.c per concern, with the Python that loads and decodes it beside it."""
from pathlib import Path

from ..errors import BpfError

PROBES_DIR = Path(__file__).resolve().parent


def object_path(concern):
    """Path of the compiled BPF object for a concern, e.g. 'dmabuf_iter' -> .../dmabuf_iter.bpf.o."""
    path = PROBES_DIR / f"{concern}.bpf.o"
    if not path.is_file():
        raise BpfError(
            f"BPF object {path} is missing: build it with 'make bpf' in the source tree, or reinstall dmabuf-top"
        )
    return path

"""A small, known population of named dma-bufs, for the demo, tests and benchmarks.

The names mimic what a phone or an inference box holds (camera frames, model
weights, an NPU input over a memfd) plus one hostile name, so every view is
shown what it must escape.
"""
from dataclasses import dataclass
from typing import List, Optional

from .alloc import DmaBuf, alloc_heap, alloc_udmabuf

MiB = 1 << 20


@dataclass(frozen=True)
class Part:
    exporter: str  # "system" (the heap) or "udmabuf"
    size: int
    name: Optional[bytes]


DEFAULT_SCENE = (
    Part("system", 4 * MiB, b"camera-frame-0"),
    Part("system", 4 * MiB, b"camera-frame-1"),
    Part("system", 32 * MiB, b"model-weights"),
    Part("udmabuf", 8 * MiB, b"npu-input"),
    Part("system", 1 * MiB, b"\x1b[31mred\nfake-line"),
    Part("system", 64 * 1024, None),
)


def build(parts=DEFAULT_SCENE) -> List[DmaBuf]:
    """Allocate every part; on failure, free what was made before raising."""
    made = []
    try:
        for part in parts:
            if part.exporter == "udmabuf":
                made.append(alloc_udmabuf(part.size, name=part.name))
            else:
                made.append(alloc_heap(part.size, heap=part.exporter, name=part.name))
    except BaseException:
        for buffer in made:
            buffer.close()
        raise
    return made

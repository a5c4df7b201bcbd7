"""The renderers of `report` and `flame`: one interface, one registry (pyinstrument's shape).

A renderer is a Renderer subclass, built with RenderOptions, whose `render(session, out)` writes
one document as text to `out`; the commands turn that into a file or stdout
(dmabuf_top/commands/_output.py). Its `format` is its entry in FORMATS: the name --format takes,
the output names that ask for it (the first is the default suffix), and what to do with the file.

FORMATS names each class as "module:Class" and imports it only when it is used: the renderers
pull in matplotlib (a second), which `--help` and the choice of a format should not wait for.
"""
import importlib
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class RenderOptions:
    table: str = "buffers"  # csv: which table (buffers, paths, latency, methods)
    weight: str = "amount"  # flame graph and folded stacks: bytes copied / pages pinned ("amount"), or "hits"
    stacks: str = "io"  # flame graph and folded stacks: "io" (copy and GUP points) or "alloc" (buffer allocations)


@dataclass(frozen=True)
class Format:
    name: str
    extensions: Tuple[str, ...]
    renderer: str  # "module:Class" in dmabuf_top.analysis
    hint: str = ""

    def renderer_class(self):
        module, name = self.renderer.split(":")
        return getattr(importlib.import_module(f"dmabuf_top.analysis.{module}"), name)

    def create(self, options=RenderOptions()):
        return self.renderer_class()(options)


FORMATS = {entry.name: entry for entry in (
    Format("html", (".html", ".htm"), "html:HtmlRenderer", "open it in a browser"),
    Format("perfetto", (".trace.json", ".perfetto.json"), "perfetto:PerfettoRenderer", "open it at ui.perfetto.dev"),
    Format("csv", (".csv",), "export:CsvRenderer"),
    Format("json", (".json",), "export:JsonRenderer"),
    Format("svg", (".flame.svg", ".svg"), "flame:FlameSvgRenderer", "open it in a browser"),
    Format("folded", (".folded",), "flame:FoldedRenderer"),
)}


class Renderer:
    """One output format of a session. Subclasses set `format` and write `render`."""

    format: Format

    def __init__(self, options=RenderOptions()):
        self.options = options

    def render(self, session, out):
        raise NotImplementedError


def guess_format(output, names=tuple(FORMATS), default="html"):
    """The format among `names` that an output file's name asks for; the longest extension wins
    (x.trace.json is Perfetto, x.json JSON). `default` when none does."""
    lowered = (output or "").lower()
    matches = [(len(extension), name) for name in names for extension in FORMATS[name].extensions
               if lowered.endswith(extension)]
    return max(matches)[1] if matches else default

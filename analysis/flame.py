"""Kernel stacks at copy and GUP points, or the buffers' allocation stacks (`flame --alloc`): folded stacks and
a self-contained SVG flame graph.

Folded format (Brendan Gregg's FlameGraph, speedscope, inferno): one line per stack,
frames root first separated by ';', a space, then the weight. The root frame is the I/O
path the stack was taken in. Frame text is sanitised so it cannot break the format
(';' and line breaks replaced); in SVG every name is XML-escaped.
"""
import hashlib
from html import escape
from typing import Dict

from ..stacks import kernel_frames
from ..text import terminal_safe
from . import tables
from .renderers import FORMATS, Renderer

UNKNOWN_STACK = "[stack not recorded]"


def _frame(text):
    # One printable line (control bytes shown as \xNN, also unrepresentable in XML) with no ';'.
    return terminal_safe(text.strip()).replace(";", ":") or "?"


def folded_stacks(session, weight="amount") -> Dict[str, int]:
    """{"path;root;...;leaf": weight}. weight "amount" (bytes copied or pinned) or "hits".

    From stack_counts (aggregated in the kernel) when present, else from io_events'
    stack ids weighted by bytes (amount) or by calls (hits).
    """
    if session.query("SELECT 1 FROM stack_counts LIMIT 1"):
        # GUP amounts are pages: weigh them as bytes, so copies and pins share one unit.
        column = (f"sum(CASE WHEN c.point = 'gup' THEN c.amount * {int(session.page_size)} ELSE c.amount END)"
                  if weight == "amount" else "sum(c.hits)")
        rows = session.query(f"SELECT c.path, s.frames, {column} FROM stack_counts c "
                             "LEFT JOIN stacks s ON s.id = c.stack_id GROUP BY c.path, c.stack_id")
    else:
        column = "sum(e.bytes)" if weight == "amount" else "count(*)"
        rows = session.query(f"SELECT e.path, s.frames, {column} FROM io_events e "
                             "LEFT JOIN stacks s ON s.id = e.stack_id WHERE e.stack_id >= 0 "
                             "GROUP BY e.path, e.stack_id")
    folded: Dict[str, int] = {}
    for path, frames, amount in rows:
        if not amount:
            continue
        # The tracer's own frames are left out here too, for sessions recorded before they were at decoding.
        leaf_first = (kernel_frames(frames.split("\n")) or [UNKNOWN_STACK]) if frames else [UNKNOWN_STACK]
        line = ";".join([_frame(path)] + [_frame(f) for f in reversed(leaf_first) if f.strip()])
        folded[line] = folded.get(line, 0) + amount
    return folded


def alloc_folded(session, weight="amount") -> Dict[str, int]:
    """{"exporter;user root;...;user leaf;kernel root;...;kernel leaf": bytes (amount) or buffers (hits)} over
    the buffers whose creation the lifecycle probe saw with a stack: where the memory was allocated from."""
    stacks = tables.alloc_stacks(session)
    folded: Dict[str, int] = {}
    for buffer in tables.top_buffers(session):
        if buffer.user_stack_id < 0 and buffer.kernel_stack_id < 0:
            continue
        user = stacks.get(buffer.user_stack_id, ("", ()))[1]
        kernel = kernel_frames(stacks.get(buffer.kernel_stack_id, ("", ()))[1])
        frames = [f for f in reversed(user) if f.strip()] + [f for f in reversed(kernel) if f.strip()]
        line = ";".join([_frame(buffer.exporter or "?")] + [_frame(f) for f in frames or [UNKNOWN_STACK]])
        folded[line] = folded.get(line, 0) + (buffer.size if weight == "amount" else 1)
    return folded


def session_folded(session, options) -> Dict[str, int]:
    """The stacks a flame renderer draws: options.stacks "alloc" (allocation stacks) or "io"."""
    if options.stacks == "alloc":
        return alloc_folded(session, weight=options.weight)
    return folded_stacks(session, weight=options.weight)


def render_folded(folded: Dict[str, int]) -> str:
    return "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))


def _xml(text):
    """Escaped for XML text and attributes; control characters (invalid in XML 1.0 even escaped) as \\xNN."""
    return escape("".join(c if c >= " " and c not in "\x7f\ufffe\uffff" and not 0xD800 <= ord(c) <= 0xDFFF
                          else f"\\x{ord(c):02x}" for c in text))


def _tree(folded):
    root = {"name": "all", "value": 0, "children": {}}
    for stack, count in folded.items():
        root["value"] += count
        node = root
        for frame in stack.split(";"):
            node = node["children"].setdefault(frame, {"name": frame, "value": 0, "children": {}})
            node["value"] += count
    return root


def _color(name):
    digest = hashlib.md5(name.encode("utf-8", "replace")).digest()
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 130},{digest[2] % 60})"


def render_svg(folded: Dict[str, int], title="Kernel stacks at copy and GUP points", width=1200,
               frame_height=17, unit="bytes") -> str:
    """A flame graph as one SVG document: rectangles with <title> tooltips, root at the bottom."""
    root = _tree(folded)
    depth = _depth(root)
    height = (depth + 1) * frame_height + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fafafa"/>',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">{_xml(title)}</text>',
    ]
    if not root["value"]:
        parts.append(f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#666">'
                     'no kernel stacks recorded</text></svg>')
        return "\n".join(parts)
    scale = (width - 20) / root["value"]

    def draw(node, x, level):
        w = node["value"] * scale
        if w < 0.3:
            return
        y = height - (level + 1) * frame_height - 4
        share = 100.0 * node["value"] / root["value"]
        label = _xml(node["name"])
        parts.append(f'<g><title>{label} ({node["value"]} {unit}, {share:.2f}%)</title>'
                     f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{frame_height - 1}" rx="2" '
                     f'fill="{_color(node["name"])}"/>')
        fits = int((w - 6) / 6.6)
        if fits >= 3:
            text = node["name"] if len(node["name"]) <= fits else node["name"][: fits - 2] + ".."
            parts.append(f'<text x="{x + 3:.2f}" y="{y + frame_height - 5}">{_xml(text)}</text>')
        parts.append("</g>")
        child_x = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            draw(child, child_x, level + 1)
            child_x += child["value"] * scale

    draw(root, 10.0, 0)
    parts.append("</svg>")
    return "\n".join(parts)


def _depth(node):
    return 1 + max((_depth(child) for child in node["children"].values()), default=0)


class FoldedRenderer(Renderer):
    """Folded stacks, weighed by options.weight."""

    format = FORMATS["folded"]

    def render(self, session, out):
        out.write(render_folded(session_folded(session, self.options)))


class FlameSvgRenderer(Renderer):
    """The flame graph as one SVG document, weighed by options.weight."""

    format = FORMATS["svg"]

    def render(self, session, out):
        alloc = self.options.stacks == "alloc"
        unit = ("bytes" if self.options.weight == "amount" else "buffers" if alloc else "hits")
        title = "Buffers by allocation stack" if alloc else "Kernel stacks at copy and GUP points"
        out.write(render_svg(session_folded(session, self.options), title=title, unit=unit))

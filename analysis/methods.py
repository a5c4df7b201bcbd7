"""The method comparison of a session that has `methods` rows (`dmabuf-top validate --record`).

What is particular to such a session is here, and only this: its methods as a figure and a
table, and the sentences that explain what the report's other sections show of them. Every
other section reads it through the same tables as a recording.
"""
import errno as errno_module
from html import escape
from typing import Dict, List, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..recording.session import Method
from ..text import terminal_safe
from ..validate.verdict import unseen_copied
from .figures import safe_label

MiB = 1 << 20

# One colour per verdict kind, the same in the figure and the table.
COLOURS = {"zero-copy": "#2a9d47", "copies": "#e0a030", "failed": "#b0b0b0", "wrong-data": "#c0392b",
           "incomplete": "#c0392b", "unmeasured": "#7f8fa6", "absent": "#dddddd"}

# What the exports call each column (the names of validate's JSON, which scripts read).
EXPORT_COLUMNS = ("name", "buffer", "direct", "payload", "alloc_ms", "io_ms", "close_ms", "mb_s", "moved",
                  "reached", "cpu_copied", "device_bytes", "device_to_buffer", "page_cache_pages", "pinned_pages",
                  "syscalls", "errors", "errno_name", "checksum", "verdict")


def rows(session) -> List[Method]:
    """The session's methods in the order they ran ([] for a recording)."""
    return session.records(Method)


def ran(method):
    """Did the method reach its I/O?"""
    return method.verdict != "absent" and method.io_ms is not None


def mb_s(method) -> Optional[float]:
    """Payload over I/O time; None for a method that failed or never ran."""
    if not method.io_ms or method.verdict in ("failed", "absent"):
        return None
    return method.payload / MiB / (method.io_ms / 1000)


def errno_name(method):
    return errno_module.errorcode.get(method.errno) if method.errno else None


def export_row(method) -> Dict[str, object]:
    """A method as the CSV and JSON exports show it; what was not measured is None."""
    derived = {"mb_s": mb_s(method), "syscalls": method.calls, "errno_name": errno_name(method),
               "direct": bool(method.direct), "verdict": method.verdict_label}
    return {name: derived[name] if name in derived else getattr(method, name) for name in EXPORT_COLUMNS}


def copy_shares(method):
    """(CPU-copied bytes the hooks saw, bytes copied where no hook sees), each over the payload: the second only
    for a method judged `copies` by its DMA evidence, as its label's "N unseen" says."""
    if not method.payload or method.cpu_copied is None:
        return 0.0, 0.0
    seen = method.cpu_copied / method.payload
    if method.verdict != "copies" or method.device_to_buffer is None:
        return seen, 0.0
    return seen, unseen_copied(method.payload, method.device_to_buffer, method.cpu_copied) / method.payload


def comparison_figure(methods):
    """Three panels per method: I/O throughput (MB/s), CPU copies (labelled with the verdict), and the share of the
    payload the device wrote into the buffer's own pages (DMA evidence), coloured by verdict."""
    shown = [m for m in methods if m.verdict != "absent"]
    height = max(2.5, 0.28 * len(shown) + 1.2)
    figure = Figure(figsize=(12.0, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    speed, copies, device = figure.subplots(1, 3, sharey=True, width_ratios=(1, 1.2, 0.6))
    positions = list(range(len(shown)))
    colours = [COLOURS.get(m.verdict, "#999999") for m in shown]
    speed.barh(positions, [mb_s(m) or 0 for m in shown], color=colours)
    speed.set_yticks(positions, [safe_label(m.name) for m in shown], fontsize=8)
    speed.invert_yaxis()
    speed.set_xlabel("MB/s (payload / I/O time)")
    speed.set_title("Load throughput", fontsize=10)
    ratios, unseen = zip(*[copy_shares(m) for m in shown]) if shown else ((), ())
    copies.barh(positions, ratios, color=colours)
    # Copies no hook saw, proven by the DMA evidence: hatched after the seen ones, in the verdict's colour.
    copies.barh(positions, unseen, left=ratios, color="none", edgecolor=colours, hatch="///", linewidth=0.6)
    ends = [seen + hidden for seen, hidden in zip(ratios, unseen)]
    for position, method, end in zip(positions, shown, ends):
        copies.text(end + 0.03, position, safe_label(method.verdict_label), va="center", fontsize=7)
    copies.set_xlim(0, max(ends + [1]) + 1.6)
    copies.set_xlabel("CPU-copied bytes / payload (hatched: where no hook sees)")
    copies.set_title("Copies (colour: verdict)", fontsize=10)
    covered = [m.device_to_buffer / m.payload if m.payload and m.device_to_buffer is not None else 0 for m in shown]
    device.barh(positions, covered, color=colours)
    for position, method in zip(positions, shown):
        if method.device_to_buffer is None:
            device.text(0.02, position, "no DMA evidence", va="center", fontsize=7)
    device.set_xlim(0, 1.1)
    device.set_xlabel("device -> buffer / payload")
    device.set_title("DMA into the buffer", fontsize=10)
    return figure


def table_html(methods):
    def cell(value, fmt="{}"):
        return "-" if value is None else escape(fmt.format(value))

    head = ("method", "what", "alloc ms", "I/O ms", "close ms", "MB/s", "CPU-copied", "device->buffer",
            "device wrote", "page cache (pages)",
            "pinned (pages)", "calls", "data", "verdict")
    body = []
    for m in methods:
        reasons = "; ".join(terminal_safe(reason) for reason in m.verdict_reasons.splitlines())
        body.append("<tr>" + "".join([
            f"<td>{escape(terminal_safe(m.name))}</td>",
            f"<td>{escape(terminal_safe(m.summary))}</td>",
            f'<td class="n">{cell(m.alloc_ms, "{:.1f}")}</td>',
            f'<td class="n">{cell(m.io_ms, "{:.1f}")}</td>',
            f'<td class="n">{cell(m.close_ms, "{:.1f}")}</td>',
            f'<td class="n">{cell(mb_s(m), "{:.0f}")}</td>',
            f'<td class="n">{cell(m.cpu_copied)}</td>',
            f'<td class="n">{cell(m.device_to_buffer)}</td>',
            f'<td class="n">{cell(m.device_bytes)}</td>',
            f'<td class="n">{cell(m.page_cache_pages)}</td>',
            f'<td class="n">{cell(m.pinned_pages)}</td>',
            f'<td class="n">{cell(m.calls)}</td>',
            f"<td>{cell(m.checksum and terminal_safe(m.checksum))}</td>",
            f'<td style="border-left: 6px solid {COLOURS.get(m.verdict, "#999999")}" title="{escape(reasons)}">'
            f"{escape(terminal_safe(m.verdict_label))}</td>",
        ]) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def section_html(methods, png_img):
    """The report's method section. png_img(figure, name) inlines a figure."""
    files = sorted({(m.file, m.payload, m.filesystem or "?", m.page_cache) for m in methods if m.file})
    context = "".join(
        f"<p>{escape(terminal_safe(path))}: {size} bytes on {escape(terminal_safe(filesystem))}; page cache "
        f"{'warm' if cache == 'warm' else 'dropped before each method'}.</p>"
        for path, size, filesystem, cache in files)
    return context + png_img(comparison_figure(methods), "methods") + table_html(methods)


def notes(methods, has_buffers) -> Dict[str, str]:
    """{report section: what it shows of the methods, and why}. has_buffers: did any inventory pass list one?"""
    out = {"throughput": "validate measures each method's totals over its I/O window, not a time series: the plots "
                         "draw each method at its measured average rate across its window."}
    done = [m for m in methods if ran(m)]
    memfd = [m.name for m in done if m.buffer == "memfd"]
    if memfd:
        out["top-buffers"] = out["buffers-over-time"] = (
            f"{', '.join(memfd)} load{'s' if len(memfd) == 1 else ''} into a memfd, which is no dma-buf: the kernel's "
            f"dma-buf list has no row for it, so {'this method has' if len(memfd) == 1 else 'these methods have'} "
            "none here.")
    if any(m.buffer == "command" for m in done):
        out["top-buffers"] = out["buffers-over-time"] = (
            "validate -- CMD judges the command's calls, it does not list its buffers: "
            "`dmabuf-top record -- CMD` does.")
    elif any(m.buffer in ("heap", "cma", "udmabuf") for m in done) and not has_buffers:
        out["top-buffers"] = out["buffers-over-time"] = (
            "the kernel's dma-buf list (iter/dmabuf) could not be read, so no method's dma-buf is shown.")
    return out

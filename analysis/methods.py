"""The method comparison of a `dmabuf-top validate --record` session: a figure and a table.

The rows come from the session's metadata key `validate` (what ValidateRun.to_dict() wrote).
Sessions without it (plain `record`) have no method section.
"""
from html import escape

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..text import terminal_safe

# One colour per verdict kind, the same in the figure and the table.
COLOURS = {"zero-copy": "#2a9d47", "copies": "#e0a030", "failed": "#b0b0b0", "wrong-data": "#c0392b",
           "incomplete": "#c0392b", "unmeasured": "#7f8fa6", "absent": "#dddddd"}


# What a method measures once it runs: a method that never ran has none of them (null, shown '-', never 0).
MEASURED = ("moved", "reached", "cpu_copied", "page_cache_pages", "pinned_pages", "got_pages", "syscalls", "errors")


def ran(row):
    """Did the method reach its I/O? (Sessions recorded before absent rows carried nulls had zeros there.)"""
    return row.get("verdict", {}).get("kind") != "absent" and row.get("io_ms") is not None


def rows(session):
    """The validate rows of a session ([] when it is not a validate session); unmeasured counters None."""
    data = session.metadata.get("validate")
    if not isinstance(data, dict):
        return []
    out = []
    for row in data.get("methods", []):
        if isinstance(row, dict):
            out.append(row if ran(row) else {**row, **{name: None for name in MEASURED}})
    return out


def without_dmabuf(session):
    """Names of the methods that ran into a buffer that is no dma-buf (memfd): no buffer rows for them."""
    return [row["name"] for row in rows(session) if ran(row) and row.get("buffer") == "memfd"]


def _label(text):
    return terminal_safe(text).replace("$", r"\$")


def comparison_figure(method_rows):
    """Two panels per method: I/O throughput (MB/s), and CPU copies with page-cache use, coloured by verdict."""
    shown = [row for row in method_rows if row.get("verdict", {}).get("kind") != "absent"]
    height = max(2.5, 0.28 * len(shown) + 1.2)
    figure = Figure(figsize=(10.0, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    speed, copies = figure.subplots(1, 2, sharey=True)
    names = [_label(row["name"]) for row in shown]
    positions = list(range(len(shown)))
    colours = [COLOURS.get(row["verdict"]["kind"], "#999999") for row in shown]
    speed.barh(positions, [row.get("mb_s") or 0 for row in shown], color=colours)
    speed.set_yticks(positions, names, fontsize=8)
    speed.invert_yaxis()
    speed.set_xlabel("MB/s (payload / I/O time)")
    speed.set_title("Load throughput", fontsize=10)
    ratios = [(row["cpu_copied"] or 0) / row["payload"] if row.get("payload") and row.get("cpu_copied") is not None
              else 0 for row in shown]
    copies.barh(positions, ratios, color=colours)
    for position, row, ratio in zip(positions, shown, ratios):
        copies.text(ratio + 0.03, position, _label(row["verdict"]["label"]), va="center", fontsize=7)
    copies.set_xlim(0, max(ratios + [1]) + 1.6)
    copies.set_xlabel("CPU-copied bytes / payload")
    copies.set_title("Copies (colour: verdict)", fontsize=10)
    return figure


def table_html(method_rows):
    def cell(value, fmt="{}"):
        return "-" if value is None else escape(fmt.format(value))

    head = ("method", "what", "alloc ms", "I/O ms", "close ms", "MB/s", "CPU-copied", "page cache (pages)",
            "pinned (pages)", "calls", "data", "verdict")
    body = []
    for row in method_rows:
        verdict = row.get("verdict", {})
        colour = COLOURS.get(verdict.get("kind"), "#999999")
        body.append("<tr>" + "".join([
            f"<td>{escape(terminal_safe(row['name']))}</td>",
            f"<td>{escape(terminal_safe(row.get('summary', '')))}</td>",
            f'<td class="n">{cell(row.get("alloc_ms"), "{:.1f}")}</td>',
            f'<td class="n">{cell(row.get("io_ms"), "{:.1f}")}</td>',
            f'<td class="n">{cell(row.get("close_ms"), "{:.1f}")}</td>',
            f'<td class="n">{cell(row.get("mb_s"), "{:.0f}")}</td>',
            f'<td class="n">{cell(row.get("cpu_copied"))}</td>',
            f'<td class="n">{cell(row.get("page_cache_pages"))}</td>',
            f'<td class="n">{cell(row.get("pinned_pages"))}</td>',
            f'<td class="n">{cell(row.get("syscalls"))}</td>',
            f"<td>{cell(row.get('checksum'))}</td>",
            f'<td style="border-left: 6px solid {colour}" title="{escape("; ".join(verdict.get("reasons", [])))}">'
            f"{escape(terminal_safe(verdict.get('label', '')))}</td>",
        ]) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def section_html(session, png_img):
    """The report section for a validate session, or None. png_img(figure, name) inlines a figure."""
    method_rows = rows(session)
    if not method_rows:
        return None
    data = session.metadata["validate"]
    source = data.get("file") or {}
    context = (f"<p>{escape(terminal_safe(source.get('path', '')))}: {source.get('size', 0)} bytes on "
               f"{escape(terminal_safe(source.get('filesystem', '?')))}; page cache "
               f"{escape(str(data.get('page_cache', '?')))}.</p>") if source else ""
    missing = data.get("missing") or {}
    note = "".join(f"<p class=\"muted\">not traced: {escape(terminal_safe(k))}: {escape(terminal_safe(v))}</p>"
                   for k, v in sorted(missing.items()))
    return context + png_img(comparison_figure(method_rows), "methods") + table_html(method_rows) + note

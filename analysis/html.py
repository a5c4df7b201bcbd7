"""One self-contained HTML report of a session: figures inlined as base64 PNG, the flame graph
as inline SVG, no external asset. Every string from the session (buffer names, paths, commands,
hook details) is escaped: terminal_safe makes it one visible line, html.escape makes it text.
"""
import base64
from html import escape

from ..text import human_size, terminal_safe
from ..trace_model import NOT_TRACED
from . import figures, flame, methods, tables
from .renderers import FORMATS, Renderer

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1700px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; height: auto; display: block; }
.side { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.muted { color: #777; }
code { background: #f4f4f4; padding: 0 3px; }
"""

SECTIONS = (
    ("summary", "Summary"),
    ("throughput", "Throughput"),
    ("latency", "Latency"),
    ("zero-copy", "The zero-copy picture"),
    ("buffers-over-time", "Buffers over time"),
    ("top-buffers", "Top buffers"),
    ("cgroups", "Per-cgroup dma-buf bytes"),
    ("alloc-stacks", "Allocation stacks"),
    ("leaks", "Leaks"),
    ("flame", "Kernel stacks at copy and GUP points"),
    ("missing-hooks", "Missing hooks"),
    ("dropped-events", "Dropped events"),
)


def text(value, none="-"):
    """Any session value as escaped, one-line HTML text."""
    if value is None:
        return escape(none)
    return escape(terminal_safe(value if isinstance(value, (bytes, bytearray)) else str(value)))


def name_html(name):
    return '<span class="muted">&lt;unnamed&gt;</span>' if name is None else text(name)


def png_img(figure, name):
    data = base64.b64encode(figures.to_png(figure)).decode("ascii")
    return f'<img class="figure" id="fig-{escape(name)}" alt="{escape(name)}" src="data:image/png;base64,{data}">'


def table_html(headers, rows, numeric=()):
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            cls = ' class="n"' if index in numeric else ""
            cells.append(f"<td{cls}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title, body):
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def summary_html(session, summary):
    command = summary["command"]
    command_text = " ".join(terminal_safe(str(arg)) for arg in command) if isinstance(command, list) else None
    rows = [
        ("session", text(session.path)),
        ("command", text(command_text)),
        ("exit code", text(summary["exit_code"])),
        ("how it ended", text(summary["end_reason"])),
        ("started", text(summary["started"])),
        ("duration", f"{summary['duration_s']:.2f} s"),
        ("kernel", text(summary["kernel"])),
        ("buffers seen", str(summary["buffers_seen"])),
        ("I/O calls traced", str(summary["calls"])),
        ("I/O events", text(summary["io_events"], none="not recorded (validate keeps each method's totals, "
                                                       "not per-call events)")),
        ("bytes moved", f"{human_size(summary['bytes_moved'])} ({summary['bytes_moved']} B)"),
        ("dropped events", str(summary["dropped_events"])),
    ]
    return table_html(("", ""), rows)


def _traced(show, value):
    """n/t (not traced: see Missing hooks) for a counter whose hooks were missing, never a zero."""
    return NOT_TRACED if value is None else show(value)


def path_table_html(totals):
    return table_html(
        ("path", "calls", "errors", "bytes moved", "CPU-copied", "copied / moved", "pinned", "page cache added"),
        [(text(t.path), t.calls, t.errors, human_size(t.bytes), _traced(human_size, t.cpu_copied_bytes),
          _traced("{:.2f}".format, t.copied_fraction), _traced(human_size, t.pinned_bytes),
          human_size(t.page_cache_added_bytes))
         for t in totals], numeric=range(1, 8))


def latency_table_html(rows):
    return table_html(("path", "calls", "p50 (us)", "p99 (us)"),
                      [(text(r.path), r.calls, f"{r.p50_us:.1f}", f"{r.p99_us:.1f}") for r in rows],
                      numeric=(1, 2, 3))


def names_html(buffer):
    """The latest name, and the earlier ones it replaced (a rename after the I/O shows both, latest last)."""
    if len(buffer.names) < 2:
        return name_html(buffer.name)
    earlier = " → ".join(text(name) for name in buffer.names[:-1])
    return f'{name_html(buffer.name)} <span class="muted">(was {earlier})</span>'


def _seconds_html(value, none):
    return f"{value:.3f}" if value is not None else f'<span class="muted">{escape(none)}</span>'


def creator_html(buffer):
    if not buffer.creator_pid:
        return '<span class="muted">before the recording</span>' if buffer.created_s is None else "-"
    cgroup = f'<br><span class="muted">{text(buffer.cgroup)}</span>' if buffer.cgroup else ""
    return f"{buffer.creator_pid} {text(buffer.creator_comm)}{cgroup}"


def buffers_table_html(buffers):
    return table_html(
        ("inode", "exporter", "name", "size", "max refs", "max attachments", "first seen (s)", "last seen (s)",
         "I/O bytes", "creator", "created (s)", "released (s)"),
        [(b.inode, text(b.exporter), names_html(b), human_size(b.size), b.max_file_refs, b.max_attachments,
          f"{b.first_seen_s:.2f}", f"{b.last_seen_s:.2f}", human_size(b.io_bytes), creator_html(b),
          _seconds_html(b.created_s, "-"), _seconds_html(b.released_s, "alive")) for b in buffers],
        numeric=(0, 3, 4, 5, 6, 7, 8, 10, 11))


def frames_html(frames):
    return "<br>".join(f"<code>{text(frame)}</code>" for frame in frames) if frames else '<span class="muted">-</span>'


def alloc_stacks_html(rows):
    if not rows:
        return muted("No allocation stack recorded (no buffer was created while the lifecycle probe ran, or its "
                     "hooks were missing: see Missing hooks).")
    return table_html(
        ("buffers", "bytes", "names", "creators", "user stack (innermost first)", "kernel stack"),
        [(r.buffers, human_size(r.bytes), ", ".join(text(name) for name in r.names) or "-",
          ", ".join(text(creator) for creator in r.creators), frames_html(r.user_frames),
          frames_html(r.kernel_frames)) for r in rows], numeric=(0, 1))


def leaks_html(rows, min_age_s=tables.LEAK_MIN_AGE_S):
    rule = (f"Buffers still alive when the session ended, or alive at least {min_age_s:g} s, grouped by allocation "
            "stack. A lifetime with >= is a lower bound: the buffer was alive at the end (and, without a stack, "
            "made before the recording started).")
    if not rows:
        return muted(f"No buffer was alive at the end of the session or for {min_age_s:g} s.")
    body = []
    for r in rows:
        lifetimes = ", ".join(("" if b.released_s is not None else ">=") + f"{t:.3f}"
                              for b, t in zip(r.buffers[:8], r.lifetimes_s))
        who = sorted({f"{b.creator_pid} {b.creator_comm}" for b in r.buffers if b.creator_pid})[:8]
        stack = (frames_html(r.user_frames) + "<br>" + frames_html(r.kernel_frames) if r.stack_known
                 else muted("no stack: made before the recording, or its creation was not seen"))
        body.append((len(r.buffers), human_size(r.bytes), r.alive_at_end,
                     ", ".join(name_html(b.name) for b in r.buffers[:8]), text(lifetimes),
                     ", ".join(text(creator) for creator in who) or "-", stack))
    return muted(rule) + table_html(
        ("buffers", "bytes", "alive at the end", "names", "lifetimes (s)", "creators",
         "allocation stack (user, then kernel; innermost first)"), body, numeric=(0, 1, 2))


CGROUP_RULE = ("Bytes of the buffers the processes of each cgroup hold (fd or mapping), each buffer once per cgroup; "
               "a buffer held from two cgroups is in both rows' held and shared bytes. Kernel-only: buffers no "
               "process holds.")


def cgroups_html(rows):
    if not rows:
        return muted("No per-cgroup totals in this session (recorded before dmabuf-top kept them, or the task "
                     "iterators were unavailable: see Missing hooks).")
    body = [[text(row.short), text(row.cgroup, none=""), human_size(row.peak_held_bytes), f"{row.peak_s:.2f}",
             human_size(row.last_held_bytes), human_size(row.peak_shared_bytes), str(row.peak_processes),
             str(row.peak_buffers)] for row in rows]
    return muted(CGROUP_RULE) + table_html(
        ["cgroup", "path", "peak held", "at (s)", "held at the end", "peak shared", "processes", "buffers"], body,
        numeric=(2, 3, 4, 5, 6, 7))


def missing_html(session):
    missing = tables.missing_hooks(session)
    live = tables.live_hooks(session)
    parts = []
    if live:
        parts.append("<p>Live: " + ", ".join(f"<code>{text(n)}</code> via {text(v)}" for n, v in live) + "</p>")
    if missing:
        parts.append("<p>What these hooks would have shown is absent from this report, not zero.</p>")
        parts.append(table_html(("hook", "why"), [(text(n), text(why)) for n, why in missing]))
    else:
        parts.append("<p>None: every hook was live.</p>")
    return "".join(parts)


def dropped_html(session):
    dropped = tables.dropped_events(session)
    if not dropped or not any(dropped.values()):
        return "<p>None.</p>"
    return table_html(("source", "events lost"), [(text(s), c) for s, c in dropped.items()], numeric=(1,))


def flame_html(session):
    folded = flame.folded_stacks(session)
    if not folded:
        return '<p class="muted">No kernel stacks recorded (the I/O tracer took none).</p>'
    return f'<div id="flame-graph">{flame.render_svg(folded)}</div>'


def muted(sentence):
    return f'<p class="muted">{escape(sentence)}</p>'


def report_body(session, title=None):
    summary = tables.summary(session)
    every_buffer = tables.top_buffers(session)
    buffers = every_buffer[:50]
    method_rows = methods.rows(session)  # a validate run's: its own section, and notes on the others
    notes = methods.notes(method_rows, bool(buffers)) if method_rows else {}
    note = lambda key: muted(notes[key]) if key in notes else ""  # noqa: E731
    sections = {
        "summary": summary_html(session, summary),
        "throughput": note("throughput") + png_img(figures.throughput_by_path(session), "throughput_by_path")
        + png_img(figures.throughput_by_buffer(session), "throughput_by_buffer")
        + path_table_html(tables.path_totals(session)),
        "latency": png_img(figures.latency_histograms(session), "latency")
        + latency_table_html(tables.latency_table(session)),
        "zero-copy": png_img(figures.zero_copy(session), "zero_copy"),
        "buffers-over-time": note("buffers-over-time") + png_img(figures.buffers_over_time(session),
                                                                 "buffers_over_time"),
        "top-buffers": note("top-buffers") + (buffers_table_html(buffers) if buffers
                                              else muted("No buffer was seen (no inventory pass listed one).")),
        "cgroups": cgroups_html(tables.cgroup_table(session)),
        "alloc-stacks": alloc_stacks_html(tables.allocation_stacks(session, every_buffer)),
        "leaks": leaks_html(tables.leak_groups(session, every_buffer)),
        "flame": flame_html(session),
        "missing-hooks": missing_html(session),
        "dropped-events": dropped_html(session),
    }
    listed = SECTIONS
    if method_rows:
        sections["methods"] = methods.section_html(method_rows, png_img)
        listed = (("methods", "Load methods compared"),) + SECTIONS
    body = [f"<h1>{escape(title or 'dmabuf-top session report')}</h1>"]
    body.append("<p>" + " · ".join(f'<a href="#{key}">{escape(name)}</a>' for key, name in listed) + "</p>")
    for key, name in listed:
        body.append(f'<section id="{key}"><h2>{escape(name)}</h2>{sections[key]}</section>')
    return "\n".join(body)


class HtmlRenderer(Renderer):
    """The whole report as one HTML document."""

    format = FORMATS["html"]

    def render(self, session, out):
        out.write(page(f"dmabuf-top report: {terminal_safe(session.path)}", report_body(session)))

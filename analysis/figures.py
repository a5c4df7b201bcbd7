"""The report's figures: one function per figure, each session -> matplotlib Figure.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global
state), so they render in threads, tests and headless machines alike. Labels made
from buffer names are escaped (terminal_safe, then `$` so mathtext cannot read them).
"""
import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..text import human_size, terminal_safe
from . import tables

SIZE = (8.0, 3.6)


def safe_label(name, none="<unnamed>"):
    """A buffer name fit for a matplotlib label: one printable line, no mathtext, not hidden by '_'."""
    text = terminal_safe(name, none=none).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def buffer_label(inode, name):
    return f"{inode} {safe_label(name)}"[:60]


def _figure(title, size=SIZE):
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    return figure, axes


def _empty(axes, why):
    axes.text(0.5, 0.5, why, ha="center", va="center", transform=axes.transAxes, fontsize=9, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _grouped_bars(axes, groups, ylabel):
    """Bars side by side, one colour per group [(label, positions, values)], the groups together 0.8 of a slot
    wide; returns one bar's width."""
    width = 0.8 / len(groups)
    for index, (label, positions, values) in enumerate(groups):
        axes.bar([p + index * width for p in positions], values, width=width, label=label)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8)
    return width


def _mib(value):
    return value / (1024 * 1024)


def dense_rates(series, width, keys):
    """(bin centres, [rates per key]) on one grid from the bin before the first busy one to the bin
    after the last, idle bins at 0.

    throughput_series lists only busy bins; drawn as they are, a line would bridge idle time
    and a lone busy bin would have no width.
    """
    slots = {key: {round(t / width - 0.5): rate for t, rate in series[key]} for key in keys}
    busy = [slot for per_key in slots.values() for slot in per_key]
    if not busy:
        return [], [[] for _ in keys]
    grid = range(min(busy) - 1, max(busy) + 2)
    return [(slot + 0.5) * width for slot in grid], [[slots[key].get(slot, 0.0) for slot in grid] for key in keys]


def _time_axis(axes, session, last_s):
    """From the first recorded row to the end: the same window in every figure over time."""
    axes.set_xlim(tables.first_row_s(session), max(tables.duration_s(session), last_s))
    axes.set_xlabel("seconds")


def _rate_lines(axes, session, series, labels, fontsize, width):
    """Stacked areas, one per key: rates that coincide (two buffers loaded at once) stay visible."""
    keys = [key for key, _ in labels]
    times, rates = dense_rates(series, width, keys)
    axes.stackplot(times, *[[_mib(r) for r in per_key] for per_key in rates], labels=[label for _, label in labels],
                   step="mid", alpha=0.85)
    _time_axis(axes, session, times[-1] + width / 2)
    axes.set_ylabel("MiB/s")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=fontsize)


def throughput_by_path(session):
    figure, axes = _figure("Throughput per I/O path")
    width, series = tables.throughput_series(session, by="path")
    if not series:
        _empty(axes, "no I/O recorded (the I/O tracer was not running, or nothing moved)")
        return figure
    _rate_lines(axes, session, series, [(path, safe_label(path)) for path in sorted(series)], fontsize=8, width=width)
    return figure


def throughput_by_buffer(session, top=8):
    figure, axes = _figure("Throughput per buffer")
    width, series = tables.throughput_series(session, by="buffer")
    if not series:
        _empty(axes, "no I/O attributed to a buffer")
        return figure
    names = {b.inode: b.name for b in tables.top_buffers(session)}
    busiest = sorted(series, key=lambda inode: -sum(r for _, r in series[inode]))[:top]
    _rate_lines(axes, session, series, [(inode, buffer_label(inode, names.get(inode))) for inode in busiest],
                fontsize=7, width=width)
    return figure


def latency_histograms(session):
    figure, axes = _figure("Latency per path (log2 buckets)")
    hists = tables.latency_histograms(session)
    if not hists:
        _empty(axes, "no latency recorded")
        return figure
    groups = []
    for path, hist in sorted(hists.items()):
        p50, p99 = tables.percentile(hist, 0.5), tables.percentile(hist, 0.99)
        buckets = sorted(hist)
        groups.append((f"{safe_label(path)}  p50 {p50:.0f} us, p99 {p99:.0f} us", buckets, [hist[b] for b in buckets]))
    _grouped_bars(axes, groups, "calls")
    low = min(min(h) for h in hists.values())
    high = max(max(h) for h in hists.values())
    ticks = list(range(low, high + 1))
    axes.set_xticks(ticks, [f"{2 ** b}" for b in ticks], fontsize=7)
    axes.set_xlabel("microseconds (bucket start)")
    return figure


def zero_copy(session):
    figure, axes = _figure("Bytes moved vs CPU-copied vs pinned, per path")
    totals = tables.path_totals(session)
    if not totals:
        _empty(axes, "no I/O recorded")
        return figure
    kinds = (("moved", "bytes"), ("CPU-copied", "cpu_copied_bytes"), ("pinned", "pinned_bytes"),
             ("page cache added", "page_cache_added_bytes"))
    positions = range(len(totals))
    width = _grouped_bars(axes, [(label, positions, [float("nan") if getattr(t, field) is None else
                                                     _mib(getattr(t, field)) for t in totals])
                                 for label, field in kinds], "MiB")
    axes.set_xticks([i + 0.4 - width / 2 for i in positions], [safe_label(t.path) for t in totals], fontsize=8)
    return figure


def buffers_over_time(session):
    figure, axes = _figure("dma-buf memory over time, by exporter")
    series = tables.buffers_over_time(session)
    if not series:
        _empty(axes, "no buffer snapshot recorded")
        return figure
    for exporter, points in sorted(series.items()):
        axes.step([t for t, _, _ in points], [_mib(s) for _, _, s in points], where="post",
                  label=f"{safe_label(exporter)} (max {max(n for _, n, _ in points)} buffers, "
                        f"{human_size(max(s for _, _, s in points))})")
    _time_axis(axes, session, max(t for points in series.values() for t, _, _ in points))
    axes.set_ylabel("MiB")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    return figure


# name -> (title, function); the report's order.
FIGURES = {
    "throughput_by_path": throughput_by_path,
    "throughput_by_buffer": throughput_by_buffer,
    "latency": latency_histograms,
    "zero_copy": zero_copy,
    "buffers_over_time": buffers_over_time,
}


def to_png(figure):
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def to_svg(figure):
    out = io.StringIO()
    figure.savefig(out, format="svg")
    return out.getvalue()


def write_figures(session, directory):
    """PNG and SVG of every figure into directory; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        figure = draw(session)
        for ext, encode, mode in (("png", to_png, "wb"), ("svg", to_svg, "w")):
            path = os.path.join(directory, f"{name}.{ext}")
            # 0600 whatever the umask: figures name processes and buffers, as the session does.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, mode) as file:
                file.write(encode(figure))
            written.append(path)
    return written

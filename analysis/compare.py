"""Session A against session B (before/after a kernel patch): per-path deltas and side-by-side figures."""
from dataclasses import dataclass
from html import escape
from typing import List, Optional

from ..trace_model import NOT_TRACED
from . import figures, tables
from .html import page, png_img, table_html, text
from .renderers import FORMATS, RenderOptions, Renderer


@dataclass(frozen=True)
class Delta:
    path: str
    metric: str
    a: float
    b: float

    @property
    def change(self):
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def ratio(self) -> Optional[float]:
        return self.b / self.a if self.a and self.b is not None else None


METRICS = ("bytes", "cpu_copied_bytes", "pinned_bytes", "page_cache_added_bytes", "calls", "errors")


def deltas(session_a, session_b) -> List[Delta]:
    """One Delta per path x metric present in either session (a path absent from one counts 0 there),
    plus p50/p99 latency and throughput (bytes per second of recording)."""
    totals_a = {t.path: t for t in tables.path_totals(session_a)}
    totals_b = {t.path: t for t in tables.path_totals(session_b)}
    lat_a = {r.path: r for r in tables.latency_table(session_a)}
    lat_b = {r.path: r for r in tables.latency_table(session_b)}
    dur_a, dur_b = tables.duration_s(session_a), tables.duration_s(session_b)
    out = []
    for path in sorted(set(totals_a) | set(totals_b) | set(lat_a) | set(lat_b)):
        ta, tb = totals_a.get(path), totals_b.get(path)
        for metric in METRICS:
            out.append(Delta(path, metric, getattr(ta, metric, 0) if ta else 0, getattr(tb, metric, 0) if tb else 0))
        out.append(Delta(path, "bytes_per_s", (ta.bytes / dur_a) if ta and dur_a else 0.0,
                         (tb.bytes / dur_b) if tb and dur_b else 0.0))
        for metric, field in (("p50_us", "p50_us"), ("p99_us", "p99_us")):
            la, lb = lat_a.get(path), lat_b.get(path)
            out.append(Delta(path, metric, getattr(la, field) if la else 0.0, getattr(lb, field) if lb else 0.0))
    return out


def _number(value):
    if value is None:
        return NOT_TRACED  # not traced in that session
    return f"{value:.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


class CompareHtmlRenderer(Renderer):
    """render(session_a, out) against session_b: a table of deltas, then each figure A | B."""

    format = FORMATS["html"]

    def __init__(self, session_b, options=RenderOptions()):
        super().__init__(options)
        self.session_b = session_b

    def render(self, session_a, out):
        a, b = session_a, self.session_b
        rows = [(text(d.path), text(d.metric), _number(d.a), _number(d.b), _number(d.change),
                 "-" if d.ratio is None else f"{d.ratio:.2f}x") for d in deltas(a, b)]
        body = [f"<h1>dmabuf-top: {text(a.path)} (A) vs {text(b.path)} (B)</h1>",
                '<section id="deltas"><h2>Deltas</h2>',
                table_html(("path", "metric", "A", "B", "B - A", "B / A"), rows, numeric=(2, 3, 4, 5)),
                "</section>"]
        for name, draw in figures.FIGURES.items():
            body.append(f'<section id="compare-{escape(name)}"><h2>{escape(name)}</h2><div class="side">'
                        f"<div><p>A</p>{png_img(draw(a), name + '_a')}</div>"
                        f"<div><p>B</p>{png_img(draw(b), name + '_b')}</div></div></section>")
        out.write(page("dmabuf-top comparison", "\n".join(body)))

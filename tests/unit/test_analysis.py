"""Tables, percentiles, flame stacks, comparisons and renderers on hand-built sessions with known numbers."""
import csv
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmabuf_top.recording import session as s
from dmabuf_top.analysis import compare, export, figures, flame, html, tables
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording.session import Session, SessionWriter

MIB = 1024 * 1024
T0 = 1_000_000_000
HOSTILE = b"<script>alert(1)</script>\n=1+2\x1b[31m$x$\xff;a\"b'"


def build(path, samples=True, events=True, hist=True, stacks=True, name=HOSTILE):
    """Two buffers, two paths, one second: read moved 3 MiB (all CPU-copied), direct 8 MiB (pinned)."""
    writer = SessionWriter(path)
    writer.set_metadata(command=["load", "<model>"], started_ns=T0, kernel={"release": "7.2.13"})
    writer.add(s.Hook("iter/dmabuf", "buffers", State.LIVE, "iter/dmabuf", ""))
    writer.add(s.Hook("fn/filemap_read", "lifecycle", State.MISSING, "", "fentry refused (EPERM)"))
    writer.set_features({"features": {"fn/copy_page_to_iter": {"available": False, "via": None,
                                                                "detail": "not ftrace-able"}}})
    for step in range(4):  # snapshots at 0, 0.25, 0.5, 0.75 s
        t = T0 + step * 250_000_000
        writer.add(s.BufferSnapshot(t, 11, "system", name, 4 * MIB, 1 + step, 0))
        if step >= 2:
            writer.add(s.BufferSnapshot(t, 12, "udmabuf", b"weights", 8 * MIB, 1, 0, 99))
    if samples:
        writer.add(s.PathSample(T0 + 100_000_000, 11, 7, "read", 1 * MIB, 1 * MIB, 0, 256, 2, 0))
        writer.add(s.PathSample(T0 + 600_000_000, 11, 7, "read", 2 * MIB, 2 * MIB, 0, 512, 3, 1))
        writer.add(s.PathSample(T0 + 700_000_000, 12, 7, "direct", 8 * MIB, 0, 2048, 0, 8, 0))
    if events:
        # read: 3 calls of 1 MiB lasting 1.5, 3, 5 us; direct: 8 calls of 1 MiB lasting 100 us
        for i, micros in enumerate((1.5, 3, 5)):
            writer.add(s.IoEvent(T0 + (i + 1) * 100_000_000, int(micros * 1000), 7, 8, "load", "read", 11, MIB,
                                 0, 1, MIB, 0))
        for i in range(8):
            writer.add(s.IoEvent(T0 + 500_000_000 + i * 10_000_000, 100_000, 7, 9, "load", "direct", 12, MIB,
                                 0, 2, 0, 256))
    if hist:
        writer.add(s.LatencyBucket("read", 0, 1))
        writer.add(s.LatencyBucket("read", 1, 1))
        writer.add(s.LatencyBucket("read", 2, 1))
        writer.add(s.LatencyBucket("direct", 6, 8))
    if stacks:
        writer.add(s.Stack(1, "copy_page_to_iter\nfilemap_read\nvfs_read"))
        writer.add(s.Stack(2, "pin_user_pages_fast\n__iomap_dio_rw\nvfs_read"))
        writer.add(s.StackCount(1, "copy_read", "read", 3, 3 * MIB))
        writer.add(s.StackCount(2, "gup", "direct", 8, 2048))
    writer.add(s.Drop(T0, "ringbuf", 5))
    writer.add(s.Drop(T0 + 1, "ringbuf", 2))
    writer.close("command exited with code 0", 0, ended_ns=T0 + 1_000_000_000)
    return Session(path)


@pytest.fixture
def session(tmp_path):
    with build(tmp_path / "known.session") as opened:
        yield opened


def test_path_totals_from_counters(session):
    assert tables.path_totals(session) == [
        tables.PathTotal("direct", 8, 0, 8 * MIB, 0, 2048 * 4096, 0),
        tables.PathTotal("read", 5, 1, 3 * MIB, 3 * MIB, 0, 768 * 4096),
    ]
    assert tables.path_totals(session)[1].copied_fraction == 1.0


def test_path_totals_fall_back_to_events(tmp_path):
    with build(tmp_path / "events.session", samples=False) as session:
        assert tables.counter_table(session) == "io_events"
        assert tables.path_totals(session) == [
            tables.PathTotal("direct", 8, 0, 8 * MIB, 0, 8 * 256 * 4096, 0),
            tables.PathTotal("read", 3, 0, 3 * MIB, 3 * MIB, 0, 0),
        ]


def test_top_buffers(session):
    top = tables.top_buffers(session)
    assert [(b.inode, b.exporter, b.name, b.size, b.max_file_refs, b.io_bytes) for b in top] == [
        (12, "udmabuf", b"weights", 8 * MIB, 1, 8 * MIB),
        (11, "system", HOSTILE, 4 * MIB, 4, 3 * MIB),
    ]
    assert (top[0].first_seen_s, top[0].last_seen_s) == (0.5, 0.75)
    assert tables.top_buffers(session, limit=1) == top[:1]


def test_throughput_series_adds_up_to_the_bytes(session):
    width, series = tables.throughput_series(session, by="path", bins=10)
    assert width == 0.1
    for total in tables.path_totals(session):
        assert sum(rate * width for _, rate in series[total.path]) == pytest.approx(total.bytes)
    _, per_buffer = tables.throughput_series(session, by="buffer", bins=10)
    assert sorted(per_buffer) == [11, 12]
    assert per_buffer[12] == [(0.75, 8 * MIB / 0.1)]


@pytest.mark.parametrize("nanoseconds, bucket", [(0, 0), (999, 0), (1999, 0), (2000, 1), (3999, 1), (4000, 2),
                                                 (1_024_000, 10), (2_047_999, 10)])
def test_log2_bucket(nanoseconds, bucket):
    assert tables.log2_bucket(nanoseconds) == bucket


def test_percentiles_interpolate_inside_log2_buckets():
    histogram = {0: 50, 3: 50}  # half in [0, 2) us, half in [8, 16) us
    assert tables.percentile(histogram, 0.5) == 2.0
    assert tables.percentile(histogram, 0.99) == pytest.approx(8 + 8 * 49 / 50)
    assert tables.percentile({10: 1}, 0.5) == 1024 + 512
    assert tables.percentile({}, 0.5) == 0.0


def test_latency_from_histograms_and_from_events_agree(session, tmp_path):
    from_hist = tables.latency_table(session)
    with build(tmp_path / "nohist.session", hist=False) as without:
        assert tables.latency_histograms(without) == {"read": {0: 1, 1: 1, 2: 1}, "direct": {6: 8}}
        assert tables.latency_table(without) == from_hist
    assert [(r.path, r.calls, r.p50_us) for r in from_hist] == [("direct", 8, 96.0), ("read", 3, 3.0)]


def test_buffers_over_time_fills_absent_exporters_with_zero(session):
    assert tables.buffers_over_time(session) == {
        "system": [(0.0, 1, 4 * MIB), (0.25, 1, 4 * MIB), (0.5, 1, 4 * MIB), (0.75, 1, 4 * MIB)],
        "udmabuf": [(0.0, 0, 0), (0.25, 0, 0), (0.5, 1, 8 * MIB), (0.75, 1, 8 * MIB)],
    }


def test_missing_hooks_and_drops(session):
    assert tables.missing_hooks(session) == [("fn/copy_page_to_iter", "not ftrace-able"),
                                             ("fn/filemap_read", "fentry refused (EPERM)")]
    assert tables.dropped_events(session) == {"ringbuf": 7}
    summary = tables.summary(session)
    assert (summary["duration_s"], summary["buffers_seen"], summary["io_events"], summary["bytes_moved"],
            summary["dropped_events"], summary["exit_code"]) == (1.0, 2, 11, 11 * MIB, 7, 0)


def test_folded_stacks(session, tmp_path):
    assert flame.render_folded(flame.folded_stacks(session)) == (
        f"direct;vfs_read;__iomap_dio_rw;pin_user_pages_fast {2048 * 4096}\n"
        f"read;vfs_read;filemap_read;copy_page_to_iter {3 * MIB}\n")
    assert flame.folded_stacks(session, weight="hits") == {
        "direct;vfs_read;__iomap_dio_rw;pin_user_pages_fast": 8, "read;vfs_read;filemap_read;copy_page_to_iter": 3}
    with build(tmp_path / "events-only.session", stacks=False) as without:
        # io_events carry stack ids 1 and 2, whose frames were not recorded
        assert flame.folded_stacks(without) == {"read;[stack not recorded]": 3 * MIB,
                                                "direct;[stack not recorded]": 8 * MIB}


def test_folded_frames_cannot_break_the_format():
    assert flame._frame("a;b\nc\x1b") == "a:b\\nc\\x1b"


def test_compare_deltas(session, tmp_path):
    with build(tmp_path / "b.session", samples=False) as other:
        by_key = {(d.path, d.metric): d for d in compare.deltas(session, other)}
    assert (by_key["direct", "pinned_bytes"].a, by_key["direct", "pinned_bytes"].b) == (2048 * 4096, 2048 * 4096)
    read_calls = by_key["read", "calls"]
    assert (read_calls.a, read_calls.b, read_calls.change) == (5, 3, -2)
    assert by_key["read", "bytes"].ratio == 1.0
    assert by_key["read", "bytes_per_s"].a == 3 * MIB


class TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = set()
        self.images = []
        self.section_ids = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "section":
            self.section_ids.append(attrs.get("id"))


def test_html_report_is_self_contained_and_escaped(session):
    out = io.StringIO()
    html.HtmlRenderer().render(session, out)
    page = out.getvalue()
    parser = TagCollector()
    parser.feed(page)
    assert parser.section_ids == [key for key, _ in html.SECTIONS]
    assert "script" not in parser.tags and "<script>" not in page
    assert len(parser.images) == len(figures.FIGURES)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 5000 for src in parser.images)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\n=1+2\\x1b[31m$x$\\xff;a&quot;b&#x27;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "fentry refused (EPERM)" in page


def test_compare_page_has_both_sides(session, tmp_path):
    with build(tmp_path / "b.session") as other:
        out = io.StringIO()
        compare.CompareHtmlRenderer(other).render(session, out)
    parser = TagCollector()
    parser.feed(out.getvalue())
    assert len(parser.images) == 2 * len(figures.FIGURES)
    assert "deltas" in parser.section_ids


def test_figures_write_png_and_svg(session, tmp_path):
    written = figures.write_figures(session, tmp_path / "figs")
    assert len(written) == 2 * len(figures.FIGURES)
    for path in written:
        with open(path, "rb") as file:
            head = file.read(200)
        assert head.startswith(b"\x89PNG") if path.endswith(".png") else b"<svg" in head


def test_exports(session):
    out = io.StringIO()
    export.CsvRenderer(RenderOptions(table="buffers")).render(session, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[2][2] == "<script>alert(1)</script>\\n=1+2\\x1b[31m$x$\\xff;a\"b'"
    out = io.StringIO()
    export.JsonRenderer().render(session, out)
    data = json.loads(out.getvalue())
    assert bytes.fromhex(data["buffers"][1]["name_hex"]) == HOSTILE
    assert data["paths"][0]["bytes"] == 8 * MIB


def test_csv_cells_are_not_formulas():
    assert [export.csv_cell(v) for v in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "ok", 5, None)] == [
        "'=1+2", "'+1", "'-1", "'@SUM(A1)", "\\tx", "ok", "5", ""]


names = st.one_of(st.none(), st.binary(max_size=32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_hostile_names_in_html_csv_json(tmp_path_factory, name):
    buffers = [tables.BufferRow(1, "system", name, 4096, 1, 0, 0.0, 1.0, 0),
               tables.BufferRow(2, "x<y", b"ok", 4096, 1, 0, 0.0, 1.0, 0)]
    fragment = html.buffers_table_html(buffers)
    parser = TagCollector()
    parser.feed(fragment)
    assert parser.tags <= {"table", "tr", "th", "td", "span"}
    assert fragment.count("<tr>") == 3
    cells = [export.csv_cell(v) for v in (name, "x")]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    assert out.getvalue().count("\n") == 1
    assert list(csv.reader(io.StringIO(out.getvalue())))[0][0] == cells[0]
    assert json.loads(json.dumps(export._buffer_json(buffers[0])))["name_hex"] == (None if name is None else name.hex())


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.text(max_size=20), min_size=1, max_size=5), path=st.text(max_size=10))
def test_hostile_frames_make_valid_svg(frames, path):
    line = ";".join([flame._frame(path)] + [flame._frame(f) for f in frames])
    svg = flame.render_svg({line: 10, "plain;frame": 5})
    root = ET.fromstring(svg)
    titles = [el.text for el in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(title.startswith(flame._frame(path)) for title in titles)


def test_hostile_buffer_labels_render_in_figures(tmp_path):
    with build(tmp_path / "labels.session", name=b"$\\frac{1}{$ _hidden \x1b") as session:
        figures.to_png(figures.throughput_by_buffer(session))
    assert figures.safe_label(b"_x$") == " _x\\$"

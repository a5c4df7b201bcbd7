"""A session recorded where the copy or pin hooks were missing: its report says n/t (null in JSON,
empty in CSV), never a zero, in every renderer and in a comparison."""
import csv
import io
import json

from dmabuf_top.recording import session as s
from dmabuf_top.analysis import compare, export, figures, html, tables
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording.session import Session, SessionWriter

MIB = 1 << 20
T0 = 1_000_000_000


def build(path, copy_hook_live, gup_hook_live=True):
    writer = SessionWriter(path)
    writer.set_metadata(started_ns=T0)
    writer.add(s.Hook("copy_filemap_read", "cpu_copy", State.LIVE if copy_hook_live else State.MISSING,
                      "fentry" if copy_hook_live else "",
                      "filemap_read" if copy_hook_live else "filemap_read: fentry refused (EPERM)"))
    writer.add(s.Hook("gup_fast_enter", "gup", State.LIVE if gup_hook_live else State.MISSING,
                      "fentry" if gup_hook_live else "",
                      "gup_fast_fallback" if gup_hook_live else "gup_fast_fallback: fentry refused (EPERM)"))
    writer.add(s.Hook("lifecycle_fexit_export", "lifecycle", State.NOT_NEEDED, "",
                      "dma_buf_export: the tracepoints are present"))
    writer.add(s.PathSample(T0 + 100_000_000, 11, 7, "read", 3 * MIB, 0, 0, 768, 3, 0))
    writer.close("completed", 0, ended_ns=T0 + 1_000_000_000)
    return Session(path)


def test_missing_copy_hooks_are_none_not_zero(tmp_path):
    with build(tmp_path / "a.session", copy_hook_live=False, gup_hook_live=False) as session:
        assert tables.untraced_concerns(session) == {"cpu_copy", "gup"}
        (read,) = tables.path_totals(session)
        assert (read.bytes, read.cpu_copied_bytes, read.pinned_bytes, read.copied_fraction) == (3 * MIB, None, None,
                                                                                                  None)
        out = io.StringIO()
        export.JsonRenderer().render(session, out)
        (row,) = json.loads(out.getvalue())["paths"]
        assert row["cpu_copied_bytes"] is None and row["pinned_bytes"] is None
        out = io.StringIO()
        export.CsvRenderer(RenderOptions(table="paths")).render(session, out)
        (row,) = csv.DictReader(io.StringIO(out.getvalue()))
        assert row["cpu_copied_bytes"] == "" and row["pinned_bytes"] == ""
        cells = html.path_table_html(tables.path_totals(session))
        assert cells.count(">n/t<") == 3  # CPU-copied, copied / moved, pinned
        figures.zero_copy(session)  # draws, with no bar where nothing was traced


def test_live_hooks_and_not_needed_ones_keep_their_zeros(tmp_path):
    with build(tmp_path / "b.session", copy_hook_live=True) as session:
        assert tables.untraced_concerns(session) == set()
        (read,) = tables.path_totals(session)
        assert (read.cpu_copied_bytes, read.pinned_bytes, read.copied_fraction) == (0, 0, 0.0)


def test_comparing_a_traced_and_an_untraced_session(tmp_path):
    with build(tmp_path / "a.session", copy_hook_live=False) as a, build(tmp_path / "b.session", True) as b:
        by_key = {(d.path, d.metric): d for d in compare.deltas(a, b)}
        copied = by_key["read", "cpu_copied_bytes"]
        assert (copied.a, copied.b, copied.change, copied.ratio) == (None, 0, None, None)
        out = io.StringIO()
        compare.CompareHtmlRenderer(b).render(a, out)
        assert "n/t" in out.getvalue()

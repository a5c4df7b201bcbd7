"""A validate session of schema v1 (tests/data/validate-v1.session, see tests/data/README.md) still reports.

v1 kept the run as a JSON blob in metadata and invented per-path samples by spreading each
method's totals over its I/O window; v2 keeps methods as rows. The report must show both the same.
"""
import csv
import io
import json
import os
import shutil
import sqlite3

import pytest

from dmabuf_top.analysis import export, html, tables
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.recording.session import Session

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "data", "validate-v1.session")
MiB = 1 << 20
SIZE = 64 * MiB


@pytest.fixture
def v1(tmp_path):
    path = tmp_path / "v1.session"
    shutil.copyfile(FIXTURE, path)  # the reader may open it read-write (to roll back a hot journal)
    return str(path)


def section(page, key):
    start = page.index(f'<section id="{key}">')
    return page[start:page.index("</section>", start)]


def rendered(path):
    out = io.StringIO()
    with Session(path) as session:
        html.HtmlRenderer().render(session, out)
    return out.getvalue()


def test_the_fixture_is_a_v1_validate_session():
    db = sqlite3.connect(f"file:{os.path.abspath(FIXTURE)}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM metadata WHERE key = 'validate'").fetchone()[0] == 1
    finally:
        db.close()


def test_a_v1_validate_session_reports_its_methods(v1):
    page = rendered(v1)
    methods = section(page, "methods")
    for name in ("heap-read", "udmabuf-read-direct", "memfd-rw", "heap-rwfile-ioctl", "memfd-read"):
        assert f"<td>{name}</td>" in methods
    assert 'id="fig-methods"' in methods
    row = methods[methods.index("<td>heap-rwfile-ioctl</td>"):]
    cells = row[:row.index("</tr>")].split("</td>")
    assert [cell.rsplit(">", 1)[-1] for cell in cells[2:11]] == ["-"] * 9  # never ran: nothing measured
    assert "7.2.13-cloud-amd64" in section(page, "summary")
    assert "validate:heap" in section(page, "top-buffers")


def test_a_v1_validate_session_has_the_same_totals(v1):
    with Session(v1) as session:
        summary = tables.summary(session)
        assert summary["calls"] == 2 + 2 + 4 + 2 and summary["bytes_moved"] == 5 * SIZE
        assert summary["io_events"] is None  # validate keeps no per-call events: not "0 events"
        assert {t.path: t.bytes for t in tables.path_totals(session)} == {"read": 4 * SIZE, "write": SIZE}
        width, series = tables.throughput_series(session, by="path")
        assert sum(rate * width for points in series.values() for _, rate in points) == pytest.approx(5 * SIZE)
        data = export.tables_dict(session)
        out = io.StringIO()
        export.CsvRenderer(RenderOptions(table="methods")).render(session, out)
    json.dumps(data)
    rows = {row["name"]: row for row in data["methods"]}
    assert rows["heap-read"]["cpu_copied"] == SIZE and rows["heap-read"]["syscalls"] == 2
    assert rows["heap-rwfile-ioctl"]["syscalls"] is None
    table = {r["name"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert table["memfd-rw"]["cpu_copied"] == str(2 * SIZE) and table["heap-rwfile-ioctl"]["moved"] == ""


def test_a_v1_session_recorded_before_absent_rows_had_nulls_still_shows_dashes(v1):
    db = sqlite3.connect(v1)
    (blob,), = db.execute("SELECT value FROM metadata WHERE key = 'validate'")
    data = json.loads(blob)
    for row in data["methods"]:
        if row["verdict"]["kind"] == "absent":  # what the CI's session of 2026-11-21 holds
            row.update(dict.fromkeys(("moved", "reached", "cpu_copied", "page_cache_pages", "pinned_pages",
                                      "got_pages", "syscalls", "errors"), 0))
    db.execute("UPDATE metadata SET value = ? WHERE key = 'validate'", (json.dumps(data),))
    db.commit()
    db.close()
    with Session(v1) as session:
        rows = {row["name"]: row for row in export.tables_dict(session)["methods"]}
    assert rows["heap-rwfile-ioctl"]["syscalls"] is None and rows["heap-rwfile-ioctl"]["cpu_copied"] is None


def test_a_v1_session_has_no_dma_evidence_null_not_zero(v1):
    with Session(v1) as session:
        rows = session.query("SELECT device_bytes, device_to_buffer FROM methods")
    assert rows and all(row == (None, None) for row in rows)

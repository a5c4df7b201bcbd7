"""The screen at a fixed size, hostile names, the keys, and the --json schema; no terminal, no kernel."""
import json

import jsonschema
import pytest
from live_fixtures import HOSTILE, MiB, sample, two_frames

from dmabuf_top.inventory.types import Buffer
from dmabuf_top.live import app
from dmabuf_top.live.jsonout import JSON_SCHEMA, SCHEMA, render_json
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.screen import line_text, render, render_table
from dmabuf_top.live.view import ViewState

WIDTH, HEIGHT = 120, 20


def screen_text(frame, view, width=WIDTH, height=HEIGHT):
    lines = render(frame, view, width, height)
    assert len(lines) == height
    assert all(len(line_text(line)) <= width for line in lines)
    return [line_text(line) for line in lines]


def table_rows(lines):
    """The lines under the table's header (which starts with the pane's first column label)."""
    start = next(i for i, line in enumerate(lines) if line.split()[:1] in (["INODE"], ["PID"], ["PATH"], ["EXPORTER"]))
    return [line for line in lines[start + 1 : -1] if line.strip()]


def tab_line(lines):
    return next(line for line in lines if "1:Buffers" in line)


def test_buffers_pane_at_a_fixed_size():
    _, second = two_frames(cannot_see=["no dma-buf heaps and no udmabuf on this kernel"])
    text = screen_text(second, ViewState())
    assert text[0].startswith("dmabuf-top ") and "kernel 7.2.13-test" in text[0] and "measured 2.00s" in text[0]
    assert "buffers 3  bytes 21.0 MiB" in text[1] and "system 2/17.0 MiB" in text[1]
    assert "missing: cpu_copy gup" in text[3]
    assert text[4].startswith("cannot see: no dma-buf heaps")
    assert text[5].startswith("  ") and "fentry refused (EPERM)" in text[4] + text[5]  # wrapped, not cut
    del text[5]
    assert "[1:Buffers]" in text[5] and "sort: size v" in text[5]
    header = text[6].split()
    assert header[:5] == ["INODE", "EXPORTER", "SIZE", "ATT", "HOLDERS"]
    assert "PIN" not in header and "hidden: PIN pg/s" in text[5]  # at 120 columns it gives way to NAME
    weights = next(line for line in text if line.split()[:1] == ["101"])
    cells = weights.split()
    assert cells[:4] == ["101", "system", "16.0", "MiB"] and cells[-1] == "weights"  # the name is whole
    assert "33.6" in cells  # 32 MiB/s = 33.55 MB/s in the RD column
    assert cells.count("n/t") == 1  # CPU-copied: hooks missing, not zero
    assert text[-1].lstrip().startswith("1-3 of 3")
    wide = screen_text(second, ViewState(), width=200)
    cells = next(line for line in wide if line.split()[:1] == ["101"]).split()
    assert cells.count("n/t") == 2 and not any("hidden:" in line for line in wide)  # CPU-copied and pinned


@pytest.mark.parametrize("pane", ["buffers", "processes"])
def test_at_120_columns_every_cell_of_the_table_is_whole(pane):
    # The I/O columns (ASYNC the last added) outgrew 120 columns: the NAME cell, or the delay columns, were cut.
    # Columns give way by rank instead, and the line says which.
    _, second = two_frames()
    text = screen_text(second, ViewState(pane=pane))
    header = next(line for line in text if line.split()[:1] in (["INODE"], ["PID"]))
    assert header.split()[-1] == {"buffers": "NAME", "processes": "BLKIO%"}[pane]
    assert len(header.rstrip()) <= WIDTH
    rows = [line for line in table_rows(text) if line.split()[:1] in (["101"], ["10"])]
    assert rows and rows[0].split()[-1] == {"buffers": "weights", "processes": "25.0"}[pane]


def test_the_sorted_column_never_gives_way():
    _, second = two_frames()
    view = ViewState()
    view.sort["buffers"] = "pin"
    text = screen_text(second, view)
    header = next(line for line in text if line.split()[:1] == ["INODE"])
    assert "PIN pg/s" in header and header.split()[-1] == "NAME" and "hidden: ATT, XFER MB/s" in tab_line(text)


def test_hostile_names_cannot_reach_the_terminal():
    _, second = two_frames()
    lines = render(second, ViewState(), 200, HEIGHT)
    for line in lines:
        for text, _attr in line:
            assert "\x1b" not in text and "\n" not in text and "\x07" not in text and "\t" not in text
            assert all(ch.isprintable() for ch in text)
    joined = "\n".join(line_text(line) for line in lines)
    assert "\\x1b[2J\\x1b]0;owned\\x07evil\\nname\\t\\xff\\xfe<b>" in joined
    processes = "\n".join(line_text(line) for line in render(second, ViewState(pane="processes"), 200, HEIGHT))
    assert "\\x1b[31mnpu" in processes and "\x1b" not in processes


def test_new_and_freed_rows_carry_their_attribute():
    from live_fixtures import sample

    from dmabuf_top.inventory.types import Buffer
    from dmabuf_top.live.model import LiveModel

    model = LiveModel(1.0)
    model.update(sample(1.0))
    frame = model.update(sample(2.0, extra=[Buffer(inode=104, size=MiB, exporter="system", name=b"fresh",
                                                   file_refs=1, attachment_count=0)]))
    lines = render(frame, ViewState(), WIDTH, HEIGHT)
    start = next(i for i, line in enumerate(lines) if line_text(line).startswith("   INODE"))
    attrs = {line_text(line).split()[0]: line[0][1] for line in lines[start + 1 : start + 5]}
    assert attrs["104"] == "new" and attrs["101"] == "normal"


def test_tiny_terminal_still_renders_exactly_its_size():
    _, second = two_frames()
    for width, height in ((20, 3), (40, 8), (80, 1)):
        lines = render(second, ViewState(), width, height)
        assert len(lines) == height and all(len(line_text(line)) <= width for line in lines)


def test_first_paint_before_any_frame():
    text = screen_text(None, ViewState())
    assert "taking the first sample" in text[0]


def test_scrolling_is_clamped_to_the_rows():
    _, second = two_frames()
    view = ViewState(scroll=50)
    screen_text(second, view)
    assert view.scroll == 0  # three rows fit: nothing to scroll


def test_keys_switch_pane_sort_reverse_filter_pause_quit():
    view = ViewState()
    assert app.handle_key(view, ord("\t")) == "next_pane" and view.pane == "processes"
    assert app.handle_key(view, ord("3")) == "pane" and view.pane == "exporters"
    app.handle_key(view, ord("1"))
    app.handle_key(view, ord(">"))
    assert view.sort["buffers"] == "attachments"
    app.handle_key(view, ord("<"))
    assert view.sort["buffers"] == "size"
    app.handle_key(view, ord("r"))
    assert view.reverse["buffers"] is True
    for key in "/weights":
        app.handle_key(view, ord(key))
    assert view.editing_filter == "weights" and view.filter == ""
    app.handle_key(view, 127)  # backspace
    app.handle_key(view, ord("s"))
    assert app.handle_key(view, ord("\n")) == "apply_filter" and view.filter == "weights"
    assert view.editing_filter is None
    app.handle_key(view, 27)
    assert view.filter == ""
    app.handle_key(view, ord(" "))
    assert view.paused
    assert app.handle_key(view, ord("x")) is None
    assert app.handle_key(view, ord("q")) == "quit"


def test_filter_and_sort_keys_change_the_screen():
    _, second = two_frames()
    view = ViewState()
    before = screen_text(second, view)
    for key in "/weights\n":
        app.handle_key(view, ord(key))
    after = screen_text(second, view)
    assert [line.split()[0] for line in table_rows(after)] == ["101"]
    assert "filter: weights" in tab_line(after) and before != after
    app.handle_key(view, 27)
    app.handle_key(view, ord("r"))
    rows = [line.split()[0] for line in table_rows(screen_text(second, view))]
    assert rows == ["103", "102", "101"]


def test_footer_names_the_bindings():
    text = app.footer_text(ViewState())
    for fragment in ("q quit", "Tab pane", "< sort <", "> sort >", "r reverse", "/ filter", "Esc clear", "space pause"):
        assert fragment in text


def test_batch_table_has_one_header_and_marks_new_rows():
    _, second = two_frames()
    table = render_table(second, "buffers", ViewState(), max_rows=2)
    lines = table.splitlines()
    assert lines[0].startswith("dmabuf-top ")
    assert sum(line.startswith("   INODE") for line in lines) == 1
    assert len(lines) == 5 + 1 + 2


@pytest.mark.parametrize("max_rows", [None, 1])
def test_json_is_valid_against_its_schema_and_exact(max_rows):
    first, second = two_frames(pid=None)
    for frame in (first, second):
        text = render_json(frame, ViewState(), max_rows)
        assert text.isascii() and "\n" not in text
        obj = json.loads(text)
        jsonschema.validate(obj, JSON_SCHEMA)
        assert obj["schema"] == SCHEMA
    assert obj["elapsed_s"] == 2.0
    weights = obj["buffers"][0]
    assert weights["inode"] == 101 and weights["read"] == 32 * MiB and weights["copy"] is None
    assert weights["holders"] == [{"pid": 10, "fds": 1, "maps": 0}]
    if max_rows is None:
        hostile = next(b for b in obj["buffers"] if b["inode"] == 102)
        assert bytes.fromhex(hostile["name_hex"]) == HOSTILE
        assert next(b for b in obj["buffers"] if b["inode"] == 103)["name"] is None
        loader = next(p for p in obj["processes"] if p["pid"] == 10)
        assert loader["blkio"] == pytest.approx(25.0) and loader["delays"]["blkio"]["total_ns"] == 500_000_000
    else:
        assert all(len(obj[pane]) <= 1 for pane in ("buffers", "processes", "exporters", "paths"))


def test_schema_rejects_what_it_should():
    _, second = two_frames()
    obj = json.loads(render_json(second))
    for broken in ({**obj, "extra": 1}, {**obj, "elapsed_s": -1},
                   {**obj, "buffers": [{**obj["buffers"][0], "name_hex": "zz"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, JSON_SCHEMA)


def frames_with_an_old_and_a_young_process():
    """Delay accounting turned on by the view at tick 1000: loader (pid 10) started at tick 900, before it, so the
    kernel kept no block-I/O delay for it (it reads 0 for ever); npu (pid 20) started at tick 1100."""
    from live_fixtures import inventory

    from dmabuf_top.live.model import LiveModel
    from dmabuf_top.sampler import Sample
    from dmabuf_top.taskstats import Delay, DelayAccounting, TaskStats

    def stats(blkio_ns):
        delays = {"cpu": Delay(2, 40), "blkio": Delay(0, 0), "swapin": Delay(0, 0), "freepages": Delay(0, 0)}
        young = {**delays, "blkio": Delay(4, blkio_ns)}
        return {10: TaskStats(10, 1, "loader", 16, delays, started=900),
                20: TaskStats(20, 1, "npu", 16, young, started=1100)}

    model = LiveModel(1.0, kernel="7.2.13-test")
    since = DelayAccounting(True, since_ticks=1000)
    frames = [model.update(Sample(monotonic=t, wall=1_800_000_000 + t, inventory=inventory(), taskstats=stats(ns),
                                  delayacct=since)) for t, ns in ((100.0, 0), (102.0, 200_000_000))]
    return frames[1]


def test_a_process_older_than_delay_accounting_reads_na_not_zero():
    frame = frames_with_an_old_and_a_young_process()
    # the last three columns: BLKIO% SWAPIN% RECLAIM%
    screen = {int(line.split()[0]): line.split()[-3:] for line in
              table_rows(screen_text(frame, ViewState(pane="processes"), width=200))}
    assert screen == {10: ["n/a"] * 3, 20: ["10.0", "0.0", "0.0"]}  # 0.2 s of waiting in 2.0 s
    table = render_table(frame, "processes", ViewState(), width=200).splitlines()
    assert table[-3].split()[-3:] == ["BLKIO%", "SWAPIN%", "RECLAIM%"]
    assert {int(line.split()[0]): line.split()[-3:] for line in table[-2:]} == screen
    obj = json.loads(render_json(frame))
    jsonschema.validate(obj, JSON_SCHEMA)
    old, young = (next(p for p in obj["processes"] if p["pid"] == pid) for pid in (10, 20))
    assert old["blkio"] is None and old["swapin"] is None and old["reclaim"] is None
    assert "started before delay accounting was turned on" in old["delays_na"]
    assert old["delays"] == {"cpu": {"count": 2, "total_ns": 40}}  # the kinds the kernel did not keep are left out
    assert young["blkio"] == pytest.approx(10.0) and young["delays_na"] is None
    assert young["delays"]["blkio"] == {"count": 4, "total_ns": 200_000_000}


def test_the_arm64_cma_heap_reads_cma_default_where_its_name_is_wider_than_the_column():
    """Its exporter name is its CMA area's, default_cma_region, which the EXPORTER columns cut ("default_c~" in
    the Buffers pane's): the panes say cma:default; the header's totals, --json and the sort keep the name."""
    cma = Buffer(inode=104, size=2 * MiB, exporter="default_cma_region", name=b"frame", file_refs=1,
                 attachment_count=0)
    frame = LiveModel(1.0, kernel="7.2.13-test").update(sample(100.0, extra=[cma]))
    buffers = screen_text(frame, ViewState())
    assert next(line for line in buffers if line.split()[:1] == ["104"]).split()[:2] == ["104", "cma:default"]
    assert "default_cma_region 1/2.0" in buffers[1] and not any("default_c~" in line for line in buffers)
    exporters = table_rows(screen_text(frame, ViewState(pane="exporters")))
    assert any(line.split()[:2] == ["cma:default", "1"] for line in exporters), exporters
    assert "cma:default" in render_table(frame, "buffers", ViewState(), width=200)
    out = json.loads(render_json(frame))
    assert "default_cma_region" in {row["exporter"] for row in out["buffers"]}
    assert "cma:default" not in json.dumps(out)
    assert [row.values["exporter"] for row in frame.rows["buffers"] if row.key == 104] == ["default_cma_region"]
    # what the panes show is what the filter finds, and the name still is
    for needle in ("cma:default", "default_cma"):
        shown = table_rows(screen_text(frame, ViewState(filter=needle)))
        assert [line.split()[0] for line in shown] == ["104"], (needle, shown)
        shown = table_rows(screen_text(frame, ViewState(pane="exporters", filter=needle)))
        assert [line.split()[0] for line in shown] == ["cma:default"], (needle, shown)

"""Property tests for the parsers and renderers the fixed-example tests leave open: /proc fdinfo and maps
on any bytes, a session reader on random, truncated and corrupted files, the command line's numbers,
and every renderer of a buffer name given any name of up to the kernel's 31 bytes (DMA_BUF_NAME_LEN-1)."""
import csv
import io
import json
import math
import os
import random

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from live_fixtures import two_frames
from dmabuf_top import cli
from dmabuf_top.inventory import procfs
from dmabuf_top.commands.live import _parse_numbers
from dmabuf_top.errors import DmabufTopError
from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.inventory.render_snapshot import render_csv, render_json, render_table
from dmabuf_top.recording.session import BufferSnapshot, Session, SessionError, SessionWriter

NAME_MAX = 31
SPECIAL = [b"\x1b[2J", b"\x1b]0;t\x07", b"\x9b31m", b"\n", b"\r", b"\t", b"\x00", b"\xff\xfe", b"<script>", b"&amp;",
           b"\"", b",", b"=1+1", b"\\", b"\xe2\x80\xae", b"{{x}}", b"]]>"]
names = st.one_of(
    st.binary(max_size=NAME_MAX),
    st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=6).map(lambda parts: b"".join(parts)[:NAME_MAX]),
    st.text(max_size=NAME_MAX).map(lambda text: text.encode("utf-8", "surrogatepass")[:NAME_MAX]),
)
MAX_NAMES = [bytes([byte]) * NAME_MAX for byte in (0x1b, 0x0a, 0xff, 0x3c, 0x2c)]


# -- /proc parsers -------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_fdinfo_parser_never_raises(raw):
    info = procfs.parse_fdinfo(raw)
    assert info is None or isinstance(info, procfs.DmabufFdinfo)


@settings(deadline=None)
@given(name=names, prefix=st.sampled_from([b"pos:\t0\nflags:\t02\nsize:\t4096\ncount:\t1\nexp_name:\tsystem\n",
                                           b"size:\t-1\ncount:\tx\nexp_name:\t\n", b""]))
def test_fdinfo_name_is_taken_raw(name, prefix):
    info = procfs.parse_fdinfo(prefix + b"name:\t" + name + b"\n")
    assert info is None or isinstance(info, procfs.DmabufFdinfo)


@settings(deadline=None)
@given(st.binary(max_size=300))
@example(b"7f0000000000-7f0000001000 rw-s 00000000 00:0d 1234                       /dmabuf:\x1b[31m\\012x")
@example(b"ffffffffffffffffffff-0 rw-s 0 0:0 -1 /dmabuf:")
def test_maps_parser_never_raises(line):
    entry = procfs.parse_maps_line(line)
    assert entry is None or isinstance(entry, procfs.MapsEntry)


# -- the session reader --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "good.db"
    writer = SessionWriter(path)
    for step in range(200):
        writer.add(BufferSnapshot(step, step, "system", bytes([step]) * 31, 4096, 1, 0))
    writer.close("completed", 0)
    return path  # (a path: hypothesis prints the arguments of a failing case)


def _open_and_read(path):
    try:
        with Session(path) as session:
            session.query("SELECT * FROM buffer_snapshots")
            session.hooks()
    except SessionError as error:
        assert "\n" not in str(error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=4096))
def test_random_bytes_are_refused_with_one_line(tmp_path, raw):
    path = tmp_path / "random.db"
    path.write_bytes(raw)
    with pytest.raises(SessionError):
        Session(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_corrupted_sessions_are_read_or_refused_never_a_crash(tmp_path, good_session, data):
    raw = bytearray(good_session.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
    else:
        rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
        for _ in range(data.draw(st.integers(1, 64), label="flips")):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    path = tmp_path / "bad.db"
    path.write_bytes(bytes(raw))
    _open_and_read(path)


# -- command-line numbers ------------------------------------------------------------------------

NUMBER_WORDS = st.one_of(st.sampled_from(["0", "-1", "nan", "NaN", "inf", "-inf", "1e309", "1e-320", "0.0", "1.5",
                                          "99999999999999999999", "-0", "1_0", " 1", "0x10", "", "1e400"]),
                         st.floats().map(repr), st.integers().map(str))


@settings(deadline=None)
@given(st.lists(NUMBER_WORDS, max_size=3))
def test_live_interval_and_count_are_finite_positive_or_one_line_errors(words):
    try:
        interval, count = _parse_numbers(words)
    except DmabufTopError as error:
        assert error.exit_code == 2 and "\n" not in str(error)
        return
    assert math.isfinite(interval) and interval > 0
    assert count is None or (isinstance(count, int) and count >= 1)


@pytest.mark.parametrize("values", [["--interval", "nan"], ["--interval", "inf"], ["--duration", "nan"],
                                    ["--interval", "-1"], ["--duration", "0"],
                                    # finite, but infinite once in nanoseconds (was an OverflowError traceback)
                                    ["--interval", "1e300"], ["--duration", "1e305"]], ids=" ".join)
def test_record_refuses_non_finite_times_before_creating_anything(values, tmp_path, capsys):
    code = cli.main(["record", "-o", str(tmp_path / "s.db"), "--duration", "0.2", *values])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.splitlines()) == 1, captured
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("args", [
    ["validate", "--size", "-1"], ["validate", "--size", "0"], ["validate", "--size", "1e3"],
["validate", "--chunk", "0"],
    ["live", "-r", "0"], ["live", "-r", "-5"], ["snapshot", "-p", "notapid"],
    ["nan"], ["inf", "1"], ["1", "1e400"], ["1", "0"], ["-1"], ["0"],
], ids=" ".join)
def test_hostile_numbers_on_the_command_line_are_one_line_usage_errors(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code not in (0, None), captured
    assert "Traceback" not in captured.err and captured.out == ""
    assert len([line for line in captured.err.splitlines() if line.strip()]) <= 3, captured.err  # click: usage + error


# -- renderers of buffer names -------------------------------------------------------------------


def inventory_named(name):
    buffers = [Buffer(inode=1, size=4096, exporter="system", name=name, file_refs=2, attachment_count=0),
               Buffer(inode=2, size=8192, exporter="udmabuf", name=b"plain", file_refs=1, attachment_count=0)]
    holders = Holders(fds=[FdRef(10, 3, 1), FdRef(10, 4, 2)], maps=[MapRef(10, 1, 0x1000, 0x2000)], comms={10: name})
    return build_inventory(buffers, holders, "iterator", "iterator")


def assert_terminal_safe(text):
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text and "\r" not in text
    assert all(ch.isprintable() or ch == "\n" for ch in text), [ch for ch in text if not ch.isprintable()]


@settings(max_examples=150, deadline=None)
@given(name=names)
def test_snapshot_renderers_keep_any_name_safe(name):
    for max_name in MAX_NAMES:
        _check_snapshot(max_name)
    _check_snapshot(name)


def _check_snapshot(name):
    inventory = inventory_named(name)
    for view in ("processes", "buffers", "exporters", "grid"):
        table = render_table(inventory, view)
        assert_terminal_safe(table)
    rows = list(csv.reader(io.StringIO(render_csv(inventory, "buffers"))))
    assert len(rows) == 3  # header + one row per buffer, whatever the name holds
    out = json.loads(render_json(inventory))
    named = next(b for b in out["buffers"] if b["inode"] == 1)
    assert bytes.fromhex(named["name_hex"]) == name


@settings(max_examples=80, deadline=None)
@given(name=names)
def test_live_screen_json_and_prometheus_keep_any_name_safe(name):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from dmabuf_top.live.jsonout import render_json as live_json
    from dmabuf_top.live.model import LiveModel
    from dmabuf_top.live.view import ViewState
    from dmabuf_top.sampler import Sample
    from dmabuf_top.live.screen import render_table as live_table
    from dmabuf_top.prometheus import DmabufCollector

    model = LiveModel(1.0, kernel="k")
    frame = None
    for t in (1.0, 2.0):
        frame = model.update(Sample(t, t, inventory_named(name), None, {}, False))
    for pane in ("buffers", "processes", "exporters", "paths"):
        assert_terminal_safe(live_table(frame, pane, ViewState(pane=pane), None))
    out = json.loads(live_json(frame, ViewState(), None))
    assert bytes.fromhex(next(b for b in out["buffers"] if b["inode"] == 1)["name_hex"]) == name
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DmabufCollector(lambda: inventory_named(name), None, 20))
    text = generate_latest(registry).decode()
    assert "\x1b" not in text
    labelled = [s for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "dmabuf_buffer_bytes"]
    assert sorted(s.labels["inode"] for s in labelled) == ["1", "2"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(names, st.sampled_from(MAX_NAMES)))
def test_report_html_holds_the_name_only_as_text(tmp_path_factory, name):
    """(The flame graph's SVG has its own property test in test_analysis.)"""
    from html.parser import HTMLParser

    from dmabuf_top.analysis import html

    path = tmp_path_factory.mktemp("named") / "s.db"
    writer = SessionWriter(path)
    writer.add(BufferSnapshot(1, 7, "system", name, 4096, 1, 0))
    writer.close("completed", 0)
    with Session(path) as session:
        out = io.StringIO()
        html.HtmlRenderer().render(session, out)
    tags, texts = [], []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)

        def handle_data(self, data):
            texts.append(data)

    Collect(convert_charrefs=True).feed(out.getvalue())
    assert "script" not in tags and "iframe" not in tags
    assert tags.count("html") == 1
    assert "\x1b" not in out.getvalue()  # raw ESC neither in markup nor in text

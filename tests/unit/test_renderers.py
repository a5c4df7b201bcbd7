"""Every renderer `report` and `flame` offer (analysis.renderers.FORMATS), over a recording, a validate
session and a v1 validate session, each holding hostile strings where a process or a kernel sets them:
each output is well-formed for its format, and no hostile string comes out able to act (no markup, no
control byte, no spreadsheet formula, no broken line)."""
import csv
import io
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.analysis.compare import CompareHtmlRenderer
from dmabuf_top.analysis.renderers import FORMATS, RenderOptions, Renderer
from dmabuf_top.probes.iopaths import Counters
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.validate import runner
from dmabuf_top.validate.store import record_run
from dmabuf_top.validate.verdict import Verdict

MiB = 1 << 20
S = 1_000_000_000
# What a process may name a buffer, itself or its program, and what reaches frames and hook details.
HOSTILE = "=HYPERLINK(\"http://x\")<script>alert(1)</script>\x1b[2J\r\n\x07;evil\x9b1m"
HOSTILE_BYTES = HOSTILE.encode("utf-8", "surrogatepass")[:31]
FORMULA = ("=", "+", "-", "@", "\t", "\r")
V1_FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "data", "validate-v1.session")


def recording(path):
    with s.SessionWriter(path) as writer:
        writer.set_metadata(command=[HOSTILE, "--flag"], started_ns=1 * S, interval_s=0.1)
        writer.add(s.Hook("copy_filemap_read", "cpu_copy", State.MISSING, "", HOSTILE))
        for t in (1, 2):
            writer.add(s.BufferSnapshot(t * S, 5, "system", HOSTILE_BYTES, 4096, 1, 0))
            writer.add(s.BufferSnapshot(t * S, 6, HOSTILE, b"@SUM(A1)", 8192, 1, 1))
        writer.add(s.LifecycleEvent(S + 1, 5, "export", 9, HOSTILE, 4096, 3))
        writer.add(s.PathSample(2 * S, 5, 0, "read", 4096, 4096, 0, 1, 1, 0))
        writer.add(s.IoEvent(2 * S, 1000, 9, 9, HOSTILE, "read", 5, 4096, 0, 1, 4096, 0))
        writer.add(s.Stack(1, f"copy_page_to_iter\n{HOSTILE}\nvfs_read"))
        writer.add(s.StackCount(1, "copy_read", "read", 1, 4096))
        writer.add(s.LatencyBucket("read", 3, 1))
        writer.add(s.Drop(2 * S, HOSTILE, 1))
    return path


def validate_session(path):
    """A `validate -- CMD` run whose command's name is hostile, beside a heap method and its hostile dma-buf."""
    command = runner.MethodResult(HOSTILE, " ".join([HOSTILE, "-x"]), "command", False, 2 * MiB,
                                  Verdict("copies", HOSTILE, 1.0, (HOSTILE,)))
    heap = runner.MethodResult("heap-read", "read() into a heap buffer", "heap", False, 2 * MiB,
                               Verdict("copies", "1 copy, via page cache", 1.0))
    for start_s, result, inode in ((10, heap, 7), (12, command, 0)):
        result.started_ns = start_s * S
        result.io_started_ns, result.ended_ns, result.closed_ns = start_s * S + S // 5, start_s * S + S, start_s * S + S
        result.alloc_ms, result.io_ms, result.close_ms = 200.0, 800.0, 0.1
        result.moved = result.reached = result.cpu_copied = 2 * MiB
        result.syscalls, result.buffer_inode, result.checksum = 2, inode, "ok"
        result.paths = {"read": Counters(calls=2, bytes=2 * MiB, cpu_copied=2 * MiB).to_dict()}
        result.notes = [HOSTILE]
        result.flows = [{"path": "read", "src_kind": "file", "dst_kind": "dmabuf", "src_fs": HOSTILE, "dst_fs": "",
                         "bytes": 2 * MiB, "calls": 2, "error": 0}]
        result.evidence = [{"stack_id": 4, "point": "cpu_copy_read", "path": "read", "hits": 2, "amount": 2 * MiB}]
    heap.snapshots = [s.BufferSnapshot(10 * S + S // 10, 7, "system", HOSTILE_BYTES, 2 * MiB, 1, 0)]
    heap.inventory_passes = [10 * S + S // 10]
    run = runner.ValidateRun([heap, command], runner.SourceFile(f"/mnt/{HOSTILE}", 2 * MiB, "d", "ext4"), False,
                             [HookState("gup_fast", "gup", "pin_user_pages_fast", State.MISSING, None, HOSTILE)], {},
                             {4: ["copy_page_to_iter", HOSTILE, "ksys_read"]}, [HOSTILE], 0,
                             kernel={"release": HOSTILE})
    record_run(run, str(path))
    return path


def v1_validate_session(path):
    shutil.copyfile(V1_FIXTURE, path)
    return path


SESSIONS = {"recording": recording, "validate": validate_session, "validate-v1": v1_validate_session}


def the_compare_renderer(options):
    """The comparison page: the recording against the session at hand."""
    class AgainstRecording(Renderer):
        format = CompareHtmlRenderer.format

        def render(self, session, out):
            with s.Session(str(recording_path)) as other:
                CompareHtmlRenderer(other, options).render(session, out)

    return AgainstRecording(options)


recording_path = None

RENDERERS = [pytest.param(name, RenderOptions(), id=name) for name in FORMATS] + [
    pytest.param("csv", RenderOptions(table=table), id=f"csv-{table}") for table in ("paths", "latency", "methods")
] + [pytest.param("compare", RenderOptions(), id="compare"),
     pytest.param("svg", RenderOptions(weight="hits"), id="svg-hits"),
     pytest.param("folded", RenderOptions(weight="hits"), id="folded-hits")]


@pytest.fixture(params=sorted(SESSIONS))
def session(request, tmp_path):
    global recording_path
    recording_path = recording(tmp_path / "other.session")
    path = SESSIONS[request.param](tmp_path / f"{request.param}.session")
    with s.Session(str(path)) as opened:
        opened.hostile = request.param != "validate-v1"  # the v1 fixture holds plain names
        yield opened


def no_control_bytes(text):
    bad = [ch for ch in text if (ord(ch) < 0x20 and ch not in "\n") or 0x7f <= ord(ch) < 0xa0]
    assert not bad, bad[:5]


class Markup(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.open = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def check_html(text, shows_names):
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = Markup()
    parser.feed(text)
    parser.close()
    assert parser.tags.count("html") == 1 and parser.tags.count("body") == 1
    assert "script" not in parser.tags and "iframe" not in parser.tags
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text or not shows_names  # the names are there, as text
    no_control_bytes(text)


def check_json(text, _hostile=True):
    data = json.loads(text)
    assert isinstance(data, dict)
    no_control_bytes(text)  # json escapes them: \u001b
    return data


def check_perfetto(text, _hostile=True):
    data = check_json(text)
    assert isinstance(data["traceEvents"], list)
    assert all({"ph", "pid", "ts"} <= set(event) for event in data["traceEvents"])


def check_csv(text, _hostile=True):
    no_control_bytes(text)
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == text.count("\n")  # one line per row: no name broke a line
    assert rows and all(len(row) == len(rows[0]) for row in rows)
    for row in rows[1:]:
        for cell in row:
            if cell.startswith(FORMULA):
                float(cell)  # only a number may start like a formula


def check_svg(text, _hostile=True):
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert not [element for element in root.iter() if element.tag.endswith(("script", "foreignObject"))]
    assert "<script" not in text
    no_control_bytes(text)


FOLDED_LINE = re.compile(r"^(?P<frames>[^;\s][^\n]*) (?P<weight>[0-9]+)$")


def check_folded(text, _hostile=True):
    no_control_bytes(text)
    lines = text.splitlines()
    assert lines, "no stacks"
    for line in lines:
        match = FOLDED_LINE.match(line)
        assert match, line
        assert int(match["weight"]) > 0 and all(frame for frame in match["frames"].split(";"))


CHECKS = {"html": check_html, "compare": lambda text, _: check_html(text, shows_names=False), "json": check_json,
          "perfetto": check_perfetto,
          "csv": check_csv, "svg": check_svg, "folded": check_folded}


@pytest.mark.parametrize("name, options", RENDERERS)
def test_every_renderer_writes_its_format_and_neutralises_hostile_strings(session, name, options):
    renderer = the_compare_renderer(options) if name == "compare" else FORMATS[name].create(options)
    out = io.StringIO()
    renderer.render(session, out)
    CHECKS[name](out.getvalue(), session.hostile)


def test_every_format_names_its_own_renderer_class():
    assert set(CHECKS) >= set(FORMATS)
    for name, entry in FORMATS.items():
        cls = entry.renderer_class()
        assert issubclass(cls, Renderer) and cls.format is entry and entry.extensions


def test_the_hostile_strings_are_there_to_neutralise(tmp_path):
    """The sessions above do carry the hostile strings: in buffer names, a command's method name, frames."""
    with s.Session(str(recording(tmp_path / "r.session"))) as recorded:
        assert recorded.query("SELECT name FROM buffer_snapshots WHERE inode = 5")[0][0] == HOSTILE_BYTES
    with s.Session(str(validate_session(tmp_path / "v.session"))) as validated:
        names = [name for (name,) in validated.query("SELECT name FROM methods ORDER BY rowid")]
        assert names == ["heap-read", HOSTILE]
        assert HOSTILE in validated.query("SELECT frames FROM stacks")[0][0]

"""Every user-visible command on this machine's kernel (the CI host: no heaps, no udmabuf, fentry refused,
no kprobes), as root and as nobody: each runs, or refuses with one line and a non-zero code; no traceback;
a concern whose hooks are missing is null in JSON and n/t in tables, never a zero.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = [sys.executable, "-m", "dmabuf_top"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]


def run(args, nobody=False, cwd=ROOT, timeout=180):
    argv = [*(NOBODY if nobody else []), *DMABUF_TOP, *args]
    env = {**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def one_line_refusal(result, *words):
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dmabuf-top") or lines[0].startswith("Error"), lines
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def missing():
    """The concerns this kernel leaves untraced, from `trace --json` (the tracer's own word)."""
    result = run(["trace", "--json", "0.1", "1"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["missing"]


@pytest.fixture(scope="module")
def busy_reader():
    """A process that reads and writes ordinary files without pause, so a short trace window always sees the
    read and write paths (a quiet CI machine may make no syscalls at all in 0.1 s). It maps a memfd: system-wide,
    the reads of a process that maps no shared memory are of no interest and pass uncounted."""
    loop = ("import mmap, os, tempfile\n"
            "memfd = os.memfd_create('busy-reader'); os.ftruncate(memfd, 4096); shared = mmap.mmap(memfd, 4096)\n"
            "fd, name = tempfile.mkstemp(); os.unlink(name)\n"
            "while True:\n"
            "    os.pwrite(fd, b'x' * 4096, 0)\n"
            "    os.pread(fd, 4096, 0)\n"
            "    open('/etc/os-release', 'rb').read()\n")
    reader = subprocess.Popen([sys.executable, "-c", loop])
    yield reader.pid
    reader.kill()
    reader.wait()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("degraded") / "host.db"
    result = run(["record", "-o", str(path), "--", sys.executable, "-c", "open('/etc/os-release').read()"])
    assert result.returncode == 0, result.stderr
    return path


# -- as root: everything runs -------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["doctor"], ["doctor", "--json"],
    ["snapshot"], ["snapshot", "--json"], ["snapshot", "--csv", "--buffers"],
    ["snapshot", "--source", "bufinfo"], ["snapshot", "--source", "fdinfo"], ["snapshot", "--holders", "procfs"],
    ["trace", "0.1", "1"], ["-C", "0.1", "1"], ["-C", "--pane", "paths", "0.1", "1"], ["--json", "0.1", "1"],
], ids=" ".join)
def test_runs_as_root(args):
    result = run(args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_this_host_really_is_degraded(missing):
    # The rest of this file is about a kernel without the copy and pin hooks; say so if that changed.
    if "cpu_copy" not in missing:
        pytest.skip("this kernel traces CPU copies: the guest suite covers the measured case")
    assert {"cpu_copy", "gup"} <= set(missing)


def test_trace_json_leaves_missing_concerns_null(missing, busy_reader):
    out = json.loads(run(["trace", "--json", "0.1", "1"]).stdout)
    assert out["paths"], "the syscall tracepoints count the busy reader's reads on any kernel"
    for counters in [*out["paths"].values(), *out["interval_paths"].values(), *out["processes"]]:
        if "cpu_copy" in missing:
            assert counters["cpu_copied"] is None
        if "gup" in missing:
            assert counters["pinned_pages"] is None and counters["got_pages"] is None


def test_trace_table_shows_not_traced(missing, busy_reader):
    text = run(["trace", "0.1", "1"]).stdout
    rows = [line for line in text.splitlines() if line.startswith(("read ", "write "))]
    assert rows
    for row in rows:
        assert row.split().count("n/t") == ("cpu_copy" in missing) + 2 * ("gup" in missing)


def test_live_json_leaves_missing_concerns_null(missing, busy_reader):
    frame = json.loads(run(["--json", "0.1", "1"]).stdout.splitlines()[0])
    assert set(missing) <= set(frame["hooks"]["missing"])
    assert frame["paths"] and frame["processes"]
    for row in [*frame["paths"], *frame["processes"]]:
        if "cpu_copy" in missing:
            assert row["copy"] is None, row
        if "gup" in missing:
            assert row["pin"] is None, row


def test_live_table_shows_not_traced(missing, busy_reader):
    text = run(["-C", "--pane", "paths", "0.1", "1"]).stdout
    header = next(line for line in text.splitlines() if line.startswith("PATH"))
    # Headers hold spaces ("CPU-CP MB/s"): cut them at the right-aligned columns' ends instead.
    columns = ["PATH", "CALLS/s", "MB/s", "CPU-CP", "PIN"]
    assert header.split()[:6] == ["PATH", "CALLS/s", "MB/s", "CPU-CP", "MB/s", "PIN"], header
    read = next(line for line in text.splitlines() if line.startswith("read "))
    cells = dict(zip(columns, read.split()))
    if "cpu_copy" in missing:
        assert cells["CPU-CP"] == "n/t"
    if "gup" in missing:
        assert cells["PIN"] == "n/t"


def test_record_and_every_report_format_run(session, tmp_path):
    for name in ("r.html", "r.json", "r.csv", "r.trace.json"):
        result = run(["report", str(session), "-o", str(tmp_path / name)])
        assert result.returncode == 0, result.stderr
    result = run(["flame", str(session), "-o", str(tmp_path / "f.svg")])
    assert result.returncode == 0, result.stderr


def test_report_leaves_missing_concerns_null(session, tmp_path, missing):
    """The session knows which hooks were missing: its tables must not turn them into zeros."""
    out = tmp_path / "r.json"
    assert run(["report", str(session), "-o", str(out)]).returncode == 0
    tables = json.loads(out.read_text())
    assert tables["missing_hooks"]
    assert tables["paths"]
    for row in tables["paths"]:
        if "cpu_copy" in missing:
            assert row["cpu_copied_bytes"] is None, row
        if "gup" in missing:
            assert row["pinned_bytes"] is None, row
    csv_out = tmp_path / "p.csv"
    assert run(["report", str(session), "--table", "paths", "-o", str(csv_out)]).returncode == 0
    header, *rows = [line.split(",") for line in csv_out.read_text().splitlines()]
    for row in rows:
        cells = dict(zip(header, row))
        if "cpu_copy" in missing:
            assert cells["cpu_copied_bytes"] == "", cells
        if "gup" in missing:
            assert cells["pinned_bytes"] == "", cells


def test_validate_runs_and_claims_zero_copy_only_on_dma_evidence(tmp_path, missing):
    # Before issue 15: "never zero-copy" with the copy and GUP hooks missing. Zero-copy is now a positive finding of
    # the block layer (the device wrote the payload into the buffer's own pages), which needs neither hook.
    result = run(["validate", "--size", "1M", "--dir", str(tmp_path), "--json"])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    verdicts = {m["name"]: m for m in out["methods"]} if isinstance(out["methods"], list) else out["methods"]
    assert verdicts
    for method in verdicts.values():
        if method["verdict"]["kind"] == "zero-copy":
            assert method["device_to_buffer"] == method["payload"] == 1 << 20, method
            assert method["checksum"] == "ok" and method["direct"], method


# -- without privileges: one line each, exit code != 0 -----------------------------------------


@pytest.mark.parametrize("args", [["snapshot"], ["snapshot", "--source", "fdinfo"]], ids=" ".join)
def test_snapshot_without_privileges_says_whose_buffers_it_cannot_see(args):
    """/proc is the one source left to nobody, and it shows only nobody's own processes: a table of
    zeros without saying so would be a lie by omission."""
    result = run([*args, "--json"], nobody=True, cwd="/")
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("could not be read" in note and "run as root" in note for note in notes), notes
    table = run(args, nobody=True, cwd="/").stdout
    assert "could not be read" in table


@pytest.mark.parametrize("args", [
    ["doctor"], ["snapshot", "--source", "bufinfo"], ["snapshot", "--source", "iterator"],
    ["trace", "0.1", "1"], ["-C", "0.1", "1"], ["--json", "0.1", "1"],
    ["record", "-o", "/tmp/dmabuf-top-nobody.db", "--duration", "0.1"],
    ["validate", "--size", "1M", "--dir", "/tmp"], ["validate", "--", "true"],
    ["export", "--listen", "127.0.0.1:0"],
], ids=" ".join)
def test_refuses_without_privileges_in_one_line(args):
    result = run(args, nobody=True, cwd="/")
    one_line_refusal(result)
    assert result.stdout == ""
    assert not os.path.exists("/tmp/dmabuf-top-nobody.db")


def test_report_of_a_session_nobody_may_read_is_one_line(session, tmp_path):
    result = run(["report", str(session), "-o", "/tmp/dmabuf-top-nobody.html"], nobody=True, cwd="/")
    one_line_refusal(result)
    assert not os.path.exists("/tmp/dmabuf-top-nobody.html")

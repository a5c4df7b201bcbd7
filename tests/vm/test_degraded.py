"""The user-visible commands on the lab kernel, with the buffer iterator passed over (--source bufinfo or
fdinfo) and without privileges: each runs or refuses in one line, shows the buffers it can see (a hostile
name never reaches the terminal raw), and leaves what it cannot see null, never zero.

The live view and record have no switch to pass over the iterator: their fallback is covered by
Sources/collect's unit and host tests, not here.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmabuf_top import cli
from dmabuf_top.alloc import alloc_heap, alloc_udmabuf

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = [sys.executable, "-m", "dmabuf_top"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
HOSTILE = b"\x1b]0;pwn\x07\x1b[2J<b>&\n\xff"


def run(args, nobody=False):
    """As nobody: a process of its own. As root: in this process (a Python start costs seconds under TCG)."""
    result = subprocess.run([*(NOBODY if nobody else []), *DMABUF_TOP, *args], capture_output=True, text=True,
                            errors="surrogateescape", cwd="/" if nobody else ROOT, timeout=600,
                            env={**os.environ, "HOME": "/tmp"})
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def run_here(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.fixture(scope="module")
def held():
    """A hostile-named heap buffer and a udmabuf, held by this (root) process."""
    if not os.path.exists("/dev/dma_heap/system"):
        pytest.skip("not inside the lab guest")
    with alloc_heap(64 << 10, name=HOSTILE) as heap, alloc_udmabuf(128 << 10, name=b"udmabuf\tweights") as udmabuf:
        yield {heap.inode: heap, udmabuf.inode: udmabuf}


@pytest.mark.parametrize("source", ["iterator", "bufinfo", "fdinfo"])
def test_snapshot_from_each_source_sees_the_buffers(held, source, capsys):
    result = run_here(["snapshot", "--json", "--source", source], capsys)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["source"] == source
    sizes = {b["inode"]: b["size"] for b in out["buffers"]}
    assert {inode: sizes.get(inode) for inode in held} == {inode: buf.size for inode, buf in held.items()}
    table = run_here(["snapshot", "--buffers", "--source", source], capsys).stdout
    assert "\x1b" not in table and "\x07" not in table
    assert sum(line.count("<b>&") for line in table.splitlines()) == 1  # one row, the name escaped on it


def test_live_batch_and_trace_run_and_leave_only_missing_concerns_null(held, capsys):
    frame = json.loads(run_here(["--json", "0.3", "1"], capsys).stdout.splitlines()[0])
    assert set(held) <= {b["inode"] for b in frame["buffers"]}
    missing, absent = frame["hooks"]["missing"], frame["hooks"]["absent"]  # absent: rw_file on a stock kernel
    for row in frame["paths"]:
        assert (row["copy"] is None) is ("cpu_copy" in missing or row["path"] in missing or row["path"] in absent), row
        assert (row["pin"] is None) is ("gup" in missing or row["path"] in missing or row["path"] in absent), row
    table = run_here(["-C", "0.3", "1"], capsys)
    assert table.returncode == 0 and "\x1b" not in table.stdout
    trace = run_here(["trace", "--json", "0.3", "1"], capsys)
    assert trace.returncode == 0, trace.stderr
    out = json.loads(trace.stdout)
    for counters in out["paths"].values():
        assert (counters["cpu_copied"] is None) is ("cpu_copy" in out["missing"])


def test_without_privileges(held):
    """nobody: /proc shows none of root's buffers, and the snapshot says so; the BPF commands refuse."""
    out = json.loads(run(["snapshot", "--json"], nobody=True).stdout)
    assert out["source"] == "fdinfo"
    assert not set(held) & {b["inode"] for b in out["buffers"]}
    assert any("could not be read" in note for note in out["notes"]), out["notes"]
    # One refusal per kind (the host suite runs them all): BPF privileges, and debugfs.
    for args in (["record", "-o", "/tmp/nobody.db", "--duration", "1"], ["snapshot", "--source", "bufinfo"]):
        result = run(args, nobody=True)
        assert result.returncode != 0 and result.stdout == "", (args, result.stdout)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)

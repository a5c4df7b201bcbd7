"""The live view on this kernel (no heaps, fentry refused): in tmux as a user sees it, and its batch modes."""
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
from tmux_session import Tmux, wait_for_file

from dmabuf_top.live.jsonout import JSON_SCHEMA

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = str(ROOT / ".venv" / "bin" / "dmabuf-top")


@pytest.fixture
def tmux(tmp_path):
    made = []

    def start(command, **size):
        made.append(Tmux(tmp_path / "tmux.sock", command, **size))
        return made[-1]

    yield start
    for session in made:
        session.kill()


def test_view_says_what_it_cannot_see_shows_tracepoint_paths_and_q_restores_the_terminal(tmux, tmp_path):
    done = tmp_path / "done"
    before = subprocess.run(["sysctl", "-n", "kernel.task_delayacct"], capture_output=True, text=True).stdout
    term = tmux(f"cd {ROOT}; {DMABUF_TOP} 0.5; rc=$?; stty -a > {done}.stty; echo EXIT=$rc > {done}; sleep 60")
    # the whole expected paint in the predicate: a capture can land between two of curses' writes
    screen = term.wait_for(lambda s: re.search(r"measured \d+\.\d+s", s) and "no dma-buf heaps and no udmabuf" in s
                           and "cpu_copy not traced" in s and "EPERM" in s and "hooks live:" in s)
    assert "no dma-buf heaps and no udmabuf" in screen
    assert "cpu_copy not traced" in screen and "EPERM" in screen
    assert "hooks live:" in screen and " read " in screen.split("hooks live:")[1]
    term.keys("4")
    screen = term.wait_for(lambda s: "[4:Paths]" in s and any(
        line.split()[:1] == ["read"] and "traced (no cpu_copy, gup)" in line and "n/t" in line
        for line in s.splitlines()))
    rows = {line.split()[0]: line for line in screen.splitlines() if line.split()[:1] in (["read"], ["write"])}
    assert "traced (no cpu_copy, gup)" in rows["read"] and "n/t" in rows["read"]
    term.keys("q")
    assert wait_for_file(done, 15).strip() == "EXIT=0"
    stty = Path(f"{done}.stty").read_text()
    assert " icanon" in stty and " echo" in stty  # cooked mode back: curses' cbreak/noecho undone
    screen = term.screen()
    assert "hooks live:" not in screen  # the alternate screen was left: the shell's screen is back
    after = subprocess.run(["sysctl", "-n", "kernel.task_delayacct"], capture_output=True, text=True).stdout
    assert after == before


def test_sigterm_restores_the_terminal_and_delay_accounting(tmux, tmp_path):
    done = tmp_path / "done"
    before = Path("/proc/sys/kernel/task_delayacct").read_text()
    term = tmux(f"cd {ROOT}; {DMABUF_TOP} 0.5; rc=$?; stty -a > {done}.stty; echo EXIT=$rc > {done}; sleep 60")
    term.wait_for(lambda s: re.search(r"measured \d+\.\d+s", s))
    os.kill(term.child_pid(), 15)
    assert wait_for_file(done, 15).strip() == "EXIT=143"
    assert " icanon" in Path(f"{done}.stty").read_text()
    assert Path("/proc/sys/kernel/task_delayacct").read_text() == before


def test_no_clear_prints_exactly_count_tables():
    out = subprocess.run([DMABUF_TOP, "-C", "0.3", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("dmabuf-top ") for line in lines) == 3
    assert sum(line.split()[:2] == ["INODE", "EXPORTER"] for line in lines) == 3
    assert "first sample" not in out.stdout
    # The measured time is shown, whatever the load: each positive, and together at least the three intervals
    # (run_batch keeps an absolute schedule, so one slow sample shortens the next interval: a single
    # measured value may be under 0.3 s, their sum may not), and none beyond the run's own timeout.
    measured = [float(value) for value in re.findall(r"\(measured (\d+\.\d+)s\)", out.stdout)]
    assert len(measured) == 3, out.stdout
    assert all(0 < value < 60 for value in measured) and sum(measured) >= 3 * 0.3 - 0.02, measured


DELAYACCT = Path("/proc/sys/kernel/task_delayacct")


def odirect_reader(target):
    """A child that reads a file with O_DIRECT for 30 s (build/ is on a block device; /tmp may be tmpfs)."""
    target.write_bytes(os.urandom(32 << 20))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import mmap, os, time
        end = time.monotonic() + 30
        buffer = mmap.mmap(-1, 1 << 20)
        while time.monotonic() < end:
            fd = os.open({str(target)!r}, os.O_RDONLY | os.O_DIRECT)
            while os.readv(fd, [buffer]):
                pass
            os.close(fd)
        """)])


def watch_json(reader, target):
    try:
        return subprocess.run([DMABUF_TOP, "--json", "-p", str(reader.pid), "0.5", "4"], capture_output=True,
                              text=True, timeout=60)
    finally:
        reader.kill()
        reader.wait()
        target.unlink()


def test_json_objects_validate_and_the_process_pane_has_growing_block_io_delay():
    # The kernel keeps block-I/O delays only for tasks forked while delay accounting is on, so the reader
    # starts after it is on, and the view finds it on (then every process counts; a process older than the
    # moment the view itself turned it on reads n/a: the test below).
    target = ROOT / "build" / "live-odirect.bin"
    before = DELAYACCT.read_text()
    DELAYACCT.write_text("1")
    try:
        reader = odirect_reader(target)
        out = watch_json(reader, target)
    finally:
        DELAYACCT.write_text(before)
    assert out.returncode == 0, out.stderr
    objects = [json.loads(line) for line in out.stdout.splitlines()]
    assert [obj["sequence"] for obj in objects] == [1, 2, 3, 4]
    for obj in objects:
        jsonschema.validate(obj, JSON_SCHEMA)
        assert obj["pid"] == reader.pid
        assert "cpu_copy" in obj["hooks"]["missing"] and "read" in obj["hooks"]["live"]
    rows = [next(p for p in obj["processes"] if p["pid"] == reader.pid) for obj in objects]
    blkio = [row["delays"]["blkio"]["total_ns"] for row in rows]
    assert all(row["delays"][kind]["total_ns"] >= 0 for row in rows for kind in row["delays"])
    assert blkio == sorted(blkio) and blkio[-1] > blkio[0] > 0
    assert all(0 < row["blkio"] <= 100 for row in rows)  # share of each interval spent waiting for the disk
    assert all(row["read"] > 0 for row in rows)  # O_DIRECT reads into anonymous memory, on the read path


def test_a_process_older_than_the_views_delay_accounting_reads_na_and_a_younger_one_a_number():
    # The kernel keeps block-I/O delays only for tasks forked while delay accounting is on: a reader started
    # before the view turned it on has none (n/a, not 0); one forked after has them.
    old_target, young_target = ROOT / "build" / "live-odirect-old.bin", ROOT / "build" / "live-odirect-young.bin"
    before = DELAYACCT.read_text()
    DELAYACCT.write_text("0")
    old = young = None
    try:
        old = odirect_reader(old_target)
        view = subprocess.Popen([DMABUF_TOP, "--json", "0.5", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while DELAYACCT.read_text().strip() != "1" and view.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # past the tick in which the view turned it on: the start times then tell them apart
        young = odirect_reader(young_target)
        out, err = view.communicate(timeout=90)
    finally:
        for reader in (old, young):
            if reader is not None:
                reader.kill()
                reader.wait()
        DELAYACCT.write_text(before)
        for target in (old_target, young_target):
            target.unlink(missing_ok=True)
    assert view.returncode == 0, err
    objects = [json.loads(line) for line in out.splitlines()]
    for obj in objects:
        jsonschema.validate(obj, JSON_SCHEMA)
    last = objects[-1]["processes"]
    old_row = next(p for p in last if p["pid"] == old.pid)
    young_row = next(p for p in last if p["pid"] == young.pid)
    assert old_row["blkio"] is None and old_row["swapin"] is None and old_row["reclaim"] is None
    assert "started before delay accounting was turned on" in old_row["delays_na"]
    assert "blkio" not in old_row["delays"] and "cpu" in old_row["delays"]
    assert young_row["delays_na"] is None
    assert young_row["blkio"] > 0 and young_row["delays"]["blkio"]["total_ns"] > 0

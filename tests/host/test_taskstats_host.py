"""Delay accounting from the running kernel: layout checked against BTF, numbers that move."""
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dmabuf_top import taskstats

pytestmark = pytest.mark.root


def btf_offsets(struct_name):
    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                          capture_output=True, text=True, check=True).stdout
    match = re.search(rf"STRUCT '{struct_name}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", dump)
    assert match, f"struct {struct_name} is not in this kernel's BTF"
    return {name: int(bits) // 8 for name, bits in re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", match.group(1))}


def test_layout_matches_the_kernels_btf():
    kernel = btf_offsets("taskstats")
    for name, (offset, _fmt, _since) in taskstats._FIELDS.items():
        assert kernel[name] == offset, name


def test_delay_accounting_is_restored():
    before = taskstats.delay_accounting_state()
    with taskstats.delay_accounting() as enabled:
        assert enabled and taskstats.delay_accounting_state() is True
    assert taskstats.delay_accounting_state() is before


def test_block_io_delay_grows_under_an_o_direct_read():
    # The checkout's build/ is on a real block device here (/tmp may be a tmpfs, which refuses O_DIRECT).
    target = str(Path(__file__).resolve().parents[2] / "build" / "odirect.bin")
    with open(target, "wb") as out:
        out.write(os.urandom(32 << 20))
    reader = textwrap.dedent(f"""\
        import mmap, os, sys
        sys.stdin.readline()
        fd = os.open({target!r}, os.O_RDONLY | os.O_DIRECT)
        buffer = mmap.mmap(-1, 1 << 20)
        while os.readv(fd, [buffer]):
            pass
        print("done", flush=True)
        sys.stdin.readline()
        """)
    try:
        with taskstats.delay_accounting(), taskstats.TaskStatsClient() as client:
            child = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            before = client.for_process(child.pid)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"
            after = client.for_process(child.pid)
            child.stdin.write("end\n")
            child.stdin.flush()
            child.wait(timeout=30)
        assert after.pid == child.pid and after.comm
        assert after.delays["blkio"].count > before.delays["blkio"].count
        assert after.delays["blkio"].total_ns > before.delays["blkio"].total_ns
        for delay in after.delays.values():
            assert delay.count >= 0 and delay.total_ns >= 0
    finally:
        os.unlink(target)


def test_exited_process_is_none():
    child = subprocess.Popen(["true"])
    child.wait()
    with taskstats.TaskStatsClient() as client:
        assert client.for_process(child.pid) is None


def test_turning_accounting_on_says_since_when_and_start_times_tell_whose_delays_are_kept():
    before = taskstats.DELAYACCT_SYSCTL.read_text()
    taskstats.DELAYACCT_SYSCTL.write_text("0")
    older = younger = None
    try:
        older = subprocess.Popen(["sleep", "30"])
        time.sleep(0.05)
        with taskstats.delay_accounting() as accounting, taskstats.TaskStatsClient() as client:
            assert accounting and accounting.since_ticks is not None
            time.sleep(0.05)
            younger = subprocess.Popen(["sleep", "30"])
            old, young = client.for_process(older.pid), client.for_process(younger.pid)
            with taskstats.delay_accounting() as already_on:  # on already: every process counts
                assert already_on and already_on.since_ticks is None
        assert old.started < accounting.since_ticks < young.started
        assert "started before" in accounting.why_not_kept(old.started)
        assert accounting.why_not_kept(young.started) is None
    finally:
        for child in (older, younger):
            if child is not None:
                child.kill()
                child.wait()
        taskstats.DELAYACCT_SYSCTL.write_text(before)

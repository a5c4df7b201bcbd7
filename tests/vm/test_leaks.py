"""`dmabuf-top leaks` against real buffers kept alive the ways issue reports describe.

- a buffer whose fd was closed while a mapping keeps it alive;
- a buffer created by a child that exited after passing it to its parent over a unix socket;
- a buffer no process holds: its only fd is in flight in a socket nobody reads (a kernel reference).
Each must be listed with what holds it. In the first test they exist before `leaks` starts, so each also says so
(no stack); in the second a C creator (tests/vm/leak_creator.c, built here with frame pointers) makes them while
`leaks` watches, so each is listed with its creator and its allocation stack, naming the function that made it.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from test_snapshot import _libc, close_inherited_dmabufs, map_shared

from dmabuf_top.alloc import alloc_heap

pytestmark = pytest.mark.guest

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture
def kept_alive(heap_available):
    inodes = {}
    mapped = alloc_heap(MiB, name="leak-mapped")
    inodes["mapped"] = os.fstat(mapped.fileno()).st_ino
    address = map_shared(mapped.fileno(), MiB)
    mapped.close()  # the mapping alone keeps it alive

    parent_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            close_inherited_dmabufs()
            orphan = alloc_heap(2 * MiB, name="leak-orphan")
            socket.send_fds(child_end, [b"orphan"], [orphan.fileno()])
        finally:
            os._exit(0)
    _, fds, _, _ = socket.recv_fds(parent_end, 64, 1)
    os.waitpid(pid, 0)  # the creator has exited; the parent holds its buffer
    inodes["orphan"] = os.fstat(fds[0]).st_ino

    sender, unread = socket.socketpair()
    inflight = alloc_heap(512 * KiB, name="leak-inflight")
    inodes["inflight"] = os.fstat(inflight.fileno()).st_ino
    socket.send_fds(sender, [b"x"], [inflight.fileno()])
    inflight.close()  # only the message in the socket's queue holds it now
    try:
        yield inodes, pid
    finally:
        _libc.munmap(address, MiB)  # a later test's forked children would inherit the mapping
        os.close(fds[0])
        for end in (parent_end, child_end, sender, unread):
            end.close()


def test_leaks_lists_each_with_what_keeps_it_alive(kept_alive):
    inodes, creator_pid = kept_alive
    me = os.getpid()
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "leaks", "--min-age", "0.5", "--json", "0.5", "2"],
                            capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    report = json.loads(lines[-1])
    found = {b["inode"]: (group, b) for group in report["groups"] for b in group["buffers"]}
    for key in inodes:
        assert inodes[key] in found, f"{key} not listed: {report}"

    group, mapped = found[inodes["mapped"]]
    assert mapped["fd_holders"] == [] and [h["pid"] for h in mapped["map_holders"]] == [me]
    assert mapped["name"] == "leak-mapped" and mapped["size"] == MiB and mapped["kernel_holds"] == []

    group, orphan = found[inodes["orphan"]]
    assert [h["pid"] for h in orphan["fd_holders"]] == [me] and orphan["map_holders"] == []
    # there before leaks started: an age that is a lower bound, no stack, no creator record (no lifecycle probe)
    assert orphan["preexisting"] and not orphan["age_known"] and orphan["age_s"] >= 0.5
    assert group["stack"] is None and orphan["creator_state"] in ("not known", "exited")
    if orphan["creator"] is not None:
        assert orphan["creator"]["pid"] == creator_pid and orphan["creator_state"] == "exited"

    _, inflight = found[inodes["inflight"]]
    assert inflight["fd_holders"] == [] and inflight["map_holders"] == []
    assert inflight["kernel_holds"] == ["kernel reference"]

    text = subprocess.run([sys.executable, "-m", "dmabuf_top", "leaks", "--min-age", "0", "0.5", "1"],
                          capture_output=True, timeout=600, text=True)
    assert text.returncode == 0 and "existed before dmabuf-top started: no stack" in text.stdout
    assert "kernel reference" in text.stdout and "leak-orphan" in text.stdout


CREATOR_SOURCE = os.path.join(os.path.dirname(__file__), "leak_creator.c")


class Lines:
    """A process's stdout line by line with a deadline (raw reads: no buffered line a select would not see)."""

    def __init__(self, process):
        self._fd, self._pending = process.stdout.fileno(), b""

    def next(self, deadline):
        """The next line, or None at end of file or when the deadline (time.monotonic) passes first."""
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([self._fd], [], [], min(left, 1))[0]:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()


def test_leaks_lists_buffers_made_while_it_runs_with_creators_and_allocation_stacks(heap_available, tmp_path):
    binary = tmp_path / "leak_creator"
    subprocess.run(["cc", "-O1", "-fno-omit-frame-pointer", "-o", str(binary), CREATOR_SOURCE], check=True,
                   timeout=300)
    leaks = subprocess.Popen([sys.executable, "-m", "dmabuf_top", "leaks", "--min-age", "0", "--json", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reports, creator = Lines(leaks), None
    try:
        deadline = time.monotonic() + 600
        assert reports.next(deadline), "leaks printed no first report"  # the probe is attached
        creator = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        said, facts = Lines(creator), {}
        while "ready" not in facts:
            line = said.next(deadline)
            assert line, f"the creator stopped: {facts}"
            key, *value = line.split()
            facts[key] = int(value[0]) if value else True
        found = {}
        while time.monotonic() < deadline:
            report = json.loads(reports.next(deadline) or "{}")
            found = {b["inode"]: (group, b) for group in report.get("groups", ()) for b in group["buffers"]}
            if facts["mapped"] in found and facts["orphan"] in found:
                break
        assert facts["mapped"] in found and facts["orphan"] in found, found
    finally:
        leaks.send_signal(signal.SIGTERM)
        _, errors = leaks.communicate(timeout=120)
        if creator is not None:
            creator.communicate(timeout=60)  # closing its stdin ends it
    assert report["creations_known"] and not report["notes"], errors

    for key, creator_pid, state, function, size in (("mapped", facts["parent"], "running", "make_mapped_leak", MiB),
                                                     ("orphan", facts["child"], "exited", "make_child_leak", 2 * MiB)):
        group, buffer = found[facts[key]]
        assert buffer["name"] == f"leak2-{key}" and buffer["size"] == size
        assert not buffer["preexisting"] and buffer["age_known"]
        assert buffer["creator"]["pid"] == creator_pid and buffer["creator"]["comm"] == "leak_creator"
        assert buffer["creator_state"] == state == buffer["creator"]["state"], buffer
        assert (buffer["creator"]["cgroup"] or "").startswith("/"), buffer["creator"]
        # grouped by allocation stack: kernel frames then user frames, the creating function among them
        assert group["stack"] and any(frame.startswith(f"{function}+") for frame in group["stack"]), group["stack"]
        assert any("dma_heap" in frame or "dma_buf_export" in frame for frame in group["stack"]), group["stack"]
    _, mapped = found[facts["mapped"]]
    assert mapped["fd_holders"] == [] and [h["pid"] for h in mapped["map_holders"]] == [facts["parent"]]
    _, orphan = found[facts["orphan"]]
    assert [h["pid"] for h in orphan["fd_holders"]] == [facts["parent"]]

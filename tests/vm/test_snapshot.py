"""`dmabuf-top snapshot` against a population whose every number is known.

A parent (this pytest process) and two children share system-heap and udmabuf
buffers by fd passing (SCM_RIGHTS) and by mmap; one buffer lives only in the
kernel, as an fd sent over a unix socket that nobody reads. Every number in
`snapshot --json` is checked against what was built, and the buffer set against
debugfs bufinfo, for every source.
"""
import ctypes
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.inventory.bufinfo import read_bufinfo

pytestmark = pytest.mark.guest

KiB, MiB = 1 << 10, 1 << 20
HOSTILE = b"\x1b[31m<script>\n\t\xff"
CHILD_COMMS = (b"holder-one", b"holder\x1b[2J")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_RW, MAP_SHARED = 3, 1


def map_shared(fd, size):
    """One VMA over the buffer via libc (Python's mmap would dup the fd: an extra reference)."""
    address = _libc.mmap(None, size, PROT_RW, MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap of a dma-buf failed")
    return address


def close_inherited_dmabufs():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/dmabuf:"):
                os.close(int(name))
        except OSError:
            pass


def child(sock, release, comm):
    """Receive the plan and its fds, map and close as told, report ready, wait for release."""
    try:
        close_inherited_dmabufs()
        with open("/proc/self/comm", "wb") as own_comm:
            own_comm.write(comm)
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
        plan = json.loads(message)
        for index, times, size in plan["map"]:
            for _ in range(times):
                map_shared(fds[index], size)
        for index in plan["close"]:
            os.close(fds[index])
        sock.sendall(b"ready")
        os.read(release, 1)
    finally:
        os._exit(0)


@dataclass
class Expected:
    """What the test built: buffers by letter, refs per pid."""

    buffers: dict = field(default_factory=dict)  # letter -> DmaBuf (fds may be closed; inode/size/name kept)
    refs: dict = field(default_factory=dict)  # pid -> {letter: (fds, maps)}
    kernel_only: tuple = ("K",)
    comms: dict = field(default_factory=dict)

    def inode(self, letter):
        return self.buffers[letter].inode

    def holders_of(self, letter):
        return {pid: refs[letter] for pid, refs in self.refs.items() if letter in refs}

    def rss(self, pid):
        return sum(self.buffers[letter].size for letter in self.refs[pid])

    def pss(self, pid):
        return sum(self.buffers[letter].size // len(self.holders_of(letter)) for letter in self.refs[pid])


@pytest.fixture(scope="module")
def population():
    """Parent P (us), children C1 and C2:

    A heap 1 MiB "shared-by-three"   P fd, C1 fd, C2 fd
    B heap 4 MiB "mapped-everywhere" P fd+map, C1 map only, C2 fd+2 maps
    C udmabuf 256 KiB "udmabuf-dup"  P 2 fds + map
    D udmabuf 2 MiB HOSTILE          C2 fd only
    E heap 64 KiB unnamed            C1 map only
    K heap 8 MiB "kernel-only"       in flight in a unix socket nobody reads
    """
    if not (os.path.exists("/dev/dma_heap/system") and os.path.exists("/dev/udmabuf")):
        pytest.skip("not inside the lab guest (no heap or udmabuf)")
    close_inherited_dmabufs()
    children, releases, made = [], [], []
    # Children are forked before any buffer exists, so they inherit none.
    for comm in CHILD_COMMS:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        release_read, release_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            os.close(release_write)
            child(child_end, release_read, comm)
        child_end.close()
        os.close(release_read)
        children.append((pid, parent_end))
        releases.append(release_write)
    in_flight = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    own_mappings = []  # unmapped at the end: a mapping outlives its fd and would hold the buffer for later tests
    try:
        expected = Expected()
        b = expected.buffers
        b["A"] = alloc_heap(1 * MiB, name="shared-by-three")
        b["B"] = alloc_heap(4 * MiB, name="mapped-everywhere")
        b["C"] = alloc_udmabuf(256 * KiB, name="udmabuf-dup")
        b["D"] = alloc_udmabuf(2 * MiB, name=HOSTILE)
        b["E"] = alloc_heap(64 * KiB)
        b["K"] = alloc_heap(8 * MiB, name="kernel-only")
        made.extend(b.values())
        (c1, sock1), (c2, sock2) = children
        # C1: A fd; B mapped then closed; E mapped then closed.
        socket.send_fds(sock1, [json.dumps({"map": [[1, 1, b["B"].size], [2, 1, b["E"].size]],
                                            "close": [1, 2]}).encode()], [b["A"].fd, b["B"].fd, b["E"].fd])
        # C2: A fd; B fd + 2 maps; D fd.
        socket.send_fds(sock2, [json.dumps({"map": [[1, 2, b["B"].size]], "close": []}).encode()],
                        [b["A"].fd, b["B"].fd, b["D"].fd])
        for _, sock in children:
            assert sock.recv(5) == b"ready"
        socket.send_fds(in_flight[0], [b"k"], [b["K"].fd])
        own_mappings.append((map_shared(b["B"].fd, b["B"].size), b["B"].size))
        duplicate = os.dup(b["C"].fd)
        own_mappings.append((map_shared(b["C"].fd, b["C"].size), b["C"].size))
        for letter in "DEK":
            os.close(b[letter].fd)  # the DmaBuf keeps inode, size and name for the checks
            b[letter].fd = -1
        me = os.getpid()
        expected.refs = {
            me: {"A": (1, 0), "B": (1, 1), "C": (2, 1)},
            c1: {"A": (1, 0), "B": (0, 1), "E": (0, 1)},
            c2: {"A": (1, 0), "B": (1, 2), "D": (1, 0)},
        }
        expected.comms = {c1: CHILD_COMMS[0], c2: CHILD_COMMS[1]}
        yield expected
        os.close(duplicate)
    finally:
        for address, size in own_mappings:
            _libc.munmap(address, size)
        for release in releases:
            os.close(release)
        for pid, sock in children:
            os.waitpid(pid, 0)
            sock.close()
        for end in in_flight:
            end.close()
        for buffer in made:
            buffer.close()


def snapshot(*args):
    """The command as a user runs it: its own process, its own output."""
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "snapshot", *args], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def snapshot_json(*args):
    return json.loads(snapshot("--json", *args))


COMBINATIONS = [
    ("iterator", "iterator"),
    ("iterator", "procfs"),
    ("bufinfo", "iterator"),
    ("bufinfo", "procfs"),
    ("fdinfo", "procfs"),
]


@pytest.mark.parametrize("source,holders", COMBINATIONS)
def test_every_number_matches_what_was_built(population, source, holders):
    doc = snapshot_json("--source", source, "--holders", holders)
    assert (doc["source"], doc["holders_source"]) == (source, holders)
    buffers = {entry["inode"]: entry for entry in doc["buffers"]}
    sees_kernel_only = source != "fdinfo"
    for letter, made in population.buffers.items():
        if letter in population.kernel_only and not sees_kernel_only:
            assert made.inode not in buffers
            continue
        entry = buffers[made.inode]
        holders_of = population.holders_of(letter)
        mapped_only = bool(holders_of) and all(fds == 0 for fds, _ in holders_of.values())
        partial = source == "fdinfo" and mapped_only
        assert entry["size"] == made.size
        assert entry["exporter"] == (None if partial else made.exporter)
        assert entry["name_hex"] == (None if made.name is None else made.name.hex())
        assert entry["holders"] == [{"pid": pid, "fds": fds, "maps": maps}
                                    for pid, (fds, maps) in sorted(holders_of.items())]
        refs = sum(fds + maps for fds, maps in holders_of.values())
        assert entry["fd_refs"] + entry["map_refs"] == refs
        assert entry["kernel_only"] == (letter in population.kernel_only)
        if partial:
            assert (entry["file_refs"], entry["kernel_refs"]) == (None, None)
        else:
            kernel_refs = 1 if letter in population.kernel_only else 0
            assert (entry["file_refs"], entry["kernel_refs"]) == (refs + kernel_refs, kernel_refs)
        if source == "fdinfo":
            assert entry["attachments"] is None
        else:
            assert (entry["attachments"], entry["devices"]) == (0, [])

    processes = {process["pid"]: process for process in doc["processes"]}
    for pid, held in population.refs.items():
        process = processes[pid]
        assert process["buffers"] == sorted(({"inode": population.inode(letter), "fds": fds, "maps": maps}
                                             for letter, (fds, maps) in held.items()), key=lambda b: b["inode"])
        assert process["rss"] == population.rss(pid)
        assert process["pss"] == population.pss(pid)
        assert process["fd_refs"] == sum(fds for fds, _ in held.values())
        assert process["map_refs"] == sum(maps for _, maps in held.values())
    for pid, comm in population.comms.items():
        assert processes[pid]["comm_hex"] == comm.hex()

    kernel_only = {entry["inode"] for entry in doc["buffers"] if entry["kernel_only"]}
    ours = {made.inode for made in population.buffers.values()}
    assert kernel_only & ours == ({population.inode("K")} if sees_kernel_only else set())
    totals = doc["totals"]
    assert totals["buffers"] == len(doc["buffers"])
    assert totals["bytes"] == sum(entry["size"] for entry in doc["buffers"])
    assert totals["kernel_only_bytes"] == sum(entry["size"] for entry in doc["buffers"] if entry["kernel_only"])
    assert totals["userspace_rss"] == sum(process["rss"] for process in doc["processes"])
    assert totals["userspace_pss"] == sum(process["pss"] for process in doc["processes"])
    exporters = {e["exporter"]: (e["buffers"], e["bytes"]) for e in doc["exporters"]}
    for name in {entry["exporter"] for entry in doc["buffers"]}:
        same = [entry for entry in doc["buffers"] if entry["exporter"] == name]
        assert exporters[name] == (len(same), sum(entry["size"] for entry in same))


@pytest.mark.parametrize("source", ["iterator", "bufinfo", "fdinfo"])
def test_buffer_set_matches_bufinfo(population, source):
    doc = snapshot_json("--source", source)
    bufinfo = {b.inode: b for b in read_bufinfo().buffers}
    seen = {entry["inode"]: entry for entry in doc["buffers"]}
    if source == "fdinfo":
        # /proc cannot see what only the kernel holds: exactly the in-flight buffer is missing.
        assert set(bufinfo) - set(seen) == {population.inode("K")}
        assert set(seen) <= set(bufinfo)
    else:
        assert set(seen) == set(bufinfo)
    for inode, entry in seen.items():
        theirs = bufinfo[inode]
        assert entry["size"] == theirs.size
        if entry["exporter"] is not None:
            assert entry["exporter"] == theirs.exporter
        name = None if entry["name_hex"] is None else bytes.fromhex(entry["name_hex"])
        assert name == theirs.name
        if entry["file_refs"] is not None:
            assert entry["file_refs"] == theirs.count


def test_tables_escape_hostile_names_and_csv_keeps_one_line_per_buffer(population):
    for view in ("--buffers", "--grid", "--exporters", "--json"):
        out = snapshot(view)
        assert b"\x1b" not in out and b"\xff" not in out
    table = snapshot("--buffers").decode()
    assert "\\x1b[31m<script>\\n\\t\\xff" in table
    kernel_row = next(line for line in table.splitlines() if line.split()[:1] == [str(population.inode("K"))])
    assert " kernel " in kernel_row and kernel_row.endswith("kernel-only")
    csv_text = snapshot("--buffers", "--csv").decode()
    doc = snapshot_json()
    assert len(csv_text.splitlines()) == 1 + len(doc["buffers"])


def test_one_process(population):
    me = os.getpid()
    doc = snapshot_json("-p", str(me))
    assert [process["pid"] for process in doc["processes"]] == [me]
    assert {entry["inode"] for entry in doc["buffers"]} == {population.inode(letter) for letter in "ABC"}
    text = snapshot("-p", str(me)).decode()
    assert f":{me}" in text and "PROCESS TOTAL" in text

"""Per-cgroup totals against real buffers: two cgroups, a holder in each, known bytes, one buffer shared.

Child A (cgroup a) allocates a system-heap and a udmabuf buffer and a third, shared one that it sends to
child B over SCM_RIGHTS; child B (cgroup b) allocates its own heap buffer and a udmabuf buffer that it holds
by mapping only. `snapshot --json` and a scrape of `export` must show exactly those bytes per cgroup.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_snapshot import _libc, close_inherited_dmabufs, map_shared

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.analysis import html, tables
from dmabuf_top.recording.session import Session

pytestmark = pytest.mark.guest

KiB, MiB = 1 << 10, 1 << 20
CGROUP_ROOT = Path("/sys/fs/cgroup")
DMABUF_TOP = str(Path(sys.executable).with_name("dmabuf-top"))
SIZES = {"a_heap": 4 * MiB, "a_udmabuf": MiB, "shared": 256 * KiB, "b_heap": 2 * MiB, "b_udmabuf": 512 * KiB}


def _cgroup2_root():
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        CGROUP_ROOT.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(CGROUP_ROOT)], capture_output=True)
        if result.returncode:
            pytest.skip(f"cgroup v2 is not mounted at {CGROUP_ROOT} and cannot be: {result.stderr.decode()}")
    return CGROUP_ROOT


def unmap_inherited_dmabufs():
    """Drop the dma-buf mappings a fork inherited (an earlier test's): they would count in this cgroup too."""
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith(b"/dmabuf:"):
                start, end = (int(part, 16) for part in fields[0].split(b"-"))
                _libc.munmap(start, end - start)


def _child(role, cgroup, peer, report, release):
    """Join `cgroup`, allocate this role's buffers, pass or take the shared one, report inodes, wait."""
    try:
        close_inherited_dmabufs()
        unmap_inherited_dmabufs()
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        kept, inodes = [], {}
        if role == "a":
            for key, buffer in (("a_heap", alloc_heap(SIZES["a_heap"])),
                                ("a_udmabuf", alloc_udmabuf(SIZES["a_udmabuf"])),
                                ("shared", alloc_heap(SIZES["shared"]))):
                kept.append(buffer)
                inodes[key] = os.fstat(buffer.fileno()).st_ino
            socket.send_fds(peer, [b"shared"], [kept[-1].fileno()])
        else:
            _, fds, _, _ = socket.recv_fds(peer, 64, 1)
            inodes["shared"] = os.fstat(fds[0]).st_ino
            heap = alloc_heap(SIZES["b_heap"])
            mapped = alloc_udmabuf(SIZES["b_udmabuf"])
            inodes["b_heap"], inodes["b_udmabuf"] = os.fstat(heap.fileno()).st_ino, os.fstat(mapped.fileno()).st_ino
            map_shared(mapped.fileno(), SIZES["b_udmabuf"])
            mapped.close()  # held by the mapping alone from here
            kept += [heap, fds[0]]
        report.sendall(json.dumps(inodes).encode())
        os.read(release, 1)
    finally:
        os._exit(0)


@pytest.fixture
def two_cgroups(heap_available, udmabuf_available):
    with two_cgroups_made() as made:
        yield made


@contextmanager
def two_cgroups_made():
    """({role: cgroup path}, {role: (child pid, {buffer key: inode})}) while the two children hold their buffers
    (a context manager: tests/vm/test_live_leaks.py makes them once a tracer is watching)."""
    root = _cgroup2_root()
    paths = {role: root / f"dmabuf-top-test-{role}-{os.getpid()}" for role in "ab"}
    for path in paths.values():
        path.mkdir()
    peer_a, peer_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    release_read, release_write = os.pipe()
    children, inodes = [], {}
    try:
        for role, peer in (("a", peer_a), ("b", peer_b)):
            report, report_child = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                _child(role, paths[role], peer, report_child, release_read)
            children.append(pid)
            report_child.close()
            report.settimeout(120)
            inodes[role] = (pid, json.loads(report.recv(1 << 16)))
            report.close()
        yield {role: f"/{path.name}" for role, path in paths.items()}, inodes
    finally:
        os.write(release_write, b"xx")
        for pid in children:
            os.waitpid(pid, 0)
        for path in paths.values():
            path.rmdir()
        for fd in (release_read, release_write):
            os.close(fd)
        peer_a.close()
        peer_b.close()


EXPECTED = {
    "a": {"processes": 1, "buffers": 3, "held_bytes": SIZES["a_heap"] + SIZES["a_udmabuf"] + SIZES["shared"],
          "shared_bytes": SIZES["shared"]},
    "b": {"processes": 1, "buffers": 3, "held_bytes": SIZES["b_heap"] + SIZES["b_udmabuf"] + SIZES["shared"],
          "shared_bytes": SIZES["shared"]},
}


def test_snapshot_json_has_exactly_each_cgroups_bytes(two_cgroups):
    paths, inodes = two_cgroups
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "snapshot", "--json"], capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    document = json.loads(result.stdout)
    cgroups = document["cgroups"]
    rows = {row["cgroup"]: row for row in cgroups["rows"] if row["kind"] == "cgroup"}
    for role, path in paths.items():
        row = rows[path]
        assert {key: row[key] for key in EXPECTED[role]} == EXPECTED[role], role
        assert row["short"] == path[1:] and bytes.fromhex(row["cgroup_hex"]) == path.encode()
        assert row["created_bytes"] is None  # no lifecycle probe in snapshot: creator not known, never 0
    assert (cgroups["shared_buffers"], cgroups["shared_bytes"]) == (1, SIZES["shared"])
    processes = {p["pid"]: p["cgroup"] for p in document["processes"]}
    assert processes[inodes["a"][0]] == paths["a"] and processes[inodes["b"][0]] == paths["b"]
    exclusive = sum(row["held_bytes"] - row["shared_bytes"] for row in cgroups["rows"])
    assert exclusive + cgroups["shared_bytes"] == cgroups["total_bytes"] == document["totals"]["bytes"]

    table = subprocess.run([sys.executable, "-m", "dmabuf_top", "snapshot", "--cgroups"], capture_output=True,
                           timeout=300, text=True)
    assert table.returncode == 0 and paths["a"] in table.stdout and "not known" in table.stdout


def _scrape(port, deadline):
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
                return reply.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_exporter_scrape_has_exactly_each_cgroups_bytes(two_cgroups):
    paths, _ = two_cgroups
    port = 19465
    exporter = subprocess.Popen([DMABUF_TOP, "export", "--listen", f"127.0.0.1:{port}", "--no-trace",
                                 "--top-cgroups", "5"], stderr=subprocess.PIPE, text=True)
    try:
        text = _scrape(port, time.monotonic() + 240)
    finally:
        exporter.terminate()
        _, stderr = exporter.communicate(timeout=60)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[sample.labels.get("cgroup")] = (sample.labels, sample.value)
    for role, path in paths.items():
        labels, held = samples["dmabuf_cgroup_held_bytes"][path]
        assert (labels["short"], held) == (path[1:], EXPECTED[role]["held_bytes"]), stderr
        assert samples["dmabuf_cgroup_shared_bytes"][path][1] == EXPECTED[role]["shared_bytes"]
        assert samples["dmabuf_cgroup_held_buffers"][path][1] == 3
        assert samples["dmabuf_cgroup_processes"][path][1] == 1
    assert samples["dmabuf_cgroups_shared_bytes"][None][1] == SIZES["shared"]
    assert "dmabuf_cgroup_created_bytes" not in samples


def test_record_keeps_each_cgroups_bytes_per_interval_and_the_report_shows_them(two_cgroups, tmp_path):
    paths, _ = two_cgroups
    session_path = tmp_path / "cgroups.sqlite"
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "record", "-o", str(session_path), "--interval",
                             "0.2", "--", "sleep", "1"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    with Session(session_path) as session:
        hooks = {hook.name: hook for hook in session.hooks()}
        assert hooks["cgroups"].live, hooks["cgroups"].detail
        for role, path in paths.items():
            held = {row[0] for row in session.query(
                "SELECT held_bytes FROM cgroup_samples WHERE kind = 'cgroup' AND cgroup = ?", (path.encode(),))}
            assert held == {EXPECTED[role]["held_bytes"]}, role  # every interval: nothing changed meanwhile
        rows = {row.cgroup: row for row in tables.cgroup_table(session)}
        assert rows[paths["a"].encode()].peak_shared_bytes == SIZES["shared"]
        assert paths["b"][1:] in html.report_body(session)

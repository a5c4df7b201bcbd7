"""What a snapshot costs at 10,000 buffers, by source. Run it in the lab guest:

    dmabuf-top vm -- .venv/bin/python benchmarks/snapshot.py [--processes 10] [--buffers 1000] [--repeat 5]

Ten processes each allocate 1,000 one-page buffers from the system heap (and
map a tenth of them), then this process, holding none, times each way of
taking the inventory; each figure is the median of --repeat runs, printed as
milliseconds and as a ratio to `cat bufinfo` within this one run (guest times
are emulated, so only ratios mean anything). The runs are interleaved (every
way once, then every way again, ...) so that a burst of load on the host (other
guests share its cores) lands on all ways alike rather than on one. Targets from
issue 3 are printed with whether this run met them.
"""
import argparse
import ctypes
import fcntl
import os
import resource
import statistics
import subprocess
import sys
import time

from dmabuf_top.inventory import procfs
from dmabuf_top.alloc import DMA_HEAP_IOCTL_ALLOC, HEAP_ALLOCATION_DATA, PAGE_SIZE
from dmabuf_top.inventory.bufinfo import BUFINFO_PATH, read_bufinfo
from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.collect import IteratorSnapshots, buffers_from_bufinfo, collect
from dmabuf_top.probes.dmabuf_iter import DmabufIterator
from dmabuf_top.probes.task_dmabufs import TaskDmabufIterator
from dmabuf_top.inventory.render_snapshot import render_json

HEAP = "/dev/dma_heap/system"


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))


def holder(count, mapped, ready_fd, release_fd):
    """Child: allocate `count` one-page buffers, map the first `mapped`, say so, wait."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        heap = os.open(HEAP, os.O_RDWR | os.O_CLOEXEC)
        fds = []
        for _ in range(count):
            request = bytearray(HEAP_ALLOCATION_DATA.pack(PAGE_SIZE, 0, os.O_RDWR | os.O_CLOEXEC, 0))
            fcntl.ioctl(heap, DMA_HEAP_IOCTL_ALLOC, request, True)
            fds.append(HEAP_ALLOCATION_DATA.unpack(request)[1])
        for fd in fds[:mapped]:
            if libc.mmap(None, PAGE_SIZE, 3, 1, fd, 0) in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "mmap")
        os.write(ready_fd, b"r")
        os.read(release_fd, 1)
    finally:
        os._exit(0)


def spawn(processes, per_process, mapped):
    ready_read, ready_write = os.pipe()
    release_read, release_write = os.pipe()
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            os.close(ready_read)
            os.close(release_write)
            holder(per_process, mapped, ready_write, release_read)
        pids.append(pid)
    os.close(ready_write)
    os.close(release_read)
    for _ in range(processes):
        if os.read(ready_read, 1) != b"r":
            sys.exit("a holder process failed to allocate its buffers (see above)")
    os.close(ready_read)
    return pids, release_write


def interleaved_medians(rows, repeat):
    """{label: median seconds} and {label: last result}, each round running every row once."""
    times = {label: [] for label, _ in rows}
    results = {}
    for _ in range(repeat):
        for label, function in rows:
            start = time.perf_counter()
            results[label] = function()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}, results


def cat_bufinfo():
    subprocess.run(["cat", BUFINFO_PATH], stdout=subprocess.DEVNULL, check=True)


def every_row(inventory):
    """What the --buffers/--grid/--json views make on top of the numbers: an object per buffer and per ref."""
    return len(inventory.buffers) + sum(len(process.buffers) for process in inventory.processes)


def procfs_snapshot():
    scan = procfs.scan()
    return build_inventory(scan.buffers(), scan.holders, "fdinfo", "procfs")


def bufinfo_inventory():
    return buffers_from_bufinfo(read_bufinfo())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--buffers", type=int, default=1000, help="buffers per process")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not os.path.exists(HEAP):
        sys.exit(f"{HEAP} is missing: run this in the lab, `dmabuf-top vm -- .venv/bin/python benchmarks/snapshot.py`")
    raise_fd_limit(args.buffers + 64)
    total = args.processes * args.buffers
    mapped = args.buffers // 10
    start = time.perf_counter()
    pids, release = spawn(args.processes, args.buffers, mapped)
    print(f"population: {args.processes} processes x {args.buffers} one-page system-heap buffers = {total} buffers, "
          f"{mapped} mapped per process (made in {time.perf_counter() - start:.1f} s)")
    try:
        with DmabufIterator() as buffers_iter, TaskDmabufIterator() as holders_iter, IteratorSnapshots() as live:
            raw_program, raw_link = buffers_iter._program, buffers_iter._link
            rows = [
                ("cat bufinfo", cat_bufinfo),
                ("raw iter/dmabuf read (bytes only)", lambda: raw_program.read_iter(raw_link)),
                ("inventory via iterator (read + decode)", buffers_iter.read_columns),
                ("inventory via iterator as Buffer objects", buffers_iter.read),
                ("inventory via bufinfo (read + parse)", bufinfo_inventory),
                ("inventory via fdinfo scan (/proc)", lambda: procfs.scan().buffers()),
                ("raw task iterator reads (bytes only)", holders_iter.read_raw),
                ("holders via task iterators (read + decode)", holders_iter.read_columns),
                ("full snapshot, iterators loaded", live.take),
                ("full snapshot + every row object", lambda: every_row(live.take())),
                ("full snapshot + JSON text", lambda: render_json(live.take())),
                ("full snapshot, one-shot incl. BPF load", lambda: collect("iterator", "iterator")),
                ("full snapshot via procfs", procfs_snapshot),
            ]
            timings, results = interleaved_medians(rows, args.repeat)
            seen = len(results["inventory via iterator (read + decode)"])
            result = results["full snapshot, iterators loaded"]
            fds_seen = sum(p.fd_refs for p in result.processes)
            maps_seen = sum(p.map_refs for p in result.processes)
            # Each holder alone holds its buffers: RSS = PSS = its bytes, one entry per buffer.
            per_holder = sorted((p.pid, p.rss, p.pss, len(p.buffers)) for p in result.processes if p.pid in pids)
            expected = sorted((pid, args.buffers * PAGE_SIZE, args.buffers * PAGE_SIZE, args.buffers)
                              for pid in pids)
    finally:
        os.close(release)
        for pid in pids:
            os.waitpid(pid, 0)

    print(f"iterator saw {seen} buffers; holders: {fds_seen} fds, {maps_seen} mappings "
          f"(built {total} buffers, {total} fds, {args.processes * mapped} mappings)")
    base = timings["cat bufinfo"]
    print(f"\nmedian of {args.repeat} runs; ratio = time / (cat bufinfo)")
    width = max(len(label) for label in timings)
    for label, seconds in timings.items():
        print(f"  {label:<{width}}  {seconds * 1000:9.1f} ms  {seconds / base:7.2f}x")

    raw = timings["raw iter/dmabuf read (bytes only)"]
    full = timings["full snapshot, iterators loaded"]
    procfs_full = timings["full snapshot via procfs"]
    checks = [
        ("iterator inventory not slower than cat bufinfo",
         timings["inventory via iterator (read + decode)"] <= base,
         f"{timings['inventory via iterator (read + decode)'] / base:.2f}x of cat"),
        ("full snapshot (iterators loaded) within 3x the raw iter/dmabuf read", full <= 3 * raw,
         f"{full / raw:.2f}x of raw read"),
        ("full snapshot at least 10x faster than the procfs scan", procfs_full >= 10 * full,
         f"procfs is {procfs_full / full:.1f}x slower"),
    ]
    print("\ntargets")
    for text, met, detail in checks:
        print(f"  [{'met' if met else 'MISSED'}] {text}: {detail}")
    if per_holder != expected:
        print(f"per holder (pid, rss, pss, buffers): {per_holder}, built {expected}")
    if seen != total or fds_seen != total or maps_seen != args.processes * mapped or per_holder != expected:
        sys.exit("the iterators did not see the population that was built")


if __name__ == "__main__":
    main()

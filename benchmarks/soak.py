"""Churn soak: dma-bufs allocated, named, mapped, passed, read into and freed as fast as the kernel allows
while the live view (`dmabuf-top --json`) and `dmabuf-top record` watch. Run it in the lab guest:

    dmabuf-top vm --timeout 1200 -- .venv/bin/python benchmarks/soak.py --minutes 10

Workers are benchmarks/churn.c (compiled here with cc): half on the system heap, half on udmabuf;
each cycle allocates one page, names it, mmaps it, preads a page of a file into it, passes the fd to
itself over SCM_RIGHTS and frees it; at the end each keeps a few named buffers alive. Checked: both
tools exit cleanly with no traceback; their RSS and the tracer's BPF map entry counts (bpftool) over
time; snapshots taken in a loop under the churn never fail (references to buffers freed between the
passes are counted); every kept buffer is in the last live frame and in the session's last buffer
snapshot; the session opens and its dma_buf export events plus the ring buffer's dropped events account
for every buffer the workers made. Each tool's watched BPF maps (found through its fds) are counted
over time; a map at its max_entries refuses new keys, which the tracer counts (map_full) and the session
keeps as "<map> map full" drops (session_map_full). The recorder deletes the counters of buffers gone:
after the churn, no dma-buf or shmem target but the kept buffers' may stay in its io_by_target. The
live view does not delete them yet: its maps are a figure (bpf_maps_full).
Prints one JSON object of figures (--json) or a table; exits 1 when a check fails.
"""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dmabuf_top.inventory.collect import IteratorSnapshots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DMABUF_TOP = [sys.executable, "-m", "dmabuf_top"]
# The tracer's maps whose keys name buffers, files or tasks: the ones that could grow with churn
# (bpftool shows at most 15 characters of a map's name).
WATCHED_MAPS = ("io_by_target", "io_by_task", "lifecycle_count", "pagecache_by_fi", "stack_counts", "inflight",
                "traced_tgids")


def log(message):
    print(f"soak {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def build_churn(directory):
    binary = Path(directory) / "churn"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(ROOT / "benchmarks/churn.c")], check=True)
    return binary


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _walk_keys(map_id, key_size):
    """The keys of a loaded BPF map (bpftool's dump formats every value: minutes here); None if it is gone."""
    import ctypes

    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd = libbpf.bpf_map_get_fd_by_id(ctypes.c_uint32(map_id))
    if fd < 0:
        return None
    try:
        keys, previous, key = [], None, ctypes.create_string_buffer(key_size)
        while libbpf.bpf_map_get_next_key(fd, previous, key) == 0:
            keys.append(key.raw)
            previous = ctypes.create_string_buffer(key.raw, key_size)
        return keys
    finally:
        os.close(fd)


def _count_keys(map_id, key_size):
    # Distinct keys: a walk whose current key is deleted meanwhile starts over from the first.
    keys = _walk_keys(map_id, key_size)
    return None if keys is None else len(set(keys))


def buffer_targets(pid):
    """How many of the io_by_target keys a process's tracer holds name a dma-buf or a shmem object
    (the kinds the recorder deletes once the buffer is gone); None without such a map."""
    from dmabuf_top.probes.iopaths import KINDS, decode_target

    shown = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True,
                                      check=True).stdout or "[]")
    held = bpf_map_ids(pid)
    for bpf_map in shown:
        if bpf_map.get("name") == "io_by_target" and bpf_map["id"] in held:
            keys = _walk_keys(bpf_map["id"], bpf_map["bytes_key"])
            if keys is not None:
                return sum(decode_target(key).kind in (KINDS[1], KINDS[2]) for key in set(keys))
    return None


def bpf_map_ids(pid):
    """The ids of the BPF maps a process holds open (its fds' fdinfo says map_id)."""
    ids = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("map_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


def map_entries(owners):
    """{tool: {map name: (entries, max_entries)}} for the watched maps each tool (pid) holds."""
    shown = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True,
                                      check=True).stdout or "[]")
    ids = {tool: bpf_map_ids(pid) for tool, pid in owners.items()}
    counts = {tool: {} for tool in owners}
    for bpf_map in shown:
        if bpf_map.get("name") not in WATCHED_MAPS:
            continue
        for tool, held in ids.items():
            if bpf_map["id"] in held:
                counts[tool][bpf_map["name"]] = (_count_keys(bpf_map["id"], bpf_map["bytes_key"]),
                                                 bpf_map.get("max_entries"))
    return counts


def full_maps(sample):
    """{tool: [names of its watched maps at max_entries]} in one map_entries() sample."""
    # max_entries 0: task storage (inflight), which holds one entry per live thread and cannot fill.
    return {tool: sorted(name for name, (entries, limit) in maps.items() if entries is not None and entries >= limit > 0)
            for tool, maps in sample.items()}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"soak: timed out waiting for {what}")


def session_ready(path):
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return bool(db.execute("SELECT count(*) FROM hooks").fetchone()[0])
    except sqlite3.Error:
        return False


def last_frame(path):
    frames = [line for line in Path(path).read_text().splitlines() if line.startswith("{")]
    return json.loads(frames[-1]) if frames else None


def run_soak(seconds, workdir, workers=4, keep=3, interval=0.5, samples=4):
    """Returns (figures, failures): figures a dict of what was measured, failures a list of sentences."""
    workdir = Path(workdir)
    churn = build_churn(workdir)
    source = workdir / "source.bin"
    source.write_bytes(os.urandom(4096))
    session = workdir / "soak.db"
    live_out, live_err, rec_err = (open(workdir / name, "w+") for name in ("live.out", "live.err", "record.err"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    live = subprocess.Popen([*DMABUF_TOP, "--json", str(interval)], stdout=live_out, stderr=live_err, cwd=ROOT,
                            env=env)
    recorder = subprocess.Popen([*DMABUF_TOP, "record", "-o", str(session), "--interval", str(interval)],
                                stdout=subprocess.DEVNULL, stderr=rec_err, cwd=ROOT, env=env)
    log("tools started")
    figures = {"seconds": seconds, "workers": workers}
    failures = []
    procs = []
    kept, made = [], 0
    try:
        wait_for(lambda: last_frame(workdir / "live.out") is not None or live.poll() is not None, 300,
                 "the live view's first frame")
        wait_for(lambda: session_ready(session) or recorder.poll() is not None, 300, "the recorder's start")
        log("both tools ready")
        time.sleep(2 * interval)  # the recorder's tracer attaches after its hooks row is written
        if live.poll() is not None or recorder.poll() is not None:
            raise RuntimeError("soak: a tool exited before the workload started: "
                               + Path(workdir / "live.err").read_text()[-500:] + Path(workdir / "record.err").read_text()[-500:])
        rss = {"live": [rss_kib(live.pid)], "record": [rss_kib(recorder.pid)]}
        owners = {"live": live.pid, "record": recorder.pid}
        maps = [map_entries(owners)]
        snapshots = IteratorSnapshots()  # loaded before the churn starts: a BPF load takes seconds here
        log("maps counted; starting the workers")
        started = time.monotonic()
        for index in range(workers):
            kind = "heap" if index % 2 == 0 else "udmabuf"
            procs.append((kind, subprocess.Popen([str(churn), kind, str(seconds), str(keep), str(source)],
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)))
        passes = unmatched = 0
        with snapshots:
            for step in range(1, samples + 1):
                # Snapshots in a loop under churn: buffers freed between the holders pass and the buffer
                # pass leave references to nothing, which must be counted, never crash the join.
                while time.monotonic() < started + seconds * step / samples:
                    unmatched += snapshots.take().unmatched_refs
                    passes += 1
                rss["live"].append(rss_kib(live.pid))
                rss["record"].append(rss_kib(recorder.pid))
                maps.append(map_entries(owners))
                log(f"sample {step}: rss {rss['live'][-1]} / {rss['record'][-1]} KiB")
        figures.update(snapshot_passes=passes, unmatched_refs=unmatched)
        results = [(kind, proc.stdout.readline().split()) for kind, proc in procs]
        churned = time.monotonic() - started
        log(f"workers said: {results}")
        cycles = {"heap": 0, "udmabuf": 0}
        cycle_failures = 0
        for kind, words in results:
            if len(words) != 6 or words[0] != "cycles":
                failures.append(f"a {kind} worker said {' '.join(words)!r}")
                continue
            cycles[kind] += int(words[1])
            cycle_failures += int(words[3])
            kept += [int(inode) for inode in words[5].split(",") if inode.isdigit()]
        made = sum(cycles.values()) + len(kept)
        figures.update(cycles=cycles, cycle_failures=cycle_failures, buffers_made=made, kept=len(kept),
                       rate_per_s=round(sum(cycles.values()) / seconds, 1))
        if len(kept) != workers * keep:
            failures.append(f"{workers * keep - len(kept)} kept buffers could not be made")

        # Every buffer alive now is in the next live frame and in a snapshot.
        seen_before = (last_frame(workdir / "live.out") or {}).get("sequence", 0)
        wait_for(lambda: (last_frame(workdir / "live.out") or {}).get("sequence", 0) >= seen_before + 2
                 or live.poll() is not None, 120, "two more live frames")
        frame = last_frame(workdir / "live.out")
        log("live frame read; taking a snapshot")
        in_frame = {b["inode"] for b in frame["buffers"]}
        missing = sorted(set(kept) - in_frame)
        if missing:
            failures.append(f"kept buffers absent from the last live frame: {missing}")
        figures["live_dropped_events"] = frame["dropped_events"]

        # Freed buffers leave the recorder's maps: once the churn is over, its next polls delete the
        # counters of every buffer gone (the kept ones, alive, may stay: they had no I/O here anyway).
        log("waiting for the recorder to forget the buffers gone")
        deadline = time.monotonic() + 300
        while True:
            left = buffer_targets(recorder.pid)
            if (left is not None and left <= len(kept)) or time.monotonic() > deadline or recorder.poll() is not None:
                break
            time.sleep(5)
        figures["recorder_buffer_targets_after_churn"] = left
        figures["recorder_forgot_within_s"] = round(time.monotonic() - deadline + 300, 1)
        if left is None or left > len(kept):
            failures.append(f"{left} dma-buf/shmem targets stayed in the recorder's io_by_target after the churn")
    finally:
        log("stopping")
        # The recorder first: its closing buffer snapshot must see the kept buffers still held.
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)
        if live.poll() is None:
            live.send_signal(signal.SIGTERM)
        record_code = recorder.wait(timeout=600)
        live_code = live.wait(timeout=120)
        for _kind, proc in procs:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=60)
    figures.update(record_exit=record_code, live_exit=live_code)
    for name, path in (("live", "live.err"), ("record", "record.err")):
        text = (workdir / path).read_text()
        if "Traceback" in text:
            failures.append(f"{name} printed a traceback: {text[-1500:]}")
    if record_code not in (0, 130):
        failures.append(f"record exited {record_code}: {(workdir / 'record.err').read_text()[-500:]}")
    if live_code not in (0, 130, 143, -signal.SIGTERM):
        failures.append(f"the live view exited {live_code}: {(workdir / 'live.err').read_text()[-500:]}")

    figures["rss_kib"] = {name: {"first": values[0], "peak": max(v for v in values if v), "last": values[-1]}
                          for name, values in rss.items()}
    figures["bpf_map_entries_last"] = maps[-1]
    figures["bpf_map_entries_peak"] = {tool: {name: max(sample[tool].get(name, (0, 0))[0] or 0 for sample in maps)
                                              for name in WATCHED_MAPS if name in maps[-1][tool]}
                                       for tool in maps[-1]}
    # A map at max_entries refuses new keys (counted: map_full, and the session's Drop rows). The recorder
    # deletes the counters of buffers gone, so its maps must never fill under churn; the live view does
    # not yet (its maps are a figure here, and its JSON's trace counts are cumulative).
    figures["bpf_maps_full"] = {tool: sorted({name for sample in maps for name in full_maps(sample)[tool]})
                                for tool in maps[-1]}
    for name, series in rss.items():
        # Bounded: a tool may settle in, not double under a steady load (a leak keeps its slope).
        if series[-1] and series[1] and series[-1] > 2 * series[1]:
            failures.append(f"{name} RSS grew from {series[1]} to {series[-1]} KiB")

    from dmabuf_top.analysis import tables
    from dmabuf_top.recording.session import Session

    with Session(session) as recorded:
        exports = recorded.query("SELECT count(DISTINCT inode) FROM lifecycle_events WHERE event = 'export'")[0][0]
        releases = recorded.query("SELECT count(*) FROM lifecycle_events WHERE event = 'release'")[0][0]
        drops = tables.dropped_events(recorded)
        dropped = drops.get("iopaths ring buffer", 0)  # records lost: events the session does not have
        # Keys a full map refused: counted in the kernel and kept as drops, so the session says what it
        # lacks. A recorder slower than the churn between two polls (the emulated guest) meets it.
        map_full = {source: count for source, count in drops.items() if source.endswith(" map full") and count}
        last = recorded.query("SELECT inode FROM buffer_snapshots WHERE time_ns = "
                              "(SELECT max(time_ns) FROM buffer_snapshots)")
        missing = sorted(set(kept) - {inode for inode, in last})
        if missing:
            failures.append(f"kept buffers absent from the session's last buffer snapshot: {missing}")
        figures.update(session_exports=exports, session_releases=releases, session_dropped_events=dropped,
                       session_map_full=map_full, session_end=recorded.end_reason)
    # Exports the recorder saw plus the records the ring buffer lost account for every buffer made
    # (nothing else in the lab allocates dma-bufs while the soak runs).
    if not exports + dropped >= made >= exports:
        failures.append(f"the session saw {exports} exports and {dropped} dropped events; the workers made {made}")
    if dropped == 0 and exports != made:
        failures.append(f"no event was dropped, yet the session saw {exports} exports of {made}")
    return figures, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="dmabuf-top-soak-")
    try:
        figures, failures = run_soak(args.minutes * 60, workdir, workers=args.workers,
                                     samples=max(2, int(args.minutes * 4)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"figures": figures, "failures": failures}, indent=1))
    else:
        for key, value in figures.items():
            print(f"{key:<24} {value}")
        for failure in failures:
            print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

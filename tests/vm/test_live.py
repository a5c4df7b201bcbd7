"""The live view and the Prometheus exporter in the lab guest, on real named dma-bufs and a real file load.

A workload process allocates named heap buffers and a udmabuf, then reads a file from
the NVMe ext4 scratch disk into the mapping of one heap buffer, over and over;
`dmabuf-top` runs in a private tmux server at a fixed size and is read as a user
reads it.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tmux_session import Tmux, wait_for_file

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = str(ROOT / ".venv" / "bin" / "dmabuf-top")
SCRATCH = "/mnt/scratch"
MiB = 1 << 20
WORKLOAD = textwrap.dedent("""\
    import ctypes, os, sys, time
    from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
    libc = ctypes.CDLL(None, use_errno=True)
    libc.read.restype = ctypes.c_ssize_t
    libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    path, loads = sys.argv[1], sys.argv[2] == "load"
    weights = alloc_heap(16 << 20, name="live-weights")
    others = [alloc_heap(4 << 20, name="live-other"), alloc_udmabuf(2 << 20, name="live-udma")]
    mapping = weights.mmap()
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    print("ready", weights.inode, flush=True)
    while True:
        if loads:
            fd = os.open(path, os.O_RDONLY)
            done = 0
            while done < 8 << 20:
                got = libc.read(fd, address + done, (8 << 20) - done)
                assert got > 0, ctypes.get_errno()
                done += got
            os.close(fd)
        time.sleep(0.05)
    """)


@pytest.fixture(scope="module")
def data_file():
    if not os.path.ismount(SCRATCH):
        pytest.fail(f"{SCRATCH} is not mounted: this suite runs inside `dmabuf-top vm`")
    path = os.path.join(SCRATCH, "live-8m.bin")
    with open(path, "wb") as out:
        out.write(os.urandom(8 * MiB))
    yield path
    os.unlink(path)


@pytest.fixture
def workload(heap_available, udmabuf_available, data_file):
    def start(load=True):
        process = subprocess.Popen([sys.executable, "-c", WORKLOAD, data_file, "load" if load else "idle"],
                                   stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        started.append(process)
        line = process.stdout.readline().split()
        assert line[:1] == ["ready"], line
        return process, int(line[1])

    started = []
    yield start
    for process in started:
        process.kill()
        process.wait()


def buffer_row(screen, name):
    return next((line for line in screen.splitlines() if line.rstrip().endswith(name)), None)


def names(screen):
    """The workload's buffer names in screen order."""
    return [line.split()[-1] for line in screen.splitlines()
            if line.rstrip().endswith(("live-weights", "live-other", "live-udma"))]


def read_rate(line):
    """The RD MB/s cell: the six I/O cells (RD, WR, XFER, ASYNC, CPU-CP, PIN) come right before the name."""
    return line.split()[-7]


def snapshot_seconds():
    """Wall seconds of a plain `dmabuf-top snapshot`: start-up, the inventory, a table (the yardstick)."""
    started = time.monotonic()
    out = subprocess.run([DMABUF_TOP, "snapshot"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return time.monotonic() - started


def test_screen_shows_the_buffer_its_read_rate_and_keys_work(workload, tmp_path):
    process, inode = workload(load=True)
    done = tmp_path / "done"
    # The first screen needs what a snapshot needs (the hooks load behind it): measured against one in
    # this run, since emulated time means nothing on its own. Hook trials and the BPF load before the
    # first screen took 3-6 snapshots' time here.
    snapshot_s = max(snapshot_seconds() for _ in range(2))
    started = time.monotonic()
    term = Tmux(tmp_path / "tmux.sock", f"cd {ROOT}; {DMABUF_TOP} 1; rc=$?; stty -a > {done}.stty; "
                f"echo EXIT=$rc > {done}; sleep 600", width=180, height=40, timeout=90)
    try:
        first = term.wait_for(lambda s: s.startswith("dmabuf-top ") and buffer_row(s, "live-weights") is not None,
                              timeout=300)
        first_screen_s = time.monotonic() - started
        print(f"first screen {first_screen_s:.1f} s; snapshot {snapshot_s:.1f} s")
        assert first_screen_s < 2 * snapshot_s + 10, (first_screen_s, snapshot_s)
        if "hooks: starting" in first:  # no rate before the hooks are up and sampled twice: '-', not 0
            assert read_rate(buffer_row(first, "live-weights")) == "-", first

        def loaded(screen):
            line = buffer_row(screen, "live-weights")
            return line is not None and read_rate(line) not in ("-", "0")

        # start-up (feature trials, BPF load) is slow on an emulated CPU shared with other guests
        screen = term.wait_for(loaded, timeout=400)
        line = buffer_row(screen, "live-weights")
        cells = line.split()
        assert cells[:4] == [str(inode), "system", "16.0", "MiB"], line
        assert float(read_rate(line).lstrip("<")) > 0
        assert f"{process.pid}(python" in line
        assert buffer_row(screen, "live-other") is not None and buffer_row(screen, "live-udma") is not None
        # size order: 16 MiB, 4 MiB, 2 MiB
        assert names(screen) == ["live-weights", "live-other", "live-udma"]

        # Each wait names the whole expected screen: a capture can land between two of curses' writes.
        term.keys("r")  # reverse: smallest first
        term.wait_for(lambda s: "sort: size ^" in s and names(s) == ["live-udma", "live-other", "live-weights"])
        term.keys("r", ">")  # next column: attachments
        term.wait_for(lambda s: "sort: attachments v" in s)

        term.keys("/", "udma", "Enter")
        term.wait_for(lambda s: "filter: udma" in s and names(s) == ["live-udma"])
        term.keys("Escape")
        term.wait_for(lambda s: "filter:" not in s and len(names(s)) == 3)

        term.keys("2")  # processes: the workload with its dma-buf RSS (16 + 4 + 2 MiB)
        term.wait_for(lambda s: "[2:Processes]" in s and any(
            line.split()[:2] == [str(process.pid), "python"] and "22.0 MiB" in line for line in s.splitlines()))
        term.keys("q")
        assert wait_for_file(done, 60).strip() == "EXIT=0"
        assert " icanon" in Path(f"{done}.stty").read_text()
    finally:
        term.kill()


def test_json_process_pane_has_taskstats_for_the_workload(workload):
    # The kernel keeps block-I/O delays only for tasks forked while delay accounting is on: the workload starts
    # after it is on (one started before the view turned it on reads n/a: tests/host/test_live_host.py).
    delayacct = Path("/proc/sys/kernel/task_delayacct")
    before = delayacct.read_text()
    delayacct.write_text("1")
    try:
        process, inode = workload(load=True)
        out = subprocess.run([DMABUF_TOP, "--json", "-p", str(process.pid), "1", "2"], capture_output=True,
                             text=True, timeout=300)
    finally:
        delayacct.write_text(before)
    assert out.returncode == 0, out.stderr
    import jsonschema

    from dmabuf_top.live.jsonout import JSON_SCHEMA

    objects = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(objects) == 2
    for obj in objects:
        jsonschema.validate(obj, JSON_SCHEMA)
        assert {b["inode"] for b in obj["buffers"]} >= {inode}
        row = next(p for p in obj["processes"] if p["pid"] == process.pid)
        assert row["rss"] == 22 * MiB and row["buffers"] == 3
        assert set(row["delays"]) >= {"blkio", "swapin", "freepages", "cpu"} and row["delays_na"] is None
        assert all(d["total_ns"] >= 0 and d["count"] >= 0 for d in row["delays"].values())
        assert row["blkio"] is not None and 0 <= row["blkio"] <= 100
        weights = next(b for b in obj["buffers"] if b["inode"] == inode)
        assert weights["name"] == "live-weights" and weights["read"] > 0
        assert weights["paths"]["read"]["bytes"] > 0 and "pin" in weights
        # the stock kernel has no exporter rw_file: absent, with no rate rather than 0
        rw_file = next(p for p in obj["paths"] if p["path"] == "rw_file")
        assert rw_file["status"].startswith("absent") and rw_file["bytes"] is None and rw_file["calls"] is None
        assert "rw_file" in obj["hooks"]["absent"] and "rw_file" not in obj["hooks"]["missing"]


def test_prometheus_scrapes_export_and_answers_a_promql_query(workload, tmp_path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "the Debian package prometheus is missing on the host root (.ci/install-deps installs it)"
    process, inode = workload(load=False)
    export_port, prom_port = 19464, 19090
    # --no-trace: the buffer bytes need only the inventory, and skipping the hook trials keeps the guest suite short
    exporter = subprocess.Popen([DMABUF_TOP, "export", "--listen", f"127.0.0.1:{export_port}", "--top", "5",
                                 "--no-trace"],
                                stderr=subprocess.PIPE, text=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""\
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
        scrape_configs:
          - job_name: dmabuf-top
            static_configs:
              - targets: ["127.0.0.1:{export_port}"]
        """))
    server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(promql):
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
            with urllib.request.urlopen(url, timeout=10) as reply:
                return json.load(reply)["data"]["result"]

        deadline = time.monotonic() + 240
        result = []
        while time.monotonic() < deadline:
            try:
                result = query('dmabuf_buffer_bytes{name="live-weights"}')
            except OSError:
                result = []
            if result:
                break
            time.sleep(1)
        assert result, "Prometheus never scraped a live-weights series"
        assert result[0]["metric"]["inode"] == str(inode) and result[0]["metric"]["exporter"] == "system"
        assert float(result[0]["value"][1]) == 16 * MiB
        by_exporter = {r["metric"]["exporter"]: float(r["value"][1]) for r in query("dmabuf_exporter_bytes")}
        assert by_exporter["system"] >= 20 * MiB and by_exporter["udmabuf"] >= 2 * MiB
        rss = query(f'dmabuf_process_rss_bytes{{pid="{process.pid}"}}')
        assert float(rss[0]["value"][1]) == 22 * MiB
    finally:
        server.terminate()
        exporter.terminate()
        server.wait(timeout=60)
        exporter.wait(timeout=60)

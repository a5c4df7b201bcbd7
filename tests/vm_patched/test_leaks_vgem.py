"""`dmabuf-top leaks` on a buffer only the kernel keeps alive, on the patched lab kernel (vgem, an importer).

A system-heap buffer is imported by vgem (DRM_IOCTL_PRIME_FD_TO_HANDLE: dma_buf_get, then an attachment and a
reference held by the GEM object), then its only fd is closed: no process holds it, vgem does. `leaks` must say
what holds it, the attached device, and its last get/put events with the task that did them (this process), and
who created it from where. This kernel (7.2, built without cgroups) has the dma_buf tracepoints; the lifecycle
probe loads on it because it leaves out the creator's cgroup there (one run before that fix had no export hook
live, so no creator). A second buffer imported the same way but still held by an fd is the case built to fool it:
it had the same events, yet a process holds it, so that process is what keeps it alive and no kernel hold is
claimed.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_attached import imported, vgem  # noqa: F401 (vgem: the fixture, used by name)

from dmabuf_top import alloc

pytestmark = pytest.mark.guest

MiB = 1 << 20


def test_leaks_shows_what_keeps_a_kernel_only_buffer_alive(vgem):  # noqa: F811
    leaks = subprocess.Popen([sys.executable, "-m", "dmabuf_top", "leaks", "--min-age", "0", "--json", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    found, report = {}, {}
    try:
        deadline = time.monotonic() + 600
        # a report a second: a blocking readline ends at the next one, or at end of file if leaks stopped
        assert leaks.stdout.readline(), "leaks printed no first report"  # the probe is attached from here
        with alloc.alloc_heap(MiB, name="vgem-kept") as kept, alloc.alloc_heap(MiB, name="vgem-held") as held, \
                imported(vgem, kept.fd), imported(vgem, held.fd):
            inode, held_inode = kept.inode, held.inode
            kept.close()  # from here only vgem keeps it
            while time.monotonic() < deadline:
                report = json.loads(leaks.stdout.readline() or "{}")
                assert report, f"leaks stopped: {leaks.stderr.read().decode()}"
                found = {b["inode"]: b for group in report.get("groups", ()) for b in group["buffers"]}
                events = (found.get(inode) or {}).get("last_events") or []
                if {"get", "put"} <= {e["event"] for e in events} and held_inode in found:
                    break
    finally:
        leaks.send_signal(signal.SIGTERM)
        _, errors = leaks.communicate(timeout=120)
    assert report.get("hold_events_known"), (report, errors)
    buffer = found[inode]
    assert buffer["fd_holders"] == [] and buffer["map_holders"] == [] and buffer["kernel_holds"] == ["vgem"]
    by_event = {e["event"]: e for e in buffer["last_events"]}
    for event in ("get", "put"):  # the import's dma_buf_get and dma_buf_put
        assert by_event[event]["pid"] == os.getpid() and by_event[event]["age_s"] >= 0, buffer["last_events"]
    # the export hook is live on this kernel: this process made it, still runs, and the allocation stack says where
    assert report["creations_known"] and not report["notes"], (report["notes"], errors)
    assert buffer["creator"] is not None, (buffer, errors)
    assert buffer["creator"]["pid"] == os.getpid() and buffer["creator_state"] == "running"
    assert buffer["creator"]["comm"] == open("/proc/self/comm").read().strip()
    group = next(group for group in report["groups"] if any(b["inode"] == inode for b in group["buffers"]))
    assert group["stack"] and any("heap" in frame for frame in group["stack"]), group["stack"]

    other = found[held_inode]
    assert [h["pid"] for h in other["fd_holders"]] == [os.getpid()]
    assert other["kernel_holds"] == [] and other["last_events"] == []

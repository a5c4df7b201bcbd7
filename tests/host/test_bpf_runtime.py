"""The libbpf binding against the running kernel: load, attach, maps, ring buffer, iterator, failures."""
import os
import subprocess
import sys

import pytest

from dmabuf_top import bpf
from dmabuf_top.errors import BpfError
from dmabuf_top.probes import feature_probe, object_path
from dmabuf_top.probes.dmabuf_iter import read_buffers

pytestmark = pytest.mark.root


def loaded_program_names():
    shown = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return shown


def test_round_trip_through_rodata_map_and_ring_buffer():
    with bpf.BpfObject(object_path("feature_probe")) as obj:
        obj.only("trial_round_trip")
        obj.set_rodata(trial_target_tgid=os.getpid())
        obj.load()
        obj.program("trial_round_trip").attach()
        seen = []
        with bpf.RingBuffer(obj.map("trial_ringbuf"), seen.append) as ring:
            for _ in range(5):
                os.getppid()
            ring.poll(timeout_ms=200)
        assert [int.from_bytes(r, "little") for r in seen] == [os.getpid()] * 5
        counts = obj.map("trial_counts")
        key = os.getpid().to_bytes(4, "little")
        assert int.from_bytes(counts.lookup(key), "little") == 5
        drained = counts.pop_all()
        assert drained == [(key, (5).to_bytes(8, "little"))]
        assert list(counts.keys()) == []


def test_rodata_filter_really_filters():
    with bpf.BpfObject(object_path("feature_probe")) as obj:
        obj.only("trial_round_trip")
        obj.set_rodata(trial_target_tgid=os.getpid() + 1_000_000)  # no such process
        obj.load()
        obj.program("trial_round_trip").attach()
        os.getppid()
        assert list(obj.map("trial_counts").keys()) == []


def test_callback_errors_surface_from_poll():
    def explode(_record):
        raise ValueError("from the callback")

    with bpf.BpfObject(object_path("feature_probe")) as obj:
        obj.only("trial_round_trip")
        obj.set_rodata(trial_target_tgid=os.getpid())
        obj.load()
        obj.program("trial_round_trip").attach()
        with bpf.RingBuffer(obj.map("trial_ringbuf"), explode) as ring:
            os.getppid()
            with pytest.raises(ValueError, match="from the callback"):
                ring.poll(timeout_ms=200)


def test_dmabuf_iterator_reads_on_this_kernel():
    # The host has no exporter, so the list is empty, but the program loads, attaches and runs.
    assert read_buffers() == []


def test_verifier_rejection_names_program_errno_and_log(faulty_object):
    with bpf.BpfObject(faulty_object) as obj:
        obj.only("unchecked_lookup")
        with pytest.raises(bpf.BpfLoadError) as raised:
            obj.load()
    error = raised.value
    assert error.program == "unchecked_lookup"
    assert error.errno == 13  # EACCES: the verifier's "invalid mem access"
    assert "invalid mem access" in error.log_tail
    assert "unchecked_lookup" in str(error) and "EACCES" in str(error)


def test_failed_attach_half_way_detaches_what_was_attached(faulty_object):
    with bpf.BpfObject(faulty_object) as obj:
        obj.only("attaches_fine", "attaches_nowhere")
        obj.load()
        fine_id_seen = "attaches_fine" in loaded_program_names()
        obj.program("attaches_fine").attach()
        with pytest.raises(bpf.BpfAttachError, match="attaches_nowhere"):
            obj.program("attaches_nowhere").attach()
    assert fine_id_seen
    assert "attaches_fine" not in loaded_program_names()


def test_unknown_hook_is_a_clear_error():
    with bpf.BpfObject(object_path("feature_probe")) as obj:
        obj.only("trial_tracepoint")
        obj.load()
        with pytest.raises(bpf.BpfAttachError, match="tracepoint no_such:hook failed: ENOENT"):
            obj.program("trial_tracepoint").attach_tracepoint("no_such", "hook")


def test_fentry_trial_reports_the_kernels_answer():
    results = feature_probe.trial_fentry(["vfs_read", "vfs_write"])
    assert set(results) == {"vfs_read", "vfs_write"}
    # Whatever this kernel says, it says it per function, with a reason when it refuses.
    for trial in results.values():
        assert trial.ok or trial.detail


def test_close_is_idempotent_and_closing_twice_is_safe():
    obj = bpf.BpfObject(object_path("feature_probe"))
    obj.only("trial_tracepoint")
    obj.load()
    obj.close()
    obj.close()
    with pytest.raises(BpfError):
        obj.set_rodata(trial_target_tgid=1)


TRACEFS_MOUNTS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")


def _mounted(path):
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


def test_tracepoint_attach_works_on_a_machine_where_nothing_mounted_tracefs():
    # A freshly booted CI machine has no tracefs mounted; libbpf then looks for the event's id under
    # /sys/kernel/debug/tracing and fails with ENOENT. Run in a new process: libbpf remembers where it looked.
    for path in TRACEFS_MOUNTS:
        if _mounted(path) and subprocess.run(["umount", path]).returncode != 0:
            pytest.skip(f"{path} is busy (another tracer holds it): cannot show a machine without tracefs")
    try:
        attach = ("from dmabuf_top import bpf\nfrom dmabuf_top.probes import object_path\n"
                  "with bpf.BpfObject(object_path('feature_probe')) as obj:\n"
                  "    obj.only('trial_round_trip'); obj.load(); obj.program('trial_round_trip').attach()\n")
        result = subprocess.run([sys.executable, "-c", attach], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-600:]
        assert any(_mounted(path) for path in TRACEFS_MOUNTS)  # mounted, or reached through debugfs's automount
    finally:
        if not _mounted("/sys/kernel/tracing"):
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)

"""The recorder's loop with a plain Source: order of start and exec, exit codes, how it ended."""
import os
import signal
import threading

from dmabuf_top.inventory.index import BufferFeed
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording import session as s
from dmabuf_top.recording.command import exit_status
from dmabuf_top.recording.recorder import Recorder, RecordingContext
from dmabuf_top.recording.session import Session, SessionWriter
from dmabuf_top.recording.sources import BufferSnapshots


class Counter:
    """A Source that writes a marker when started and one Drop row per poll."""

    name = "counter"

    def __init__(self, marker):
        self.marker = marker
        self.context = None
        self.polls = 0
        self.stopped = 0

    def start(self, context):
        self.context = context
        open(self.marker, "w").close()
        return [s.Hook("counter", "counting", State.LIVE, "test", "")]

    def poll(self, now_ns):
        self.polls += 1
        return [s.Drop(now_ns, "counter", 1)]

    def stop(self, now_ns):
        self.stopped += 1
        return [s.Drop(now_ns, "final", 1)]


def record(tmp_path, command, **options):
    writer = SessionWriter(tmp_path / "r.session")
    source = Counter(tmp_path / "started")
    result = Recorder(writer, [source], interval_s=0.01, command=command, **options).run()
    return result, source, Session(tmp_path / "r.session")


def test_sources_start_before_the_command_runs(tmp_path):
    result, source, session = record(tmp_path, ["sh", "-c", f"test -e {tmp_path / 'started'} && exit 7"])
    assert (result.exit_code, result.command_exit) == (7, 7)
    assert source.context.target_pid > 0 and source.stopped == 1
    assert session.end_reason == "command exited with code 7" and session.exit_code == 7
    assert session.hooks() == [s.Hook("counter", "counting", State.LIVE, "test", "")]
    assert dict(session.query("SELECT source, count(*) FROM drops GROUP BY source")) == {
        "counter": source.polls, "final": 1}


def test_a_command_killed_by_a_signal(tmp_path):
    result, _, session = record(tmp_path, ["sh", "-c", "kill -SEGV $$"])
    assert (result.exit_code, result.command_exit) == (128 + signal.SIGSEGV, -signal.SIGSEGV)
    assert session.end_reason == "command killed by SIGSEGV"
    assert exit_status(0) == 0


def test_duration_without_a_command(tmp_path):
    result, source, session = record(tmp_path, None, duration_s=0.1)
    assert result.exit_code == 0 and source.context.target_pid is None
    assert session.end_reason == "duration reached (0.1 s)" and source.polls >= 2


def test_sigterm_ends_cleanly_and_reaches_the_command(tmp_path):
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    result, _, session = record(tmp_path, ["sleep", "30"])
    timer.join()
    assert session.end_reason == "terminated (SIGTERM); command killed by SIGTERM"
    assert result.exit_code == 128 + signal.SIGTERM


def test_an_unknown_command_is_one_clear_error(tmp_path):
    import pytest

    from dmabuf_top.errors import DmabufTopError

    with pytest.raises(DmabufTopError, match="cannot run 'no-such-command-here': not found"):
        record(tmp_path, ["no-such-command-here"])
    assert Session(tmp_path / "r.session").end_reason.startswith("error: cannot run")


def test_buffer_snapshots_without_the_iterator_is_a_missing_hook():
    from dmabuf_top.errors import KernelLacks

    def refuse():
        raise KernelLacks("no iter/dmabuf here")

    source = BufferSnapshots(BufferFeed(refuse))
    hooks = source.start(RecordingContext(None, 0.1))
    assert hooks == [s.Hook("iter/dmabuf", "buffers", State.MISSING, "", "buffer snapshots off: no iter/dmabuf here")]
    assert source.poll(1) == [] and source.stop(2) == []

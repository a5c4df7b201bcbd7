"""`dmabuf-top record`: sources of records, a polling loop, and the traced command.

The seam: a Source
------------------
Everything a recording collects comes from Sources. A Source is any object with:

    name: str
    start(context: RecordingContext) -> list[session.Hook]
        Load and attach. Called before the traced command runs its first instruction
        (the child is forked and waits on a pipe until every source has started).
        Return one Hook per hook it tried, live or not, with the reason when not: a
        missing hook is recorded and reported, never fatal. Raise only for our bugs.
    poll(now_ns: int) -> Iterable[record]
        Called every tick (about every `context.interval_s`) from the recorder's thread.
        Return the session records (session.BufferSnapshot, PathSample, IoEvent, Stack,
        StackCount, LatencyBucket, LifecycleEvent, TaskstatsSample, Drop) gathered since
        the last call; times are CLOCK_MONOTONIC ns (bpf_ktime_get_ns, time.monotonic_ns).
        PathSample counters are deltas since the previous poll (drain maps with
        lookup_and_delete_batch); LatencyBucket, StackCount and Drop rows add up.
        Must not block for long: poll a ring buffer with a zero timeout.
    stop(now_ns: int) -> Iterable[record]
        Final drain, then detach and free everything. Called once, on every way out
        (command exited, duration, Ctrl-C, SIGTERM, disk full), even if start() failed.

RecordingContext tells sources which process is traced (`target_pid`: the command's pid,
whose children a tracer follows by tgid ancestry; None: the whole system) and the cadence.

Sources: BufferSnapshots here (iter/dmabuf, periodic); IoPathSource (I/O paths, lifecycle,
stacks, latency, drops) and TaskstatsSource in record_sources.py, which `record` runs all.
"""
import errno as errno_module
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Protocol, Sequence

from . import session as records
from .probes.hooks import State
from .errors import DmabufTopError

POLL_STEP_S = 0.02  # how soon the loop notices the command's exit or a signal
GRACE_S = 5.0  # how long a signalled command gets to exit before the recorder ends without its code


@dataclass(frozen=True)
class RecordingContext:
    target_pid: Optional[int]
    interval_s: float


class Source(Protocol):
    name: str

    def start(self, context: RecordingContext) -> List[records.Hook]: ...

    def poll(self, now_ns: int) -> Iterable: ...

    def stop(self, now_ns: int) -> Iterable: ...


class BufferSnapshots:
    """Every dma-buf, from the iter/dmabuf program, every `interval_s` and once at the end."""

    name = "buffers"

    def __init__(self, iterator_factory=None):
        self._factory = iterator_factory
        self._iterator = None
        self._interval_ns = 0
        self._last_ns = None

    def start(self, context):
        self._interval_ns = int(context.interval_s * 1e9)
        try:
            if self._factory is None:
                from .probes.dmabuf_iter import DmabufIterator

                self._factory = DmabufIterator
            self._iterator = self._factory()
        except DmabufTopError as error:
            return [records.Hook("iter/dmabuf", "buffers", State.MISSING, "", f"buffer snapshots off: {error}")]
        return [records.Hook("iter/dmabuf", "buffers", State.LIVE, "iter/dmabuf", "periodic buffer snapshots")]

    def _snapshot(self, now_ns):
        self._last_ns = now_ns
        return [records.BufferSnapshot(now_ns, b.inode, b.exporter, b.name, b.size, b.file_refs,
                                       b.attachment_count, b.backing_inode) for b in self._iterator.read()]

    def poll(self, now_ns):
        if self._iterator is None or (self._last_ns is not None and now_ns - self._last_ns < self._interval_ns):
            return []
        return self._snapshot(now_ns)

    def stop(self, now_ns):
        if self._iterator is None:
            return []
        try:
            return self._snapshot(now_ns)
        finally:
            self._iterator.close()
            self._iterator = None


# ---------------------------------------------------------------------------------------------
# The traced command


class Command:
    """A command forked now and held before exec until release(): tracing starts before its first instruction."""

    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)
        go_read, self._go_write = os.pipe()
        # Closed by a successful exec (O_CLOEXEC); carries the errno of a failed one.
        self._error_read, error_write = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # the child: only os calls until exec
            try:
                os.close(self._go_write)
                os.close(self._error_read)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if os.read(go_read, 1) != b"g":
                    os._exit(125)  # the recorder died or gave up before starting it
                os.close(go_read)
                os.execvp(self.argv[0], self.argv)
            except OSError as error:
                os.write(error_write, str(error.errno).encode())
            finally:
                os._exit(127)
        os.close(go_read)
        os.close(error_write)
        self.returncode = None

    def release(self):
        """Lets the command exec; raises DmabufTopError if it could not be run."""
        os.write(self._go_write, b"g")
        os.close(self._go_write)
        failure = os.read(self._error_read, 16)
        os.close(self._error_read)
        if failure:
            self.wait()
            code = int(failure)
            why = "not found" if code == errno_module.ENOENT else os.strerror(code)
            raise DmabufTopError(f"cannot run {self.argv[0]!r}: {why}", exit_code=127)

    def abandon(self):
        """Never ran: the child exits without exec."""
        os.close(self._go_write)
        os.close(self._error_read)
        self.wait()

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_STEP_S)
        return self.returncode

    def signal(self, signum):
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


def exit_status(returncode):
    """The recorder's exit code for the command's: its own, or 128 + signal as a shell says."""
    return returncode if returncode >= 0 else 128 - returncode


def describe_exit(returncode):
    if returncode >= 0:
        return f"command exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"command killed by {name}"


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class RecordResult:
    end_reason: str
    exit_code: int  # what `dmabuf-top record` exits with: the command's, or 0
    command_exit: Optional[int]  # the command's own (negative: killed by that signal)
    rows: int


class Recorder:
    def __init__(self, writer: records.SessionWriter, sources: Sequence[Source], *, interval_s=0.5,
                 duration_s=None, command=None, clock_ns=time.monotonic_ns):
        self.writer = writer
        self.sources = list(sources)
        self.interval_s = interval_s
        self.duration_s = duration_s
        self.command_argv = list(command) if command else None
        self._clock_ns = clock_ns
        self._signal = None

    def _on_signal(self, signum, _frame):
        self._signal = signum

    def run(self) -> RecordResult:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        command = None
        released = False
        started = []
        try:
            if self.command_argv:
                command = Command(self.command_argv)
            context = RecordingContext(command.pid if command else None, self.interval_s)
            for source in self.sources:
                started.append(source)
                self.writer.add_all(source.start(context))
            self.writer.flush()
            if command:
                released = True
                command.release()
            reason = self._loop(command)
        except BaseException as error:
            if command is not None and not released:
                command.abandon()
            self._stop(started)
            why = error if isinstance(error, DmabufTopError) else f"{type(error).__name__}: {error}"
            self.writer.close(f"error: {why}"[:100], 127 if isinstance(error, DmabufTopError) and released else None)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        command_exit = command.returncode if command else None
        self._stop(started)
        reason = self.writer.close(reason, command_exit)
        exit_code = exit_status(command_exit) if command_exit is not None else 0
        return RecordResult(reason, exit_code, command_exit, self.writer.rows_committed)

    def _loop(self, command):
        start = self._clock_ns()
        deadline = None if self.duration_s is None else start + int(self.duration_s * 1e9)
        next_poll = start
        while True:
            now = self._clock_ns()
            if now >= next_poll:
                for source in self.sources:
                    self.writer.add_all(source.poll(now))
                self.writer.tick()
                next_poll = now + int(self.interval_s * 1e9)
            if self.writer.disk_full:
                if command:
                    command.poll()
                return "disk full"
            if command and command.poll() is not None:
                return describe_exit(command.returncode)
            if self._signal is not None:
                name = signal.Signals(self._signal).name
                reason = {"SIGINT": "interrupted (SIGINT)", "SIGTERM": "terminated (SIGTERM)"}[name]
                if command:
                    if self._signal == signal.SIGTERM:
                        command.signal(signal.SIGTERM)  # Ctrl-C reaches the command through the terminal
                    if command.wait(GRACE_S) is not None:
                        reason += f"; {describe_exit(command.returncode)}"
                return reason
            if deadline is not None and now >= deadline:
                return f"duration reached ({self.duration_s:g} s)"
            time.sleep(max(0.0, min(POLL_STEP_S, (next_poll - self._clock_ns()) / 1e9)))

    def _stop(self, started):
        now = self._clock_ns()
        for source in started:
            try:
                self.writer.add_all(source.stop(now))
            except DmabufTopError as error:
                print(f"dmabuf-top: {source.name}: {error}", file=sys.stderr)
        started.clear()

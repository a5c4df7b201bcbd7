"""`dmabuf-top record`: the Source seam and the polling loop (the traced command is in command.py).

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

Every source is polled with the same `now_ns` in a tick, in the order given: sources that share
one read per tick (sources.py: buffer snapshots and I/O attribution over one iter/dmabuf read) rely
on it. The sources `record` runs are in sources.py and taskstats_source.py; this module imports none.
"""
import signal
import sys
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple

from ..errors import DmabufTopError
from . import session as records
from .command import GRACE_S, POLL_STEP_S, Command, describe_exit, exit_status


@dataclass(frozen=True)
class RecordingContext:
    target_pid: Optional[int]
    interval_s: float
    command: Tuple[str, ...] = ()  # the traced command's argv (its executable resolves allocation stacks)


class Source(Protocol):
    name: str

    def start(self, context: RecordingContext) -> List[records.Hook]: ...

    def poll(self, now_ns: int) -> Iterable: ...

    def stop(self, now_ns: int) -> Iterable: ...


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
            context = RecordingContext(command.pid if command else None, self.interval_s,
                                       tuple(self.command_argv or ()))
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

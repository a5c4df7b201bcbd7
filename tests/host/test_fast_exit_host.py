"""The syscall path's fast exit (iopaths.bpf.c, no_interest_here and fd_holder_tgids) on this kernel, with every
process traced as the live view and the exporter run it: a read or write of a process that maps no shared memory
and holds no fd of it leaves sys_enter at a per-CPU flag; every way a process can come to hold a memfd makes its
reads and writes of it counted, exactly.

Each subject (tests/fast_exit_subject.py, tests/host/fast_exit_threads.c) is started before the tracer, which
counts the fast-exit misses of one process named when it is loaded (Tracer(debug_tgid=...)). Each test first
shows its subject's ordinary reads taking the fast exit (so that it really is of no interest, and the test would
fail without the rule it holds), then gives it a memfd one way and counts its I/O on it.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from dmabuf_top import features
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBJECT = os.path.join(ROOT, "tests", "fast_exit_subject.py")
THREADS_SOURCE = os.path.join(ROOT, "tests", "host", "fast_exit_threads.c")
PLAIN_READS = 400  # of an ordinary file, before the subject gets shared memory
IO_CALLS = 25  # writes and reads of the memfd once it has it


@pytest.fixture(scope="module")
def report():
    return features.detect()


@pytest.fixture
def plain_file(tmp_path):
    path = tmp_path / "plain.bin"
    path.write_bytes(os.urandom(4096))
    return str(path)


class Subject:
    """A fast_exit_subject.py process driven line by line."""

    def __init__(self, plain_file, pass_fds=()):
        self.process = subprocess.Popen([sys.executable, SUBJECT, plain_file], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, pass_fds=pass_fds)
        self.pid = self.process.pid

    def __call__(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer, f"the subject died at {command!r}"
        return answer

    def snapshot(self, tracer):
        """The tracer's counters once the subject waits for its next command: switched out, its run of calls
        (iopaths.bpf.c, struct call_batch) is in the maps."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{self.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "S":
                    return tracer.snapshot()
            time.sleep(0.001)
        raise AssertionError("the subject never waited for its next command")

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def subjects(plain_file):
    made = []

    def make(pass_fds=()):
        made.append(Subject(plain_file, pass_fds))
        return made[-1]

    yield make
    for subject in made:
        subject.close()


def syscall_tracer(report, subject_pid):
    tracer = Tracer(report=report, stacks=False, debug_tgid=subject_pid)
    if tracer.attribution != "syscalls":
        tracer.close()
        pytest.skip("the VFS path is used here: the fast exit is the syscall path's")
    return tracer


def assert_of_no_interest(tracer, subject, rounds=3):
    """Its ordinary reads take the fast exit. Some may not: any process's new bit clears every CPU's flag until
    the next context switch, and this machine runs other work, so one round of three is enough (a process of
    interest never takes it)."""
    past = []
    for _ in range(rounds):
        before = tracer.rw_past_fast_exit()
        subject(f"plain {PLAIN_READS}")
        past.append(tracer.rw_past_fast_exit() - before)
        if past[-1] < PLAIN_READS // 4:
            return
    raise AssertionError(f"reads past the fast exit, of {PLAIN_READS} per round: {past}")


def assert_counted_exactly(snapshot, pid, writes=IO_CALLS, reads=IO_CALLS):
    by_task = {path: counters for (task, path), counters in snapshot.by_task.items() if task == pid}
    assert by_task["write"].calls == writes and by_task["write"].bytes == writes * 4096, by_task
    if reads:
        assert by_task["read"].calls == reads and by_task["read"].bytes == reads * 4096, by_task


def test_a_process_of_no_interest_takes_the_fast_exit_and_one_with_a_memfd_does_not(report, subjects):
    subject = subjects()
    with syscall_tracer(report, subject.pid) as tracer:
        assert tracer.programs["fd_holder_seed"].live and tracer.programs["flush_on_switch"].live
        assert_of_no_interest(tracer, subject)
        subject("memfd")
        before = tracer.rw_past_fast_exit()
        subject("plain 200")
        subject(f"rw {IO_CALLS}")
        # memfd_create's exit: every call now (and the subject's own reads and writes of its stdin and stdout)
        assert tracer.rw_past_fast_exit() - before >= 200 + 2 * IO_CALLS
        assert_counted_exactly(subject.snapshot(tracer), subject.pid)


def test_a_file_to_file_copy_is_of_interest_only_with_shared_memory_at_an_end(report, subjects):
    """copy_file_range between ordinary files by a process of no interest opens no record (the CI host's other
    paired workload: it paid a record per call); sendfile from a file into the memfd it then holds is counted
    exactly, call by call."""
    subject = subjects()
    with syscall_tracer(report, subject.pid) as tracer:
        assert_of_no_interest(tracer, subject)
        subject(f"copy {IO_CALLS}")
        by_task = {path for (task, path) in subject.snapshot(tracer).by_task if task == subject.pid}
        assert "copy_file_range" not in by_task
        subject("memfd")
        subject(f"sendfile {IO_CALLS}")
        sent = {path: counters for (task, path), counters in subject.snapshot(tracer).by_task.items()
                if task == subject.pid}["sendfile"]
        assert (sent.calls, sent.bytes) == (IO_CALLS, IO_CALLS * 4096)


def test_ioctls_on_a_terminal_leave_a_process_of_no_interest(report, subjects):
    """An ioctl may install an fd (DRM PRIME, dma-heap, binder...) and marks its process, except on a tty (both
    ends of a pseudo-terminal here): most processes ask their terminal something."""
    subject = subjects()
    with syscall_tracer(report, subject.pid) as tracer:
        subject("tty")
        assert_of_no_interest(tracer, subject)


# Another process's memfd, opened through its /proc/PID/fd, or taken with pidfd_getfd.
@pytest.mark.parametrize("take", ["open /proc/{pid}/fd/{fd}", "getfd {pid} {fd}"])
def test_a_memfd_taken_from_another_process_is_counted(report, subjects, take):
    holder, subject = subjects(), subjects()
    fd, inode = holder("memfd").split()
    with syscall_tracer(report, subject.pid) as tracer:
        assert_of_no_interest(tracer, subject)
        assert subject(take.format(pid=holder.pid, fd=fd)) == inode
        subject(f"rw {IO_CALLS}")
        assert_counted_exactly(subject.snapshot(tracer), subject.pid)


def test_a_memfd_received_over_a_unix_socket_is_counted(report, subjects):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs:
        subject = subjects(pass_fds=(theirs.fileno(),))
        their_fd = theirs.fileno()  # the same number in the subject (pass_fds)
    memfd = os.memfd_create("fast-exit-sent")
    try:
        with syscall_tracer(report, subject.pid) as tracer:
            assert_of_no_interest(tracer, subject)
            socket.send_fds(ours, [b"m"], [memfd])
            assert subject(f"recv {their_fd}") == str(os.fstat(memfd).st_ino)
            subject(f"rw {IO_CALLS}")
            assert_counted_exactly(subject.snapshot(tracer), subject.pid)
    finally:
        os.close(memfd)
        ours.close()




def test_a_memfd_held_before_the_tracer_started_is_counted_from_the_first_call(report, subjects):
    """The seeding iterator (fd_holder_seed): the subject maps nothing and made its memfd before the tracer."""
    subject = subjects()
    subject("memfd")
    with syscall_tracer(report, subject.pid) as tracer:
        subject(f"rw {IO_CALLS}")
        assert_counted_exactly(subject.snapshot(tracer), subject.pid)


def test_a_process_holding_an_io_uring_ring_before_the_tracer_started_is_of_interest(report, subjects):
    """A ring's requests can open or receive a memfd (IORING_OP_OPENAT, RECVMSG) with no syscall exit to see:
    the seeding iterator marks a process that holds one, as io_uring_setup's exit does."""
    subject = subjects()
    if subject("uring") != "ok":
        pytest.skip("io_uring is disabled here")
    with syscall_tracer(report, subject.pid) as tracer:
        before = tracer.rw_past_fast_exit()
        subject(f"plain {PLAIN_READS}")
        assert tracer.rw_past_fast_exit() - before >= PLAIN_READS


def test_a_memfd_inherited_across_fork_is_counted_in_the_child(report, subjects):
    subject = subjects()
    subject("memfd")
    with syscall_tracer(report, subject.pid) as tracer:
        child = int(subject(f"fork {IO_CALLS}"))
        assert_counted_exactly(subject.snapshot(tracer), child)  # the child exited: its calls are in


def test_a_memfd_kept_across_exec_is_counted_in_the_new_program(report, subjects):
    """exec takes the bit again from the fd table (fd_holder_after_exec): a memfd that stays open is in it."""
    subject = subjects()
    subject("memfd keep")
    with syscall_tracer(report, subject.pid) as tracer:
        subject("exec")
        subject(f"rw {IO_CALLS}")
        assert_counted_exactly(subject.snapshot(tracer), subject.pid)


def test_a_program_execed_without_the_shared_memory_it_held_is_of_no_interest(report, subjects):
    """The memfd was close-on-exec: the new program holds none, so its reads take the fast exit (a program
    started by a process that once held shared memory, the benchmark's own workloads among them)."""
    subject = subjects()
    subject("memfd")
    with syscall_tracer(report, subject.pid) as tracer:
        subject("exec")
        assert_of_no_interest(tracer, subject)


def test_a_memfd_a_sibling_thread_creates_is_counted_at_once_on_the_other_cpu(report, plain_file, tmp_path):
    """Thread B spins on CPU 1 (reads of an ordinary file: its CPU's flag says "no interest") while thread A, on
    CPU 0, creates a memfd; B writes into it with write() as soon as it sees the number, with no context switch
    in between: memfd_create's exit cleared every CPU's flag. Every run must count B's writes exactly; runs are
    repeated (three at most) until one shows B's reads before the memfd leaving at the flag, i.e. a run in which
    no other process's new bit cleared B's flag first (this machine runs other work)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two CPUs are needed")
    compiler = shutil.which("gcc") or pytest.skip("gcc is not installed")
    binary = tmp_path / "fast_exit_threads"
    subprocess.run([compiler, "-O2", "-pthread", "-o", str(binary), THREADS_SOURCE], check=True)
    fast_shares = []
    for _ in range(3):
        process = subprocess.Popen([str(binary), plain_file, str(IO_CALLS)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        try:
            with syscall_tracer(report, process.pid) as tracer:
                out, _ = process.communicate("go\n", timeout=60)
                assert process.returncode == 0
                _inode, reads_before = map(int, out.split())
                past = tracer.rw_past_fast_exit()
                snapshot = tracer.snapshot()  # the process exited: its calls are in the maps
        finally:
            if process.poll() is None:
                process.kill()
        assert_counted_exactly(snapshot, process.pid, reads=0)
        assert reads_before >= 100
        fast_shares.append(1 - (past - IO_CALLS) / reads_before)
        if past - IO_CALLS < reads_before // 4:
            return
    raise AssertionError(f"B's reads never left at the flag: share that did, per run: {fast_shares}")

"""The command `record` and `validate` trace: forked now, held before exec until the tracing is attached.

A child that exec()s only after release() runs its first instruction traced; a failed exec is told
back through a close-on-exec pipe, so `cannot run X: not found` is a sentence, not a silent exit 127.
"""
import errno as errno_module
import os
import signal
import time
from typing import Sequence

from ..errors import DmabufTopError

POLL_STEP_S = 0.02  # how soon a waiter notices the command's exit or a signal
GRACE_S = 5.0  # how long a signalled command gets to exit before the recorder ends without its code


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

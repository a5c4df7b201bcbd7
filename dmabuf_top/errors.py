"""One error type for everything a user can cause.

Each failure a user can cause (a wrong flag, a missing permission, a missing
package, a kernel without a feature) is raised as a DmabufTopError whose message
is one sentence saying what happened and what to do; `cli.main` prints it on one
line and exits with its code. Tracebacks are for our bugs, not for their input.
"""


class DmabufTopError(Exception):
    exit_code = 1

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NeedsPrivilege(DmabufTopError):
    """Not root / missing CAP_BPF+CAP_PERFMON."""

    exit_code = 2


class MissingDependency(DmabufTopError):
    """A system library or program (libbpf, clang, qemu) is not installed."""

    exit_code = 3


class KernelLacks(DmabufTopError):
    """The running kernel does not offer what was asked for (a hook, a device)."""

    exit_code = 4


class BpfError(DmabufTopError):
    """libbpf refused to open, load or attach something."""

    exit_code = 5

"""Feature detection by trial: load and attach do-nothing programs (feature_probe.bpf.c).

Each trial returns a Trial saying whether the kernel accepted it and, if not,
the errno it gave, so a user sees "fentry: no (EPERM)" rather than a guess.
"""
import errno as errno_codes
import os
from dataclasses import dataclass

from ..bpf import BpfAttachError, BpfLoadError, BpfObject, RingBuffer
from ..errors import BpfError
from . import object_path

FENTRY_SLOTS = 32  # number of trial_fentry_N programs in feature_probe.bpf.c


@dataclass(frozen=True)
class Trial:
    ok: bool
    detail: str

    @classmethod
    def refused(cls, error):
        code = getattr(error, "errno", None)
        if code:
            return cls(False, errno_codes.errorcode.get(code, str(code)))
        return cls(False, str(error))


def _trial(program_name, attach, target_function=None):
    """Load one program of the trial object alone, attach it with `attach(program)`, detach."""
    try:
        with BpfObject(object_path("feature_probe")) as obj:
            obj.only(program_name)
            program = obj.program(program_name)
            if target_function:
                program.set_attach_target(target_function)
            obj.load()
            attach(program)
            return Trial(True, "load and attach succeeded")
    except (BpfLoadError, BpfAttachError) as error:
        return Trial.refused(error)
    except BpfError as error:
        return Trial(False, str(error))


def trial_tracepoint(category, name):
    return _trial("trial_tracepoint", lambda p: p.attach_tracepoint(category, name))


def trial_raw_tracepoint(name):
    return _trial("trial_raw_tracepoint", lambda p: p.attach_raw_tracepoint(name))


def trial_tp_btf(name):
    return _trial("trial_tp_btf", lambda p: p.attach_trace(), target_function=name)


def trial_fexit(function):
    return _trial("trial_fexit", lambda p: p.attach_trace(), target_function=function)


def trial_kprobe(function, retprobe=False):
    program = "trial_kretprobe" if retprobe else "trial_kprobe"
    return _trial(program, lambda p: p.attach_kprobe(function, retprobe=retprobe))


def trial_iterator(target):
    """target: 'dmabuf', 'task_file', 'task_vma'."""
    return _trial(f"trial_iter_{target}", lambda p: p.attach_iter())


def trial_round_trip():
    """Ring buffer and hash map, for real: count our own getppid() calls and read them back."""
    calls = 3
    try:
        with BpfObject(object_path("feature_probe")) as obj:
            obj.only("trial_round_trip")
            obj.set_rodata(trial_target_tgid=os.getpid())
            obj.load()
            obj.program("trial_round_trip").attach()
            records = []
            with RingBuffer(obj.map("trial_ringbuf"), records.append) as ring:
                for _ in range(calls):
                    os.getppid()
                ring.poll(timeout_ms=100)
            counted = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                       for k, v in obj.map("trial_counts").items()}
    except BpfError as error:
        return Trial.refused(error)
    if len(records) == calls and counted.get(os.getpid()) == calls:
        return Trial(True, f"{calls} events through a ring buffer and a hash map")
    return Trial(False, f"expected {calls} events, got {len(records)} records and counts {counted}")


def trial_fentry(functions):
    """{function: Trial} for fentry on each function, with as few object loads as possible.

    All targets are loaded together in one object (one kernel BTF parse); only if
    that fails is each tried alone, to find which ones the kernel refuses.
    """
    functions = list(dict.fromkeys(functions))
    results = {}
    for start in range(0, len(functions), FENTRY_SLOTS):
        chunk = functions[start : start + FENTRY_SLOTS]
        together = _fentry_batch(chunk)
        if together.ok or len(chunk) == 1:
            results.update({function: together for function in chunk})
            continue
        if together.detail == "EPERM":
            # The kernel refuses the program type itself: trying each function again tells nothing new.
            results.update({function: together for function in chunk})
            continue
        for function in chunk:
            results[function] = _fentry_batch([function])
    return results


def _fentry_batch(functions):
    slots = [f"trial_fentry_{index}" for index in range(len(functions))]
    try:
        with BpfObject(object_path("feature_probe")) as obj:
            obj.only(*slots)
            for slot, function in zip(slots, functions):
                obj.program(slot).set_attach_target(function)
            obj.load()
            for slot in slots:
                obj.program(slot).attach_trace()
            return Trial(True, "load and attach succeeded")
    except (BpfLoadError, BpfAttachError) as error:
        return Trial.refused(error)
    except BpfError as error:
        return Trial(False, str(error))

"""Kernel stacks as a reader wants them: the kernel's path, without the tracer's own frames.

A stack taken in one of our BPF programs starts with the program itself
("bpf_prog_<tag>_<program>") and, for fentry/fexit, the trampoline that called it
("bpf_trampoline_<id>"), which stands where the traced function's frame would be;
kprobes add ftrace or kretprobe trampolines and dispatchers. None of that is the I/O
path being judged. Every place that decodes stacks (record, validate, the flame graph
of any session, old ones included) goes through `kernel_frames`, so the flame graph,
the folded output, the report and validate's evidence show the same frames.
"""
import re
from typing import Iterable, List, Mapping, Optional

# JIT-ed programs are named bpf_prog_<hex tag>_<program name> in kallsyms.
BPF_PROGRAM = re.compile(r"^bpf_prog_[0-9a-f]+_(?P<program>\w+)$")
TRACER_PREFIXES = ("bpf_trampoline_", "__bpf_prog_enter", "__bpf_prog_exit", "bpf_trace_run", "__bpf_trace_run")
TRACER_FUNCTIONS = frozenset({
    # ftrace-based kprobes and fentry on kernels without direct calls
    "ftrace_trampoline", "ftrace_caller", "ftrace_regs_caller", "ftrace_call", "ftrace_regs_call", "ftrace_stub",
    "ftrace_ops_list_func", "arch_ftrace_ops_list_func", "kprobe_ftrace_handler",
    # int3 kprobes, kretprobes and their dispatch into BPF
    "kprobe_int3_handler", "kprobe_dispatcher", "kretprobe_dispatcher", "kprobe_perf_func", "kretprobe_perf_func",
    "trace_call_bpf", "kretprobe_trampoline", "__kretprobe_trampoline", "kretprobe_trampoline_handler",
    "__kretprobe_trampoline_handler", "arch_rethook_trampoline", "arch_rethook_trampoline_callback",
    "rethook_trampoline_handler",
})


def is_tracer_frame(frame: str) -> bool:
    return bool(BPF_PROGRAM.match(frame)) or frame.startswith(TRACER_PREFIXES) or frame in TRACER_FUNCTIONS


def kernel_frames(frames: Iterable[str], hooked: Optional[Mapping[str, str]] = None) -> List[str]:
    """Leaf-first frames with the tracer's own frames left out.

    hooked: {program name: kernel function it is attached to}. A program frame whose program
    is known there becomes that function (the trampoline hides the traced function's own
    frame, so this puts filemap_read back at the leaf); unknown programs are left out.
    """
    hooked = hooked or {}
    out = []
    for frame in frames:
        program = BPF_PROGRAM.match(frame)
        if program and program.group("program") in hooked:
            function = hooked[program.group("program")]
            if not out or out[-1] != function:
                out.append(function)
        elif not is_tracer_frame(frame):
            out.append(frame)
    return out

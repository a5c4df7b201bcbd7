"""What a 4 KiB pread costs with do-nothing programs on the syscall tracepoints, one alternating run.

    .venv/bin/python benchmarks/hook_floor.py            # here (the host: no fentry, no kprobes)
    dmabuf-top vm -- .venv/bin/python benchmarks/hook_floor.py

Where neither fentry nor kprobes exist (this project's CI host), the raw
sys_enter/sys_exit tracepoints are the only hooks that see a read() at all.
This prints the pread throughput ratio with an empty program (probes/hook_floor.bpf.c)
on sys_exit alone, on sys_enter alone, and on both, against none: the ceiling
any tracer of read() can reach on such a kernel, before its program does anything.
Then the same hooks with the least a per-call tracer can do ("least tracer": find the
thread's record and time the call, add the copy where fexit/filemap_read exists): a
ceiling for any tracer that attributes each call. Compare with overhead.py's targets
(>= 0.97 on the host, >= 0.90 in the guest).
"""
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import PASS_CALLS, PREAD, ROUNDS, SETTLE_S, HookFloorPrograms, Pread, quartiles, scratch_dir, timed_pass  # noqa: E402

HOOK_SETS = {
    "none": (),
    "sys_exit only": ("floor_syscall_exit_btf",),
    "sys_enter only": ("floor_syscall_enter_btf",),
    "both": ("floor_syscall_enter_btf", "floor_syscall_exit_btf"),
    "least tracer": ("least_syscall_enter", "least_syscall_exit"),
}
COPY_HOOKS = {"both": "floor_copy_filemap_read", "least tracer": "least_copy_filemap_read"}


def main():
    in_guest = os.path.ismount("/mnt/scratch") and os.path.exists("/dev/udmabuf")
    where = "guest" if in_guest else "host"
    from dmabuf_top import features

    copy_hook = features.detect().features.get("fentry")
    hook_sets = {name: programs + ((COPY_HOOKS[name],) if copy_hook and copy_hook.available and name in COPY_HOOKS
                                   else ()) for name, programs in HOOK_SETS.items()}
    rounds, calls = ROUNDS[where], PASS_CALLS[where]["pread"]
    src = scratch_dir() / "hook-floor-src.bin"
    src.write_bytes(os.urandom(256 * PREAD))
    results = {name: [] for name in hook_sets}
    names = list(hook_sets)
    loaded = {}
    workload = Pread(src)
    try:
        loaded = {name: HookFloorPrograms(programs) for name, programs in hook_sets.items() if programs}
        timed_pass(workload, calls, SETTLE_S[where])
        for round_ in range(rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in (order if round_ % 2 == 0 else order[::-1]):
                if name in loaded:
                    loaded[name].reattach()
                results[name].append(timed_pass(workload, calls, SETTLE_S[where]))
                if name in loaded:
                    loaded[name].detach()
    finally:
        workload.close()
        for programs in loaded.values():
            programs.close()
        src.unlink(missing_ok=True)
    print(f"[{where}] kernel {os.uname().release}: 4 KiB pread, {rounds} paired rounds of {calls} calls, "
          "do-nothing tp_btf programs on the raw syscall tracepoints; ratio = median over rounds of "
          "none / this set in the same round (interquartile range)")
    for name, passes in results.items():
        ns = statistics.median(p.wall_ns / p.calls for p in passes)
        median, low, high = quartiles([u.wall_ns / p.wall_ns for u, p in zip(results["none"], passes)])
        extra = "   (+ fexit/filemap_read)" if COPY_HOOKS.get(name) in hook_sets[name] else ""
        print(f"[{where}]   {name:<16}{ns:>9.0f} ns/call   ratio {median:.3f} ({low:.3f}..{high:.3f}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

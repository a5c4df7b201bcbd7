"""What a 4 KiB pread costs with do-nothing programs on the syscall tracepoints, one alternating run.

    .venv/bin/python benchmarks/hook_floor.py            # here (the host: no fentry, no kprobes)
    dmabuf-top vm -- .venv/bin/python benchmarks/hook_floor.py

Where neither fentry nor kprobes exist (this project's CI host), the raw
sys_enter/sys_exit tracepoints are the only hooks that see a read() at all.
This prints the pread throughput ratio with an empty program (probes/hook_floor.bpf.c)
on sys_exit alone, on sys_enter alone, and on both, against none: the ceiling
any tracer of read() can reach on such a kernel, before its program does anything.
Compare with overhead.py's target (>= 0.97 on the host).
"""
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import PREAD, SETTLE_S, pread_pass, scratch_dir  # noqa: E402

HOOK_SETS = {
    "none": (),
    "sys_exit only": ("floor_syscall_exit_btf",),
    "sys_enter only": ("floor_syscall_enter_btf",),
    "both": ("floor_syscall_enter_btf", "floor_syscall_exit_btf"),
}


class EmptyPrograms:
    def __init__(self, names):
        self.names = names

    def __enter__(self):
        from dmabuf_top.bpf import BpfObject
        from dmabuf_top.probes import object_path

        self._obj = BpfObject(object_path("hook_floor"))
        self._obj.only(*self.names).load()
        for name in self.names:
            self._obj.program(name).attach()
        return self

    def __exit__(self, *exc):
        self._obj.close()


def main():
    in_guest = os.path.ismount("/mnt/scratch") and os.path.exists("/dev/udmabuf")
    where = "guest" if in_guest else "host"
    rounds, calls = (9, 4000) if in_guest else (9, 20000)
    src = scratch_dir() / "hook-floor-src.bin"
    src.write_bytes(os.urandom(256 * PREAD))
    results = {name: [] for name in HOOK_SETS}
    names = list(HOOK_SETS)
    try:
        pread_pass(src, calls, SETTLE_S[where])
        for round_ in range(rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in (order if round_ % 2 == 0 else order[::-1]):
                if HOOK_SETS[name]:
                    with EmptyPrograms(HOOK_SETS[name]):
                        results[name].append(pread_pass(src, calls, SETTLE_S[where]))
                else:
                    results[name].append(pread_pass(src, calls, SETTLE_S[where]))
    finally:
        src.unlink(missing_ok=True)
    per_call = {name: statistics.median(p.wall_ns / p.calls for p in passes) for name, passes in results.items()}
    print(f"[{where}] kernel {os.uname().release}: 4 KiB pread, {rounds} rounds of {calls} calls, "
          "do-nothing tp_btf programs on the raw syscall tracepoints")
    for name, ns in per_call.items():
        print(f"[{where}]   {name:<16}{ns:>9.0f} ns/call   ratio {per_call['none'] / ns:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

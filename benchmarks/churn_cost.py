"""The added cost per dma-buf created with the lifecycle probe attached (with and without allocation stacks).

    dmabuf-top vm --icount -- .venv/bin/python benchmarks/churn_cost.py     # in the lab (real dma-bufs)

churn_cost.c allocates one page from the system heap, names it and closes it, in a loop timed by its own
thread's CPU clock (the minimum over rounds). It runs untraced, with probes/buffer_lifecycle.bpf.o loaded
alone (every hook this kernel allows, recording into its ring, which a thread here drains as `record` does),
and the same with the kernel and user stacks taken at each export, the build-id user stack walked at every
export ("no reuse": reuse_user_stacks off, as before December 2026) and once per distinct raw user stack (the
default: a repeat finds its build-id stack by its raw one). Modes alternate over several passes and
each mode's figure is its minimum; under `--icount` a guest nanosecond is one guest instruction, so the
figures are instructions per buffer and repeat across boots. Prints each mode and the added cost per buffer.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmabuf_top.bpf import BpfAttachError, BpfLoadError, BpfObject, RingBuffer  # noqa: E402
from dmabuf_top.kernelfs import tracefs_root  # noqa: E402
from dmabuf_top.probes import object_path  # noqa: E402
from dmabuf_top.probes.hooks import LIFECYCLE_OBJECT, programs  # noqa: E402

MODES = ("untraced", "lifecycle", "lifecycle + stacks, no reuse", "lifecycle + stacks")


class LifecycleProbe:
    """buffer_lifecycle.bpf.o alone, recording, with every program this kernel takes (the export tracepoint,
    else its fexit fallback); a thread drains its ring."""

    def __init__(self, stacks, reuse=True):
        tracefs = tracefs_root()
        wanted = [p for _, p in programs() if p.object == LIFECYCLE_OBJECT and not p.lacks_tracepoint(tracefs)]
        names = {p.name for p in wanted}
        wanted = [p for p in wanted if not (p.fallback_for and p.fallback_for in names)]
        self.live = []
        for _ in range(len(wanted) + 1):
            self.obj = BpfObject(object_path(LIFECYCLE_OBJECT))
            self.obj.set_rodata(record_events=True, collect_stacks=stacks, ignore_tgid=os.getpid(),
                                reuse_user_stacks=reuse)
            self.obj.only(*[p.name for p in wanted])
            try:
                self.obj.load()
                for program in wanted:
                    self.obj.program(program.name).attach()
                self.live = [p.name for p in wanted]
                break
            except (BpfLoadError, BpfAttachError) as error:  # refused here: its fallback (if any) instead
                self.obj.close()
                wanted = [p for p in wanted if p.name != error.program]
                wanted += [p for _, p in programs() if p.fallback_for == error.program]
        self.records = 0
        self._ring = RingBuffer(self.obj.map("records"), self._count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _count(self, _raw):
        self.records += 1

    def _drain(self):
        while not self._stop.is_set():
            self._ring.poll(50)

    def close(self):
        self._stop.set()
        self._thread.join()
        self._ring.close()
        self.obj.close()


def run_helper(binary, rounds, buffers):
    out = subprocess.run([binary, str(rounds), str(buffers)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3, help="alternations of the modes")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run of churn_cost (its minimum)")
    parser.add_argument("--buffers", type=int, default=2000, help="buffers per round")
    args = parser.parse_args()
    if not os.path.exists("/dev/dma_heap/system"):
        sys.exit("churn_cost: no /dev/dma_heap/system here: run it in the lab (dmabuf-top vm --icount -- ...)")
    with tempfile.TemporaryDirectory() as scratch:
        binary = os.path.join(scratch, "churn_cost")
        subprocess.run(["cc", "-O2", "-o", binary, str(ROOT / "benchmarks" / "churn_cost.c")], check=True)
        best = {mode: None for mode in MODES}
        hooks = {}
        for index in range(args.passes):
            turn = index % len(MODES)
            for mode in MODES[turn:] + MODES[:turn]:  # a rotating order
                probe = None if mode == "untraced" else LifecycleProbe(stacks="stacks" in mode,
                                                                        reuse="no reuse" not in mode)
                try:
                    figure = run_helper(binary, args.rounds, args.buffers)
                finally:
                    if probe is not None:
                        hooks[mode] = probe.live
                        probe.close()
                best[mode] = figure if best[mode] is None else min(best[mode], figure)
    for mode in MODES:
        print(f"{mode:30s} {best[mode]:10.1f} ns per buffer (allocate, name, close)"
              + (f"  hooks: {', '.join(hooks[mode])}" if mode in hooks else ""))
    base = best["untraced"]
    for mode in MODES[1:]:
        print(f"added by {mode}: {best[mode] - base:.1f} ns per buffer ({best[mode] / base - 1:+.1%})")


if __name__ == "__main__":
    main()

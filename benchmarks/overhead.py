"""Tracing overhead: throughput with the I/O path tracer attached vs not, in one alternating run.

    .venv/bin/python benchmarks/overhead.py            # host, then the lab guest (dmabuf-top vm)
    .venv/bin/python benchmarks/overhead.py --here     # only where it runs (the guest uses this)

Workloads: (a) copy_file_range in 1 MiB chunks between two files on one filesystem,
(b) 4 KiB pread loops on a cached file (Python's os.pread, as a Python tool would).
Each round runs four passes in a rotating order: untraced; traced (the tracer on
every process as `dmabuf-top trace`, the live view and `export` run it: every hook,
no kernel stacks, which none of them shows); "with stacks" (the same plus a kernel
stack at every copy and GUP point, as `record` and `validate` take them for flame
graphs and evidence); and "floor": do-nothing programs (probes/hook_floor.bpf.c) on
exactly the hooks the tracer has live. The floor is what the hooks cost before any
program body runs, so traced - floor is the tracer's own work, and floor - untraced
the attach points' price, which no program body can win back. The target is judged
on "traced"; the price of stacks is printed beside it.

Each pass is timed twice: by the wall clock (the throughput the targets are
about; on a loaded machine it also counts time other processes took) and by
this thread's CPU time (CLOCK_THREAD_CPUTIME_ID: what the calls cost, work in
the kernel included, whoever else runs). Per call: ns per pread, per 1 MiB chunk.
Ratios are medians traced / untraced throughput. Guest timings are emulated
(TCG): only the ratios within one run mean anything.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"host": 0.97, "guest": 0.90}
CHUNK = 1 << 20
PREAD = 4096
MODES = ("untraced", "traced", "floor", "with stacks")
# Each pass starts after a settling time spent making untimed calls of its own kind: attaching or
# detaching programs patches kernel text (and frees programs after RCU grace periods), which the
# emulated guest (TCG) then translates again, and that cost belongs to no mode. The settling is busy,
# not a sleep: in the guest a pass that followed an idle second ran 50% slower now and then whatever
# was attached (untraced passes alone, 12 passes after sleep(1): 11971..18962 ns per pread; after one
# second of spinning: 11603..12903), which made single passes swing more than the tracer costs.
SETTLE_S = {"host": 0.1, "guest": 1.0}


def scratch_dir():
    return Path("/mnt/scratch") if os.path.ismount("/mnt/scratch") else ROOT / "build"


class Pass:
    """One timed pass: calls made, wall and thread-CPU nanoseconds."""

    def __init__(self, calls):
        self.calls = calls
        self._wall = time.perf_counter_ns()
        self._cpu = time.thread_time_ns()

    def stop(self):
        self.wall_ns = time.perf_counter_ns() - self._wall
        self.cpu_ns = time.thread_time_ns() - self._cpu
        return self


def settle(call, slots, step, seconds):
    """Untimed calls of the pass's own kind for `seconds` (see SETTLE_S): busy, never idle."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        call((i % slots) * step)
        i += 1


def copy_file_range_pass(src, dst, size, settle_s):
    fd_in, fd_out = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        settle(lambda offset: os.copy_file_range(fd_in, fd_out, CHUNK, offset, offset), size // CHUNK, CHUNK,
               settle_s)
        os.ftruncate(fd_out, 0)
        timed = Pass(size // CHUNK)
        done = 0
        while done < size:
            done += os.copy_file_range(fd_in, fd_out, CHUNK, done, done)
        return timed.stop()
    finally:
        os.close(fd_in)
        os.close(fd_out)


def pread_pass(src, count, settle_s):
    fd = os.open(src, os.O_RDONLY)
    try:
        settle(lambda offset: os.pread(fd, PREAD, offset), 256, PREAD, settle_s)
        timed = Pass(count)
        for i in range(count):
            os.pread(fd, PREAD, (i % 256) * PREAD)
        return timed.stop()
    finally:
        os.close(fd)


class FloorPrograms:
    """hook_floor.bpf.c's do-nothing program for each of the tracer's live programs, attached alike."""

    def __init__(self, live_programs):
        self.live = list(live_programs)

    def __enter__(self):
        from dmabuf_top.bpf import BpfObject
        from dmabuf_top.probes import object_path

        self._obj = BpfObject(object_path("hook_floor"))
        names = [f"floor_{name}" for name in self.live if f"floor_{name}" in self._obj.programs]
        self._obj.only(*names).load()
        for name in names:
            self._obj.program(name).attach()
        self.attached = names
        return self

    def __exit__(self, *exc):
        self._obj.close()


def live_programs(report):
    """The tracer's live programs here (a short trial attach)."""
    from dmabuf_top.tracing import Tracer, missing_concerns

    with Tracer(report=report, ignore_self=False) as tracer:
        return [name for name, status in tracer.programs.items() if status.live], missing_concerns(tracer.hooks)


def measure(where, rounds, size, preads):
    from dmabuf_top import features
    from dmabuf_top.tracing import Tracer

    report = features.detect()
    live, missing = live_programs(report)
    directory = scratch_dir()
    src, dst = directory / "overhead-src.bin", directory / "overhead-dst.bin"
    with open(src, "wb") as out:
        out.write(os.urandom(size))
    workloads = {
        "copy_file_range 1 MiB": (lambda: copy_file_range_pass(src, dst, size, SETTLE_S[where]), CHUNK),
        "pread 4 KiB": (lambda: pread_pass(src, preads, SETTLE_S[where]), PREAD),
    }
    load_before = os.getloadavg()
    results = {name: {mode: [] for mode in MODES} for name in workloads}
    for name, (run, _bytes_per_call) in workloads.items():
        run()  # warm the page cache and the code paths
        for round_ in range(rounds):
            order = MODES[round_ % len(MODES):] + MODES[:round_ % len(MODES)]
            for mode in (order if round_ % 2 == 0 else tuple(reversed(order))):
                if mode in ("traced", "with stacks"):
                    with Tracer(report=report, ignore_self=False, stacks=mode == "with stacks"):
                        results[name][mode].append(run())
                elif mode == "floor":
                    with FloorPrograms(live):
                        results[name][mode].append(run())
                else:
                    results[name][mode].append(run())
    for path in (src, dst):
        path.unlink(missing_ok=True)
    load_after = os.getloadavg()
    target = TARGETS[where]
    print(f"[{where}] kernel {os.uname().release}, {os.cpu_count()} CPUs, {rounds} rounds, scratch {directory}, "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"[{where}] tracer programs live: {', '.join(live)}")
    print(f"[{where}] hooks not live: {', '.join(sorted(missing)) or 'none'}"
          + (" (copy helpers traced)" if "cpu_copy" not in missing else " (copy helpers NOT traced here)"))
    all_met = True
    for name, runs in results.items():
        per_call = {mode: {clock: statistics.median(getattr(p, f"{clock}_ns") / p.calls for p in runs[mode])
                           for clock in ("wall", "cpu")} for mode in MODES}
        bytes_per_call = workloads[name][1]
        wall, cpu = (lambda mode: per_call[mode]["wall"]), (lambda mode: per_call[mode]["cpu"])
        ratio = wall("untraced") / wall("traced")
        met = ratio >= target
        all_met &= met
        print(f"[{where}] {name}: target >= {target:.2f} (wall-clock throughput ratio): {'met' if met else 'NOT met'}")
        print(f"[{where}]   {'ns per call':<12}{'untraced':>10}{'floor':>10}{'traced':>10}{'w/ stacks':>10}"
              f"{'hooks':>9}{'body':>9}{'stacks':>9}   ratio traced  ratio floor  ratio stacks   untraced MiB/s")
        for clock, of in (("wall", wall), ("cpu", cpu)):
            print(f"[{where}]   {clock:<12}{of('untraced'):>10.0f}{of('floor'):>10.0f}{of('traced'):>10.0f}"
                  f"{of('with stacks'):>10.0f}{of('floor') - of('untraced'):>+9.0f}{of('traced') - of('floor'):>+9.0f}"
                  f"{of('with stacks') - of('traced'):>+9.0f}"
                  f"   {of('untraced') / of('traced'):>12.3f}  {of('untraced') / of('floor'):>11.3f}"
                  f"  {of('untraced') / of('with stacks'):>12.3f}"
                  f"   {bytes_per_call / of('untraced') * 1e9 / 2**20:>14.1f}")
        spread = "  ".join(f"{mode} {min(p.wall_ns / p.calls for p in runs[mode]):.0f}..{max(p.wall_ns / p.calls for p in runs[mode]):.0f}"
                           for mode in MODES)
        print(f"[{where}]   wall ns per call, fastest..slowest pass: {spread}")
        floor_ratio = max(wall("untraced") / wall("floor"), cpu("untraced") / cpu("floor"))
        if floor_ratio < target:
            print(f"[{where}]   the hooks alone, with do-nothing programs, reach only {floor_ratio:.3f} "
                  f"(best of wall and cpu) < {target:.2f}: no program body can meet the target on these hooks")
    print(f"[{where}] hooks = floor - untraced (the attach points' own price); body = traced - floor (the tracer's work); "
          "stacks = with stacks - traced (kernel stacks at copy and GUP points, taken by record and validate); "
          "cpu = this thread's CPU time")
    return all_met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--here", action="store_true", help="measure only where this runs")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    in_guest = os.path.ismount("/mnt/scratch") and os.path.exists("/dev/udmabuf")
    where = "guest" if in_guest else "host"
    heavy = where == "host"
    ok = measure(where, args.rounds or 9, (64 if heavy else 16) << 20, 20000 if heavy else 4000)
    if not args.here and where == "host":
        from dmabuf_top.kernel.lab import run_in_guest

        result = run_in_guest([sys.executable, str(Path(__file__).resolve()), "--here"], timeout=1800, cwd=ROOT,
                              on_output=lambda chunk: sys.stdout.write(chunk.decode(errors="replace")))
        ok = ok and result.exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

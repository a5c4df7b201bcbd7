"""Tracing overhead: throughput with the I/O path tracer attached vs not, in one alternating run.

    .venv/bin/python benchmarks/overhead.py            # host, then the lab guest (dmabuf-top vm)
    .venv/bin/python benchmarks/overhead.py --here     # only where it runs (the guest uses this)

Workloads: (a) copy_file_range in 1 MiB chunks between two files on one filesystem,
(b) 4 KiB pread loops on a cached file. Each round runs an untraced and a traced
pass (order alternating); the ratio is median traced / median untraced throughput.
Each round also runs a pass with do-nothing programs on the same syscall
tracepoints: that "floor" is what attaching there costs before the tracer does
any work, and tells how much of a miss is the tracer's own.
The tracer traces every process, as `dmabuf-top trace` does, with kernel stacks on.
Guest timings are emulated (TCG): only the ratios within one run mean anything.
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


def scratch_dir():
    return Path("/mnt/scratch") if os.path.ismount("/mnt/scratch") else ROOT / "build"


def copy_file_range_pass(src, dst, size):
    fd_in, fd_out = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        done = 0
        while done < size:
            done += os.copy_file_range(fd_in, fd_out, 1 << 20, done, done)
        return size / (time.perf_counter() - started)
    finally:
        os.close(fd_in)
        os.close(fd_out)


def pread_pass(src, count):
    fd = os.open(src, os.O_RDONLY)
    try:
        started = time.perf_counter()
        for i in range(count):
            os.pread(fd, 4096, (i % 256) * 4096)
        return count * 4096 / (time.perf_counter() - started)
    finally:
        os.close(fd)


class EmptyPrograms:
    """Do-nothing BPF programs on the syscall tracepoints the tracer uses: the floor any syscall tracer pays."""

    TRACEPOINTS = ("pread64", "copy_file_range")

    def __enter__(self):
        from dmabuf_top.bpf import BpfObject
        from dmabuf_top.probes import object_path

        self._obj = BpfObject(object_path("feature_probe")).only("trial_tracepoint").load()
        program = self._obj.program("trial_tracepoint")
        for syscall in self.TRACEPOINTS:
            for phase in ("enter", "exit"):
                program.attach_tracepoint("syscalls", f"sys_{phase}_{syscall}")
        return self

    def __exit__(self, *exc):
        self._obj.close()


def measure(where, rounds, size, preads):
    from dmabuf_top import features
    from dmabuf_top.tracing import Tracer, missing_concerns

    report = features.detect()
    directory = scratch_dir()
    src, dst = directory / "overhead-src.bin", directory / "overhead-dst.bin"
    with open(src, "wb") as out:
        out.write(os.urandom(size))
    workloads = {
        "copy_file_range 1 MiB": lambda: copy_file_range_pass(src, dst, size),
        "pread 4 KiB": lambda: pread_pass(src, preads),
    }
    results = {name: {"traced": [], "untraced": [], "floor": []} for name in workloads}
    for name, run in workloads.items():
        run()  # warm the page cache and the code paths
        for round_ in range(rounds):
            for traced in ((False, True) if round_ % 2 == 0 else (True, False)):
                if traced:
                    with Tracer(report=report, ignore_self=False) as tracer:
                        results[name]["traced"].append(run())
                        missing = missing_concerns(tracer.hooks)
                else:
                    results[name]["untraced"].append(run())
            with EmptyPrograms():
                results[name]["floor"].append(run())
    for path in (src, dst):
        path.unlink(missing_ok=True)
    target = TARGETS[where]
    print(f"[{where}] kernel {os.uname().release}, {rounds} rounds, scratch {directory}")
    print(f"[{where}] hooks not live: {', '.join(sorted(missing)) or 'none'}"
          + (" (copy helpers traced)" if "cpu_copy" not in missing else " (copy helpers NOT traced here)"))
    all_met = True
    for name, runs in results.items():
        traced, untraced = statistics.median(runs["traced"]), statistics.median(runs["untraced"])
        ratio = traced / untraced
        met = ratio >= target
        all_met &= met
        floor = statistics.median(runs["floor"]) / untraced
        print(f"[{where}] {name:<22} untraced {untraced / 2**20:9.1f} MiB/s  traced {traced / 2**20:9.1f} MiB/s  "
              f"ratio {ratio:.3f}  target >= {target:.2f}: {'met' if met else 'NOT met'}  "
              f"(floor: empty programs on the same tracepoints give {floor:.3f})")
    return all_met


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--here", action="store_true", help="measure only where this runs")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    in_guest = os.path.ismount("/mnt/scratch") and os.path.exists("/dev/udmabuf")
    where = "guest" if in_guest else "host"
    heavy = where == "host"
    ok = measure(where, args.rounds or (7 if heavy else 5), (64 if heavy else 16) << 20, 20000 if heavy else 4000)
    if not args.here and where == "host":
        from dmabuf_top.kernel.lab import run_in_guest

        result = run_in_guest([sys.executable, str(Path(__file__).resolve()), "--here"], timeout=900, cwd=ROOT,
                              on_output=lambda chunk: sys.stdout.write(chunk.decode(errors="replace")))
        ok = ok and result.exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Tracing overhead: throughput with the I/O path tracer attached vs not, in one alternating run.

    .venv/bin/python benchmarks/overhead.py            # host, then the lab guest (dmabuf-top vm)
    .venv/bin/python benchmarks/overhead.py --here     # only where it runs (the guest uses this)

Workloads: (a) copy_file_range in 1 MiB chunks between two files on one filesystem,
(b) 4 KiB pread loops on a cached file (Python's os.pread, as a Python tool would).
Four modes: untraced; traced (the tracer on every process as `dmabuf-top trace`, the
live view and `export` run it: every hook, no kernel stacks, which none of them shows);
"with stacks" (the same plus a kernel stack at every copy and GUP point, as `record` and
`validate` take them for flame graphs and evidence); and "floor": do-nothing programs
(probes/hook_floor.bpf.c) on exactly the hooks the tracer has live. The floor is what
the hooks cost before any program body runs, so traced - floor is the tracer's own
work, and floor - untraced the attach points' price, which no program body can win back.
The target is judged on "traced"; the price of stacks is printed beside it.

Paired and short: every mode is loaded once, and a round runs one short pass of each
mode in a rotating order, switching modes by detaching and attaching the loaded
programs. Each mode's ratio is the median over rounds of untraced / mode in the same
round. Why: these machines change speed by a third for seconds at a time (a pure
Python loop on the CI host, 30 runs of ~0.1 s: 72..105 ms, in phases), so passes a
second apart, as one long pass per mode gave them, differ more than the tracer costs;
two passes milliseconds apart mostly share a phase. The interquartile range of the
paired ratios is printed: it says how far to trust the median.

Each pass starts after a settling time spent making untimed calls of its own kind, and
is timed by the wall clock (the throughput the targets are about) and by this thread's
CPU time. Guest timings are emulated (TCG): only the ratios within one run mean anything.

--exact: the lab's instruction-counting clock instead of pairing (issue 17's targets).

    .venv/bin/python benchmarks/overhead.py --exact        # boots the lab twice under --icount
    dmabuf-top vm --icount -- .venv/bin/python benchmarks/overhead.py --exact --here

Under `dmabuf-top vm --icount` (QEMU -icount shift=0, one vCPU) one guest nanosecond is one guest
instruction, so a C loop timing itself with its thread's CPU clock (benchmarks/io_cost.c, one
process per workload, minimum of rounds) gives instructions per call that repeat across boots.
Each mode (untraced, floor, traced, with stacks) is attached in turn and every workload runs under
it; each target is judged on "traced" as +% over untraced. From the host, the lab is booted twice
(--boots) and the figures of the two boots must agree within 0.5 %.

--exact --ci-hooks: the CI host's hook set on the lab kernel. fentry, fexit and kprobes are withheld
(dmabuf_top.features.WITHHOLD_ENV), so the tracer plans as on a kernel that refuses them: the syscall
tracepoints, the AIO syscall fallback, the page-cache and io_uring tracepoints. Each workload is judged on
issue 17's host target, (traced - untraced) <= 1.15 x (floor - untraced).

    .venv/bin/python benchmarks/overhead.py --exact --ci-hooks
"""
import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"host": 0.97, "guest": 0.90}
# Issue 17's target for a host with the syscall tracepoints only (the CI host): the tracer's added cost at
# most this many times the do-nothing floor's, per paired round (the paired ratio targets above are out of
# reach of any program on those hooks: hook_floor.py).
HOST_FLOOR_FACTOR = 1.15
CHUNK = 1 << 20
PREAD = 4096
MODES = ("untraced", "traced", "floor", "with stacks")
# Each pass starts after a settling time spent making untimed calls of its own kind: attaching or
# detaching programs patches kernel text (and frees programs after RCU grace periods), which the
# emulated guest (TCG) then translates again, and that cost belongs to no mode. The settling is busy,
# not a sleep: in the guest a pass that followed an idle second ran 50% slower now and then.
SETTLE_S = {"host": 0.02, "guest": 1.0}
# Calls per timed pass: a few milliseconds each, so that the passes of one round share the machine's speed.
PASS_CALLS = {"host": {"pread": 3000, "copy_file_range": 8}, "guest": {"pread": 1500, "copy_file_range": 4}}
ROUNDS = {"host": 101, "guest": 25}


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


def settle(call, seconds):
    """Untimed calls of the pass's own kind for `seconds` (see SETTLE_S): busy, never idle."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        call()


class CopyFileRange:
    def __init__(self, src, dst, size):
        self.fd_in = os.open(src, os.O_RDONLY)
        self.fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.chunks = size // CHUNK
        self.next = 0

    def call(self):
        offset = (self.next % self.chunks) * CHUNK
        self.next += 1
        return os.copy_file_range(self.fd_in, self.fd_out, CHUNK, offset, offset)

    def close(self):
        os.close(self.fd_in)
        os.close(self.fd_out)


class Pread:
    def __init__(self, src):
        self.fd = os.open(src, os.O_RDONLY)
        self.next = 0

    def call(self):
        offset = (self.next % 256) * PREAD
        self.next += 1
        return os.pread(self.fd, PREAD, offset)

    def close(self):
        os.close(self.fd)


def timed_pass(workload, calls, settle_s):
    settle(workload.call, settle_s)
    timed = Pass(calls)
    for _ in range(calls):
        workload.call()
    return timed.stop()


class HookFloorPrograms:
    """Programs of hook_floor.bpf.c, loaded once and attached only while their passes run."""

    def __init__(self, names):
        from dmabuf_top.bpf import BpfObject
        from dmabuf_top.probes import object_path

        self._obj = BpfObject(object_path("hook_floor"))
        self.names = [name for name in names if name in self._obj.programs]
        self._obj.only(*self.names).load()

    def reattach(self):
        for name in self.names:
            self._obj.program(name).attach()

    def detach(self):
        self._obj.detach_all()

    def close(self):
        self._obj.close()


class Modes:
    """Every mode loaded once; switch() leaves exactly one of them attached (none for untraced)."""

    def __init__(self, report, stacks=True, bounds=()):
        from dmabuf_top.probes.hooks import missing_concerns
        from dmabuf_top.probes.tracer import Tracer

        self._loaded = {}
        try:
            self._loaded["traced"] = Tracer(report=report, ignore_self=False, stacks=False)
            if stacks:
                self._loaded["with stacks"] = Tracer(report=report, ignore_self=False, stacks=True)
            traced = self._loaded["traced"]
            self.live = [name for name, status in traced.programs.items() if status.live]
            self.attached = traced.attached_programs
            self.missing = missing_concerns(traced.hooks)
            # hook_floor.bpf.c's do-nothing twin of each live program, on the same hook
            self._loaded["floor"] = HookFloorPrograms(f"floor_{name}" for name in traced.attached_programs)
            self.floor_programs = self._loaded["floor"].names
            # the bounds (CI_BOUNDS): the floor with the syscall twins swapped for the least programs
            self.bounds = [mode for mode in bounds if set(CI_BOUNDS[mode]) <= set(self.floor_programs)]
            for mode in self.bounds:
                self._loaded[mode] = HookFloorPrograms(CI_BOUNDS[mode].get(name, name) for name in self.floor_programs)
        except BaseException:
            self.close()
            raise
        for loaded in self._loaded.values():
            loaded.detach()
        self.current = "untraced"

    def switch(self, mode):
        if mode == self.current:
            return
        if self.current == "evidence":
            self._evidence.close()
        elif self.current != "untraced":
            self._loaded[self.current].detach()
        if mode == "evidence":  # the block-layer programs of validate and record, for every process
            from dmabuf_top.probes.dma_evidence import DmaEvidence

            self._evidence = DmaEvidence(record_all=True)
        elif mode != "untraced":
            self._loaded[mode].reattach()
        self.current = mode

    def close(self):
        for loaded in self._loaded.values():
            loaded.close()


def verdict_of(low, high, target):
    """'met' only when three rounds in four reach the target, 'NOT met' when three in four miss it;
    between those the noise is larger than the answer, and the benchmark says so."""
    if low >= target:
        return "met"
    if high < target:
        return "NOT met"
    return "not shown either way (the interquartile range spans the target: more rounds, or a quieter machine)"


def quartiles(values):
    ordered = sorted(values)
    return statistics.median(ordered), ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]


def measure(where, rounds, size):
    from dmabuf_top import features

    report = features.detect()
    directory = scratch_dir()
    src, dst = directory / "overhead-src.bin", directory / "overhead-dst.bin"
    with open(src, "wb") as out:
        out.write(os.urandom(size))
    workloads = {
        "copy_file_range 1 MiB": (CopyFileRange(src, dst, size), PASS_CALLS[where]["copy_file_range"], CHUNK),
        "pread 4 KiB": (Pread(src), PASS_CALLS[where]["pread"], PREAD),
    }
    load_before = os.getloadavg()
    results = {name: {mode: [] for mode in MODES} for name in workloads}
    modes = Modes(report)
    try:
        for name, (workload, calls, _bytes) in workloads.items():
            timed_pass(workload, calls, SETTLE_S[where])  # warm the page cache and the code paths
            for round_ in range(rounds):
                order = MODES[round_ % len(MODES):] + MODES[:round_ % len(MODES)]
                for mode in (order if round_ % 2 == 0 else tuple(reversed(order))):
                    modes.switch(mode)
                    results[name][mode].append(timed_pass(workload, calls, SETTLE_S[where]))
            modes.switch("untraced")
    finally:
        modes.close()
        for workload, _calls, _bytes in workloads.values():
            workload.close()
        for path in (src, dst):
            path.unlink(missing_ok=True)
    load_after = os.getloadavg()
    target = TARGETS[where]
    print(f"[{where}] kernel {os.uname().release}, {os.cpu_count()} CPUs, {rounds} rounds, scratch {directory}, "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"[{where}] tracer programs live: {', '.join(modes.live)}")
    print(f"[{where}] hooks not live: {', '.join(sorted(modes.missing)) or 'none'}"
          + (" (copy helpers traced)" if "cpu_copy" not in modes.missing else " (copy helpers NOT traced here)"))
    all_met = True
    for name, runs in results.items():
        per_call = {mode: {clock: statistics.median(getattr(p, f"{clock}_ns") / p.calls for p in runs[mode])
                           for clock in ("wall", "cpu")} for mode in MODES}
        paired = {mode: quartiles([u.wall_ns / m.wall_ns for u, m in zip(runs["untraced"], runs[mode])])
                  for mode in MODES}
        bytes_per_call = workloads[name][2]
        ratio, low, high = paired["traced"]
        verdict = verdict_of(low, high, target)
        if where == "host":
            # per round: the traced pass's added ns per call beyond HOST_FLOOR_FACTOR x the floor pass's
            excess = quartiles([((t.wall_ns - u.wall_ns) - HOST_FLOOR_FACTOR * (f.wall_ns - u.wall_ns)) / u.calls
                                for u, f, t in zip(runs["untraced"], runs["floor"], runs["traced"])])
            floor_verdict = verdict_of(-excess[2], -excess[1], 0)
            all_met &= floor_verdict == "met"
            print(f"[{where}] {name}: traced's added cost beyond {HOST_FLOOR_FACTOR}x the floor's, median of "
                  f"{rounds} paired rounds {excess[0]:+.0f} ns per call (interquartile {excess[1]:+.0f}.."
                  f"{excess[2]:+.0f}); target <= 0: {floor_verdict}")
        else:
            all_met &= verdict == "met"
        print(f"[{where}] {name}: traced / untraced throughput, median of {rounds} paired rounds "
              f"{ratio:.3f} (interquartile {low:.3f}..{high:.3f}); target >= {target:.2f}: {verdict}"
              + (" (not judged here: issue 17)" if where == "host" else ""))
        print(f"[{where}]   paired ratios: floor {paired['floor'][0]:.3f} "
              f"({paired['floor'][1]:.3f}..{paired['floor'][2]:.3f}), "
              f"with stacks {paired['with stacks'][0]:.3f} "
              f"({paired['with stacks'][1]:.3f}..{paired['with stacks'][2]:.3f})")
        wall, cpu = ((lambda mode, per_call=per_call: per_call[mode]["wall"]),
                     (lambda mode, per_call=per_call: per_call[mode]["cpu"]))
        print(f"[{where}]   {'ns per call':<12}{'untraced':>10}{'floor':>10}{'traced':>10}{'w/ stacks':>10}"
              f"{'hooks':>9}{'body':>9}{'stacks':>9}   untraced MiB/s   (medians of all passes)")
        for clock, of in (("wall", wall), ("cpu", cpu)):
            print(f"[{where}]   {clock:<12}{of('untraced'):>10.0f}{of('floor'):>10.0f}{of('traced'):>10.0f}"
                  f"{of('with stacks'):>10.0f}{of('floor') - of('untraced'):>+9.0f}{of('traced') - of('floor'):>+9.0f}"
                  f"{of('with stacks') - of('traced'):>+9.0f}"
                  f"   {bytes_per_call / of('untraced') * 1e9 / 2**20:>14.1f}")
        spread = "  ".join(f"{mode} {min(p.wall_ns / p.calls for p in runs[mode]):.0f}"
                           f"..{max(p.wall_ns / p.calls for p in runs[mode]):.0f}"
                           for mode in MODES)
        print(f"[{where}]   wall ns per call, fastest..slowest pass: {spread}")
        if paired["floor"][0] < target:
            print(f"[{where}]   the hooks alone, with do-nothing programs, reach only {paired['floor'][0]:.3f} "
                  f"< {target:.2f}: no program body can meet the target on these hooks")
    print(f"[{where}] hooks = floor - untraced (the attach points' own price); "
          "body = traced - floor (the tracer's work); "
          "stacks = with stacks - traced (kernel stacks at copy and GUP points, taken by record and validate); "
          "cpu = this thread's CPU time")
    return all_met


# --exact: workloads of benchmarks/io_cost.c, (rounds, calls) per run, and issue 17's target for each:
# the traced mode's cost at most this many % over untraced.
EXACT_WORKLOADS = {
    "getppid": ("getppid", 5, 20000, 1.0),
    "pread 4 KiB file -> anonymous": ("pread-anon", 5, 4000, 20.0),
    "pread 4 KiB file -> memfd map": ("pread-memfd", 5, 4000, 35.0),
    "pread 4 KiB file -> dma-buf map": ("pread-dmabuf", 5, 4000, 35.0),
    "pread 1 MiB file -> dma-buf map": ("read1m-dmabuf", 5, 30, 1.0),
    # Not in the list: the CI host's other paired workload (measure() above), copy_file_range between
    # ordinary files, a call of no interest: at 4 KiB held to the 4 KiB read's target, at 1 MiB to the 1 MiB's
    # (its destination's pages dirtied again and again: writeback_held).
    "copy_file_range 4 KiB file -> file": ("copy4k-file", 5, 4000, 20.0),
    "copy_file_range 1 MiB file -> file": ("copy1m-file", 20, 10, 1.0),
}
EXACT_MODES = ("untraced", "floor", "traced", "with stacks")
# The block-layer hooks of validate and record (probes/dma_evidence.bpf.c) run per bio, not per call: stated
# on a workload that makes block I/O, with them attached alone ("evidence") and with the tracer.
EVIDENCE_WORKLOAD = ("pread 1 MiB O_DIRECT -> anonymous", "dread1m-anon", 5, 20)
EVIDENCE_MODES = ("untraced", "traced", "evidence")
EXACT_FILE_BYTES = 4 << 20  # io_cost.c: read1m-dmabuf cycles over 4 MiB
EXACT_AGREEMENT = 0.005  # two boots' figures agree within 0.5 %
EXACT_LINE = "exact:"  # the machine-readable lines the host compares between boots
# --ci-hooks: the attach kinds the CI host refuses (doctor there: fentry EPERM, no kprobes), withheld in the lab.
CI_HOST_WITHHELD = "fentry,kprobe"
# --ci-hooks measures no stacks (taken at fentry points only) and no block-layer hooks.
CI_MODES = ("untraced", "floor", "traced")
# ... and four bounds (hook_floor.bpf.c): the floor with its syscall programs swapped for the least one design of
# tracer on these hooks must do. "least check": a read or write of a process of no interest leaves after its
# number's bit and its process's bit (the tgid by a helper call). "least cpu check": a per-CPU flag the tracer
# would keep at context switches (the keeping not counted), tested before the number, so a process of no interest
# leaves after one load. "least attribution": a read or write names its file (fd -> inode) at exit, nothing else.
# "least count": a read or write adds its return to a per-CPU sum at exit, nothing else: sys_exit is the only hook
# here that sees what a call moved, so any tracer that counts a call's bytes pays this much on it at the least.
# The first three bound their designs, not every conceivable one (a tracer could name a buffer by its address).
CI_BOUNDS = {
    "least check": {"floor_syscall_enter_btf": "least_check_syscall_enter_btf",
                    "floor_syscall_exit_btf": "least_check_syscall_exit_btf"},
    "least cpu check": {"floor_syscall_enter_btf": "least_cpu_check_syscall_enter_btf",
                        "floor_syscall_exit_btf": "least_check_syscall_exit_btf"},
    "least attribution": {"floor_syscall_exit_btf": "least_attribution_syscall_exit_btf"},
    "least count": {"floor_syscall_exit_btf": "least_count_syscall_exit_btf"},
}
# The bounds of the designs that tell a call of no interest apart (the least count tells nothing apart).
CI_TELLING_APART = ("least check", "least cpu check", "least attribution")
# The workloads whose calls are of interest to the tracer: it must count and attribute them. The CI host's
# target (HOST_FLOOR_FACTOR) is issue 17's rule for the host's paired workloads (measure(): an ordinary file
# into anonymous memory, copy_file_range between ordinary files): what the tracer costs OTHER work. A call of
# interest is the tracer's own work: on these hooks it is held to the same targets as in the lab (% over
# untraced, EXACT_WORKLOADS), and its added cost against the floor's is printed beside the least count.
CI_CALLS_OF_INTEREST = ("pread 4 KiB file -> memfd map", "pread 4 KiB file -> dma-buf map",
                        "pread 1 MiB file -> dma-buf map")
assert set(CI_CALLS_OF_INTEREST) <= set(EXACT_WORKLOADS), "CI_CALLS_OF_INTEREST names a workload that is gone"


def build_io_cost(directory):
    """Compile benchmarks/io_cost.c into `directory` (the guest's /tmp: the shared tree is read-only)."""
    program = Path(directory) / "io_cost"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("overhead.py --exact needs a C compiler (cc or gcc) to build benchmarks/io_cost.c")
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(program), str(ROOT / "benchmarks" / "io_cost.c")], check=True)
    return program


def io_cost(program, workload, rounds, calls, data):
    """Instructions (ns under --icount) per call of one io_cost.c workload: the minimum of its rounds."""
    out = subprocess.run([str(program), workload, str(rounds), str(calls), str(data)], check=True,
                         capture_output=True, text=True).stdout
    return float([line for line in out.splitlines() if line.startswith("min ")][0].split()[1])


def percent_over(value, base):
    return (value / base - 1) * 100


WRITEBACK_INTERVAL = Path("/proc/sys/vm/dirty_writeback_centisecs")


@contextlib.contextmanager
def writeback_held():
    """The periodic flusher off while measuring, the files written so far on disk first: copy1m-file dirties
    its destination's pages, and whether the flusher had cleaned them before a run (so the run dirtied them
    afresh) moved a copy's cost by hundreds of instructions between runs of one mode. The few MiB dirtied stay
    far below the thresholds that start writeback of their own."""
    os.sync()
    interval = WRITEBACK_INTERVAL.read_text()
    WRITEBACK_INTERVAL.write_text("0")
    try:
        yield
    finally:
        WRITEBACK_INTERVAL.write_text(interval)


def exact_figures(report, mode_names, stacks, then=None, bounds=()):
    """({workload name: {mode: instructions per call}}, Modes) for every EXACT_WORKLOADS workload under each
    mode in turn; then(program, modes, data), if given, runs before the modes are closed."""
    data = scratch_dir() / "overhead-exact.bin"
    with open(data, "wb") as out:
        out.write(os.urandom(EXACT_FILE_BYTES))
    figures = {name: {} for name in EXACT_WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="overhead-exact-") as build, writeback_held():
        program = build_io_cost(build)
        for _name, (workload, _rounds, calls, _target) in EXACT_WORKLOADS.items():
            io_cost(program, workload, 1, calls, data)  # warm the page cache and the code paths
        modes = Modes(report, stacks=stacks, bounds=bounds)
        try:
            for mode in tuple(mode_names) + tuple(modes.bounds):
                modes.switch(mode)
                for name, (workload, rounds, calls, _target) in EXACT_WORKLOADS.items():
                    figures[name][mode] = io_cost(program, workload, rounds, calls, data)
            if then is not None:
                then(program, modes, data)
            modes.switch("untraced")
        finally:
            modes.close()
            data.unlink(missing_ok=True)
            data.with_name(data.name + ".copy").unlink(missing_ok=True)  # io_cost.c's copy1m-file keeps it
    return figures, modes


def measure_exact(ci_hooks=False):
    """Every workload under every mode; prints the table and the targets; True when all are met.
    ci_hooks: on the CI host's hook set (measure_ci_hooks)."""
    from dmabuf_top import features

    if ci_hooks:
        os.environ[features.WITHHOLD_ENV] = CI_HOST_WITHHELD
        return measure_ci_hooks(features.detect())
    evidence_name, evidence_workload, evidence_rounds, evidence_calls = EVIDENCE_WORKLOAD
    evidence = {}

    def measure_evidence(program, modes, data):
        for mode in EVIDENCE_MODES:
            modes.switch(mode)
            evidence[mode] = io_cost(program, evidence_workload, evidence_rounds, evidence_calls, data)

    figures, modes = exact_figures(features.detect(), EXACT_MODES, stacks=True, then=measure_evidence)
    print(f"[exact] kernel {os.uname().release}, {os.cpu_count()} CPU(s); figures are guest instructions per call "
          "under --icount (thread CPU ns), minimum of rounds, each workload in its own process (io_cost.c)")
    print(f"[exact] tracer programs live: {', '.join(modes.live)}")
    print(f"[exact] hooks not live: {', '.join(sorted(modes.missing)) or 'none'}")
    for name in EXACT_WORKLOADS:
        for mode in EXACT_MODES:
            print(f"{EXACT_LINE} {EXACT_WORKLOADS[name][0]} {mode.replace(' ', '_')} {figures[name][mode]:.1f}")
    for mode in EVIDENCE_MODES:
        print(f"{EXACT_LINE} {evidence_workload} {mode} {evidence[mode]:.1f}")
    header = f"{'workload':<34}{'untraced':>10}{'floor':>10}{'traced':>10}{'w/ stacks':>11}"
    print(f"[exact] {header}{'traced/untr':>13}{'traced/floor':>14}{'stacks/untr':>13}")
    all_met = True
    verdicts = []
    for name, (_workload, _rounds, _calls, target) in EXACT_WORKLOADS.items():
        of = figures[name]
        traced = percent_over(of["traced"], of["untraced"])
        print(f"[exact] {name:<34}{of['untraced']:>10.1f}{of['floor']:>10.1f}{of['traced']:>10.1f}"
              f"{of['with stacks']:>11.1f}{traced:>+12.1f}%{percent_over(of['traced'], of['floor']):>+13.1f}%"
              f"{percent_over(of['with stacks'], of['untraced']):>+12.1f}%")
        met = traced <= target
        all_met &= met
        verdicts.append(f"[exact] target {name}: traced <= +{target:g} % over untraced: "
                        f"{traced:+.1f} % {'met' if met else 'NOT met'}"
                        f" (floor {percent_over(of['floor'], of['untraced']):+.1f} %,"
                        f" record's stacks {percent_over(of['with stacks'], of['untraced']):+.1f} %)")
    print("\n".join(verdicts))
    print(f"[exact] block-layer hooks (dma_evidence.bpf.c, validate and record only), {evidence_name}: untraced "
          f"{evidence['untraced']:.1f}, evidence hooks alone {evidence['evidence']:.1f} "
          f"({percent_over(evidence['evidence'], evidence['untraced']):+.2f} %), traced {evidence['traced']:.1f} "
          f"({percent_over(evidence['traced'], evidence['untraced']):+.2f} %) instructions per call "
          "(the submitting thread's share: completions run in interrupt context)")
    print("[exact] floor = do-nothing programs on the tracer's live hooks; traced = as trace, the live view and "
          "export run it; with stacks = as record and validate run it (kernel stacks at copy and GUP points)")
    return all_met


def measure_ci_hooks(report):
    """The CI host's hook set on the lab kernel: untraced, floor and traced per workload, and the host target
    (traced - untraced) <= HOST_FLOOR_FACTOR x (floor - untraced) for each; True when all are met."""
    figures, modes = exact_figures(report, CI_MODES, stacks=False, bounds=tuple(CI_BOUNDS))
    print(f"[ci-hooks] kernel {os.uname().release}, {os.cpu_count()} CPU(s), {CI_HOST_WITHHELD} withheld: the CI "
          "host's hook set on the lab kernel; guest instructions per call under --icount, minimum of rounds")
    print(f"[ci-hooks] tracer programs live: {', '.join(modes.live)}")
    print(f"[ci-hooks] floor programs: {', '.join(modes.floor_programs)}")
    twinless = [name for name in modes.attached if f"floor_{name}" not in modes.floor_programs]
    print(f"[ci-hooks] live programs without a floor twin (their hooks do not fire in these workloads): "
          f"{', '.join(twinless) or 'none'}")
    print(f"[ci-hooks] hooks not live: {', '.join(sorted(modes.missing)) or 'none'}")
    if len(modes.bounds) < len(CI_BOUNDS):
        print("[ci-hooks] bounds not measured: the tracer's syscall programs are not the tp_btf ones here")
    for name in EXACT_WORKLOADS:
        for mode in CI_MODES + tuple(modes.bounds):
            print(f"{EXACT_LINE} {EXACT_WORKLOADS[name][0]} ci_{mode.replace(' ', '_')} {figures[name][mode]:.1f}")
    print(f"[ci-hooks] {'workload':<34}{'untraced':>10}{'floor':>10}{'traced':>10}{'hooks':>9}{'body':>9}"
          f"{'added/floor':>13}" + "".join(f"{mode:>19}" for mode in modes.bounds))
    all_met = True
    verdicts = []
    for name in EXACT_WORKLOADS:
        of = figures[name]
        hooks, added = of["floor"] - of["untraced"], of["traced"] - of["untraced"]
        ratio = ratio_to_floor(of["traced"], of)
        print(f"[ci-hooks] {name:<34}{of['untraced']:>10.1f}{of['floor']:>10.1f}{of['traced']:>10.1f}"
              f"{hooks:>+9.1f}{of['traced'] - of['floor']:>+9.1f}{ratio:>12.3f}x"
              + "".join(f"{ratio_to_floor(of[mode], of):>18.3f}x" for mode in modes.bounds))
        if name in CI_CALLS_OF_INTEREST:
            target = EXACT_WORKLOADS[name][3]
            over = percent_over(of["traced"], of["untraced"])
            met = over <= target
            verdicts.append(f"[ci-hooks] target {name} (a call of interest): traced <= +{target:g} % over untraced: "
                            f"{over:+.1f} % {'met' if met else 'NOT met'}; added / floor's {ratio:.3f}x"
                            f"{bound_note(name, of, modes.bounds)}")
        else:
            met = added <= HOST_FLOOR_FACTOR * hooks
            verdicts.append(f"[ci-hooks] target {name}: (traced - untraced) <= {HOST_FLOOR_FACTOR} x "
                            f"(floor - untraced): {added:.1f} against {HOST_FLOOR_FACTOR * hooks:.1f} ({ratio:.3f}x) "
                            f"{'met' if met else 'NOT met'}{bound_note(name, of, modes.bounds)}")
        all_met &= met
    print("\n".join(verdicts))
    print("[ci-hooks] hooks = floor - untraced (do-nothing programs on the tracer's live hooks); "
          "body = traced - floor (the tracer's own work); least check / least cpu check / least attribution / least "
          "count: the floor with its syscall programs swapped for the least each of four designs must do "
          "(hook_floor.bpf.c), as added / floor's")
    return all_met


def ratio_to_floor(value, of):
    """What `value` adds over untraced, as a multiple of what the do-nothing floor adds."""
    hooks = of["floor"] - of["untraced"]
    return (value - of["untraced"]) / hooks if hooks > 0 else float("inf")


def bound_note(name, of, bounds):
    """What the bounds say of a workload: for a call of no interest, whether the cheapest design that tells it
    apart fits in HOST_FLOOR_FACTOR; for a call of interest, what naming its file and counting its bytes alone
    cost against the floor's. A bound is one design's least, not every design's, but for the least count: no
    tracer counts a call's bytes on these hooks for less."""
    if len(bounds) < len(CI_BOUNDS):
        return ""
    hooks = of["floor"] - of["untraced"]
    if name in CI_CALLS_OF_INTEREST:
        named, counted = (ratio_to_floor(of[mode], of) for mode in ("least attribution", "least count"))
        return (f"; naming the file alone costs {named:.3f}x, counting the bytes alone {counted:.3f}x: "
                f"{(HOST_FLOOR_FACTOR - counted) * hooks:.1f} instructions would be left under "
                f"{HOST_FLOOR_FACTOR}x to tell the call apart and name its file and buffer")
    least, mode = min((ratio_to_floor(of[mode], of), mode) for mode in CI_TELLING_APART)
    what = f"telling the call apart alone ({mode})"
    margin = (least - HOST_FLOOR_FACTOR) * hooks
    if least > HOST_FLOOR_FACTOR:
        return f"; {what} costs {least:.3f}x: that design is above the target by {margin:.1f} instructions"
    return f"; {what} costs {least:.3f}x: that design fits, {-margin:.1f} instructions to spare"


def exact_from_host(boots, ci_hooks=False):
    """Boot the lab `boots` times under --icount, run --exact --here in each, compare the boots' figures."""
    from dmabuf_top.kernel.lab import run_in_guest

    runs, ok = [], True
    for boot in range(boots):
        print(f"--- boot {boot + 1} of {boots} (icount)", flush=True)
        result = run_in_guest([sys.executable, str(Path(__file__).resolve()), "--exact", "--here"]
                              + (["--ci-hooks"] if ci_hooks else []), timeout=3000,
                              cwd=ROOT, icount=True,
                              on_output=lambda chunk: sys.stdout.write(chunk.decode(errors="replace")))
        ok &= result.exit_code == 0
        runs.append({tuple(line.split()[1:3]): float(line.split()[3])
                     for line in result.output.splitlines() if line.startswith(EXACT_LINE)})
    for key in runs[0] if len(runs) > 1 else ():
        values = [run.get(key) for run in runs]
        if None in values:
            print(f"boots disagree: {' '.join(key)} missing from a boot")
            ok = False
            continue
        spread = (max(values) - min(values)) / min(values)
        same = spread <= EXACT_AGREEMENT
        # The targets rest on untraced, floor and traced. Stacks depend on what the stack map already
        # holds, and an O_DIRECT read sleeps on the device (its completion runs in whichever task the
        # interrupt finds): printed, not held to 0.5 %.
        judged = key[1] not in ("with_stacks",) and key[0] != EVIDENCE_WORKLOAD[1]
        ok &= same or not judged
        print(f"boots: {key[0]:<14} {key[1]:<12} " + " / ".join(f"{v:.1f}" for v in values)
              + f"  spread {spread * 100:.2f} % {'(same)' if same else '(NOT the same: > 0.5 %)'}"
              + ("" if judged else " (not judged)"))
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--here", action="store_true", help="measure only where this runs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--exact", action="store_true",
                        help="instructions per call under the lab's --icount clock (from the host: boots the lab)")
    parser.add_argument("--boots", type=int, default=2, help="with --exact from the host: lab boots to compare")
    parser.add_argument("--ci-hooks", action="store_true",
                        help="with --exact: the CI host's hook set (fentry and kprobes withheld) and its target")
    args = parser.parse_args()
    if args.exact:
        ok = measure_exact(args.ci_hooks) if args.here else exact_from_host(args.boots, args.ci_hooks)
        return 0 if ok else 1
    in_guest = os.path.ismount("/mnt/scratch") and os.path.exists("/dev/udmabuf")
    where = "guest" if in_guest else "host"
    ok = measure(where, args.rounds or ROUNDS[where], (64 if where == "host" else 16) << 20)
    if not args.here and where == "host":
        from dmabuf_top.kernel.lab import run_in_guest

        result = run_in_guest([sys.executable, str(Path(__file__).resolve()), "--here"], timeout=1800, cwd=ROOT,
                              on_output=lambda chunk: sys.stdout.write(chunk.decode(errors="replace")))
        ok = ok and result.exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The price of validate's block-layer hooks (probes/dma_evidence.bpf.c), per run of each program.

    dmabuf-top vm --icount --results DIR -- .venv/bin/python benchmarks/block_cost.py [--dir /mnt/scratch]

These programs run per bio and per request completion, mostly in interrupt context, so no
thread's clock sees them whole (overhead.py's per-call figures are not exact for them). The
kernel keeps each program's own run time and run count while kernel.bpf_stats_enabled is 1;
under the lab's --icount clock one guest nanosecond is one instruction, so run_time_ns / run_cnt
is the program's instructions per run. That is the body's price; the tracepoint's dispatch to it
is not in it (the floor of any program on those tracepoints; hook_floor measures that kind).

Workloads, each on a file on the NVMe scratch disk, page cache dropped first: 4 KiB O_DIRECT
reads, 1 MiB O_DIRECT reads, and a 64 MiB buffered read (readahead: large bios of many pages).
Each runs twice: with this process traced (its bios tagged, their pages walked and recorded) and
untraced (another tgid is traced: its bios leave after one lookup; the completion walks nothing).
Prints instructions per run of each program, runs per MiB read, and the hooks' instructions per
MiB. No target: the issue asks that this price be stated (benchmarks/README.md gives it).
"""
import argparse
import mmap
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmabuf_top.probes.dma_evidence import DmaEvidence  # noqa: E402
from dmabuf_top.validate.page_cache import drop_page_cache  # noqa: E402

MiB = 1 << 20
FILE_SIZE = 64 * MiB
STATS_SWITCH = "/proc/sys/kernel/bpf_stats_enabled"


def write_file(path):
    with open(path, "wb") as out:
        for _ in range(FILE_SIZE // MiB):
            out.write(os.urandom(MiB))
    os.sync()


def direct_reads(path, chunk, total):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with mmap.mmap(-1, chunk) as aligned:
            done = 0
            while done < total:
                done += os.preadv(fd, [aligned], done % FILE_SIZE)
    finally:
        os.close(fd)
    return total


def buffered_read(path, _chunk, _total):
    with open(path, "rb", buffering=0) as source:
        while source.read(4 * MiB):
            pass
    return FILE_SIZE


WORKLOADS = (
    ("4 KiB O_DIRECT reads (4 MiB)", direct_reads, 4096, 4 * MiB),
    ("1 MiB O_DIRECT reads (64 MiB)", direct_reads, MiB, FILE_SIZE),
    ("buffered read, readahead (64 MiB)", buffered_read, 0, FILE_SIZE),
)


def measure(path, load, chunk, total, traced):
    drop_page_cache(path)
    # Untraced: the probe follows another process (pid 1), so this one's bios take the early exit.
    with DmaEvidence(tgids=[os.getpid() if traced else 1]) as probe:
        before = probe.program_counters()
        moved = load(path, chunk, total)
        after = probe.program_counters()
    rows = []
    for name in after:
        runs = after[name]["run_cnt"] - before[name]["run_cnt"]
        spent = after[name]["run_time_ns"] - before[name]["run_time_ns"]
        rows.append((name, runs, spent / runs if runs else None, runs / (moved / MiB)))
    return moved, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", default="/mnt/scratch", help="a directory on a block device (the lab's NVMe)")
    args = parser.parse_args()
    path = os.path.join(args.dir, "block_cost.bin")
    with open(STATS_SWITCH) as switch:
        was = switch.read().strip()
    write_file(path)
    try:
        with open(STATS_SWITCH, "w") as switch:
            switch.write("1\n")
        print("program                 runs     ns/run   runs/MiB   (under --icount one guest ns is one instruction)")
        for title, load, chunk, total in WORKLOADS:
            for traced in (True, False):
                moved, rows = measure(path, load, chunk, total, traced)
                per_mib = sum(runs_per_mib * (cost or 0) for _, _, cost, runs_per_mib in rows)
                state = "traced" if traced else "not traced"
                print(f"-- {title}, {state}: {per_mib:,.0f} ns of program time per MiB")
                for name, runs, cost, runs_per_mib in rows:
                    shown = "-" if cost is None else f"{cost:,.0f}"
                    print(f"   {name:<20} {runs:>6} {shown:>11} {runs_per_mib:>10.2f}")
    finally:
        with open(STATS_SWITCH, "w") as switch:
            switch.write(was + "\n")
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

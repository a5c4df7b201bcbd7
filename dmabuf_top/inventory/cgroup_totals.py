"""dma-buf bytes per cgroup: held by the processes in it, and created by them where the creator is known. Pure.

The rules (docs/cgroups.md says them to users, `snapshot --help` in one line):

  held      a buffer counts in the "held" total of every cgroup with a process holding it (an fd or a mapping),
            once per cgroup however many of its processes hold it. A buffer held from two cgroups is in both.
  shared    the part of a cgroup's held bytes in buffers also held from another cgroup; and, system-wide, the
            bytes of every such buffer counted once. So the figures add up:
                sum over cgroups of (held - shared) + shared (system-wide) + kernel-only == all buffers' bytes
  kernel-only  buffers no process holds (an fd in flight, a driver's or an attachment's reference) have a row of
            their own, never charged to a cgroup.
  unknown   holders whose cgroup could not be read (exited between the passes, cgroup v1 only) share one row.
  created   bytes of the buffers a cgroup's processes created, when the lifecycle probe saw the creation
            (`creators`: {inode: cgroup path}); a buffer created before the tool started, or with no probe, is
            "creator: not known" (created_bytes None, counted in `creator_not_known_bytes`), never 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import numpy as np

from .cgroups import short_name
from .inventory import stable_groups

CGROUP, UNKNOWN, KERNEL_ONLY = "cgroup", "unknown", "kernel-only"


@dataclass(frozen=True)
class CgroupRow:
    """One row: a cgroup (path: raw bytes), the holders of unknown cgroup, or the kernel-only buffers.
    created_bytes/created_buffers are None when creators are not known at all."""

    kind: str
    path: Optional[bytes]
    processes: int
    buffers: int
    held_bytes: int
    shared_bytes: int
    created_buffers: Optional[int] = None
    created_bytes: Optional[int] = None

    @property
    def short(self) -> str:
        return {UNKNOWN: "unknown cgroup", KERNEL_ONLY: "kernel-only"}.get(self.kind) or short_name(self.path)

    @property
    def exclusive_bytes(self) -> int:
        return self.held_bytes - self.shared_bytes


@dataclass(frozen=True)
class CgroupTotals:
    """rows: cgroups by held bytes (largest first, then path), then "unknown", then "kernel-only" (each only
    when it has something). shared_*: buffers held from more than one cgroup, each counted once."""

    rows: List[CgroupRow]
    shared_buffers: int
    shared_bytes: int
    total_bytes: int
    creators_known: bool
    creator_not_known_buffers: int
    creator_not_known_bytes: int

    def cgroup_rows(self) -> List[CgroupRow]:
        return [row for row in self.rows if row.kind != KERNEL_ONLY]

    def row(self, path) -> CgroupRow:
        return next(row for row in self.rows if row.kind == CGROUP and row.path == path)


def _holdings(inventory):
    """(pid, buffer row, buffer sizes by row, buffer inodes by row) of every (process, buffer) holding."""
    arrays = inventory.arrays
    if arrays is not None:
        return arrays.pair_pid, arrays.pair_row, arrays.columns.size.astype(np.uint64), arrays.columns.inode
    entries = inventory.buffers
    pids, rows = [], []
    for row, entry in enumerate(entries):
        for pid in entry.holders:
            pids.append(pid)
            rows.append(row)
    sizes = np.array([entry.size for entry in entries], dtype=np.uint64)
    inodes = np.array([entry.inode for entry in entries], dtype=np.uint64)
    return np.array(pids, dtype=np.int64), np.array(rows, dtype=np.intp), sizes, inodes


def cgroup_totals(inventory, cgroup_of: Mapping[int, Optional[bytes]],
                  creators: Optional[Mapping[int, Optional[bytes]]] = None) -> CgroupTotals:
    """Per-cgroup totals of `inventory` (an inventory.Inventory); cgroup_of: {pid: cgroup path or None};
    creators: {inode: creator's cgroup path (None: creator seen, cgroup not read)} from the lifecycle probe,
    None when there is no such probe (every buffer's creator is then not known)."""
    pair_pid, pair_row, sizes, inodes = _holdings(inventory)
    count = len(sizes)

    # Each holding's cgroup as a code: 0 is "unknown", 1.. the distinct paths sorted (a stable order).
    paths = sorted({path for path in cgroup_of.values() if path is not None})
    code_of_path = {path: code for code, path in enumerate(paths, 1)}
    pids, pid_of_holding = stable_groups(pair_pid)  # not np.unique: see stable_groups (the lab guest's numpy)
    pid_codes = np.array([code_of_path.get(cgroup_of.get(pid)) or 0 for pid in pids.tolist()], dtype=np.uint64)
    holding_code = pid_codes[pid_of_holding]

    # Distinct (cgroup, buffer) pairs: a buffer counts once per cgroup, however many of its processes hold it.
    keys, _ = stable_groups((holding_code << np.uint64(32)) | pair_row.astype(np.uint64))
    key_code = (keys >> np.uint64(32)).astype(np.intp)
    key_row = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
    cgroups_of_buffer = np.bincount(key_row, minlength=count)
    shared = cgroups_of_buffer[key_row] > 1
    slots = len(paths) + 1
    held = np.zeros(slots, dtype=np.uint64)
    np.add.at(held, key_code, sizes[key_row])
    shared_held = np.zeros(slots, dtype=np.uint64)
    np.add.at(shared_held, key_code[shared], sizes[key_row[shared]])
    buffers = np.bincount(key_code, minlength=slots)
    processes = np.bincount(pid_codes.astype(np.intp), minlength=slots)
    shared_rows = cgroups_of_buffer > 1
    kernel_only = cgroups_of_buffer == 0

    created_buffers: Dict[Optional[bytes], int] = {}
    created_bytes: Dict[Optional[bytes], int] = {}
    not_known = np.ones(count, dtype=bool)
    if creators is not None:
        for row, (inode, size) in enumerate(zip(inodes.tolist(), sizes.tolist())):
            if inode in creators:
                path = creators[inode]
                created_buffers[path] = created_buffers.get(path, 0) + 1
                created_bytes[path] = created_bytes.get(path, 0) + size
                not_known[row] = False

    def created(path):
        if creators is None:
            return None, None
        return created_buffers.get(path, 0), created_bytes.get(path, 0)

    rows = []
    for code, path in enumerate(paths, 1):
        if buffers[code] or created_buffers.get(path):
            rows.append(CgroupRow(CGROUP, path, int(processes[code]), int(buffers[code]), int(held[code]),
                                  int(shared_held[code]), *created(path)))
    for path in set(created_buffers) - set(paths) - {None}:  # creators whose cgroup holds nothing now
        rows.append(CgroupRow(CGROUP, path, 0, 0, 0, 0, *created(path)))
    rows.sort(key=lambda row: (-row.held_bytes, -(row.created_bytes or 0), row.path))
    if buffers[0] or created_buffers.get(None):
        rows.append(CgroupRow(UNKNOWN, None, int(processes[0]), int(buffers[0]), int(held[0]),
                              int(shared_held[0]), *created(None)))
    if kernel_only.any():
        rows.append(CgroupRow(KERNEL_ONLY, None, 0, int(np.count_nonzero(kernel_only)),
                              int(sizes[kernel_only].sum()), 0))
    return CgroupTotals(rows, int(np.count_nonzero(shared_rows)), int(sizes[shared_rows].sum()),
                        int(sizes.sum()), creators is not None, int(np.count_nonzero(not_known)),
                        int(sizes[not_known].sum()))


def top_cgroups(totals: CgroupTotals, top: int):
    """(the `top` cgroup rows by held bytes, the rest of the cgroup rows): bounded label sets."""
    rows = [row for row in totals.rows if row.kind == CGROUP]
    return rows[:top], rows[top:]

"""A plain-Python oracle for the inventory's arithmetic, as libdmabufinfo defines it.

Written the obvious way (dicts, one reference at a time), independent of the
array join in dmabuf_top.inventory, so that tests can check the fast path against
it on populations too large to write out by hand: unit tests on random ones,
guest tests on real buffers under the lab's emulated CPU.
"""


def expected_numbers(buffers, fds, maps):
    """Buffers (with .inode, .size, .exporter) and (pid, inode) pairs of fd and map refs -> every number."""
    sizes = {buffer.inode: buffer.size for buffer in buffers}
    held = {}  # pid -> inode -> [fds, maps]
    unmatched = 0
    for kind, refs in ((0, fds), (1, maps)):
        for pid, inode in refs:
            if inode not in sizes:
                unmatched += 1
                continue
            held.setdefault(pid, {}).setdefault(inode, [0, 0])[kind] += 1
    holders = {}  # inode -> {pid: (fds, maps)}
    for pid in sorted(held):
        for inode, (fd_refs, map_refs) in held[pid].items():
            holders.setdefault(inode, {})[pid] = (fd_refs, map_refs)
    processes = {}
    for pid, refs in held.items():
        rss = sum(sizes[inode] for inode in refs)
        pss = sum(sizes[inode] // len(holders[inode]) for inode in refs)
        processes[pid] = {"rss": rss, "pss": pss, "fd_refs": sum(f for f, _ in refs.values()),
                          "map_refs": sum(m for _, m in refs.values()),
                          "buffers": {inode: tuple(counts) for inode, counts in refs.items()}}
    exporters = {}
    for buffer in buffers:
        tally = exporters.setdefault(buffer.exporter, [0, 0])
        tally[0] += 1
        tally[1] += buffer.size
    kernel_only = [buffer for buffer in buffers if buffer.inode not in holders]
    totals = (len(buffers), sum(sizes.values()), len(kernel_only), sum(b.size for b in kernel_only),
              sum(p["rss"] for p in processes.values()), sum(p["pss"] for p in processes.values()))
    return {"holders": holders, "processes": processes, "totals": totals, "unmatched": unmatched,
            "exporters": {name: tuple(tally) for name, tally in exporters.items()},
            "order": [b.inode for b in sorted(buffers, key=lambda b: (-b.size, b.inode))]}


def numbers_of(inventory):
    """The same numbers, read from an inventory.Inventory."""
    totals = inventory.totals
    return {
        "holders": {entry.inode: {pid: tuple(refs) for pid, refs in entry.holders.items()}
                    for entry in inventory.buffers if entry.holders},
        "processes": {p.pid: {"rss": p.rss, "pss": p.pss, "fd_refs": p.fd_refs, "map_refs": p.map_refs,
                              "buffers": {inode: tuple(refs) for inode, refs in p.buffers.items()}}
                      for p in inventory.processes},
        "totals": (totals.buffers, totals.bytes, totals.kernel_only_buffers, totals.kernel_only_bytes,
                   totals.userspace_rss, totals.userspace_pss),
        "unmatched": inventory.unmatched_refs,
        "exporters": {e.exporter: (e.buffers, e.bytes) for e in inventory.exporters},
        "order": [entry.inode for entry in inventory.buffers],
    }

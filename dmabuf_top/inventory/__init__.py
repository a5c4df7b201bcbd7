"""The inventory room: which dma-bufs exist and who holds them, whatever the source.

types.py          the domain types (Buffer, FdRef, MapRef, Holders, Refs, ExporterTotal), kernel-free:
                  the BPF decoders in probes/ and the /proc and debugfs readers all produce them
procfs.py         buffers and holders from /proc (no BPF)
bufinfo.py        buffers from debugfs dma_buf/bufinfo
inventory.py      the join (per buffer, per process, totals), pure
collect.py        taking an inventory: the best source for buffers and for holders, or the one asked for
cgroups.py        a holder's cgroup v2 path (/proc/PID/cgroup) and its short name (foo.service, docker:ID12)
cgroup_totals.py  bytes per cgroup: held, shared, kernel-only, created (the rules), pure
index.py          the buffer index: which buffer an I/O target is, and which buffers are alive or gone
render_snapshot.py  `snapshot` as a table, JSON or CSV

Importing this package loads nothing (no numpy, no libbpf): import the module you need.
"""

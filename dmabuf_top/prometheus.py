"""Prometheus metrics for `dmabuf-top export`: a prometheus_client collector that samples on each scrape.

Metrics (all names prefixed `dmabuf_`):

    exporter_buffers{exporter}                 gauge   buffers per exporter
    exporter_bytes{exporter}                   gauge   bytes per exporter
    buffer_bytes{inode, exporter, name}        gauge   the `top` largest buffers, one series each
    other_buffers / other_buffers_bytes        gauge   every buffer beyond the top, aggregated
    process_rss_bytes{pid, comm}               gauge   dma-buf RSS of the `top` largest holders,
    process_pss_bytes{pid, comm}               gauge     the rest aggregated under pid="other"
    process_buffers{pid, comm}                 gauge
    cgroup_held_bytes{cgroup, short}           gauge   dma-buf bytes held by the processes of each of the
    cgroup_held_buffers{cgroup, short}                   `top_cgroups` cgroups holding most (cgroup v2 path and its
    cgroup_shared_bytes{cgroup, short}                   short form: "foo.service", "docker:ID12"); the rest summed
    cgroup_processes{cgroup, short}                      under cgroup="other", holders of unreadable cgroup under
                                                         cgroup="unknown" (real paths start with "/": no clash)
    cgroup_created_bytes{cgroup, short}        gauge   only when the lifecycle probe knows creators
    cgroups_shared_bytes / cgroups_shared_buffers  gauge  buffers held from several cgroups, each counted once
    kernel_only_bytes / kernel_only_buffers    gauge   buffers no process holds (charged to no cgroup)
    io_bytes_total{path}                       counter bytes moved by each I/O path
    io_calls_total{path}                       counter
    io_cpu_copied_bytes_total{path}            counter CPU copies (absent when not traced)
    io_pinned_pages_total{path}                counter pinned pages (absent when not traced)
    io_page_cache_added_pages_total{path}      counter
    buffer_io_bytes_total{inode, path}         counter I/O of the `top` buffers; others under inode="other"
    hook_live{concern}                         gauge   1 traced, 0 missing (what "absent" means above)
    dropped_events_total                       counter
    map_full_refused_keys_total{map}           counter new keys a full map refused (their I/O is
                                                       missing from the counters above)

A buffer held from two cgroups is in the held and shared bytes of both (inventory/cgroup_totals.py):
sum(held - shared) + cgroups_shared_bytes + kernel_only_bytes is every dma-buf byte.
Each scrape forgets the counters of buffers gone (sampler.TraceReader), so the tracer's
maps do not fill under churn. Label cardinality is bounded by `top` (buffers and processes)
and `top_cgroups`; a metric whose hooks are missing is left out rather than reported as 0. Buffer names and comms
are label values escaped as on a terminal (text.terminal_safe), so a hostile
name is one readable line; prometheus_client escapes quotes and backslashes.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .errors import DmabufTopError
from .inventory.cgroup_totals import UNKNOWN, cgroup_totals, top_cgroups
from .inventory.index import BufferIndex
from .leaks import creator_cgroups
from .sampler import TraceReader
from .text import terminal_safe
from .trace_model import MINIMAL_MAPS

DEFAULT_TOP = 20
DEFAULT_TOP_CGROUPS = 20
_PER_PATH = (("bytes", "io_bytes", "bytes moved by each I/O path", None),
             ("calls", "io_calls", "system calls on each I/O path", None),
             ("cpu_copied", "io_cpu_copied_bytes", "bytes the CPU copied on each I/O path", "cpu_copy"),
             ("pinned_pages", "io_pinned_pages", "pages pinned by get_user_pages on each I/O path", "gup"),
             ("pc_added", "io_page_cache_added_pages", "page-cache pages added on each I/O path", "page_cache"))


def families(inventory, trace=None, top: int = DEFAULT_TOP, index: Optional[BufferIndex] = None,
             top_cgroups: int = DEFAULT_TOP_CGROUPS, creators=None):
    """Metric families for one inventory (and trace snapshot); pure, so tested without a kernel.
    index: the BufferIndex that learnt this inventory (made from it when not given); creators: {inode:
    creator's cgroup} from the lifecycle probe (None: not known, and no created-bytes metric)."""
    out = []
    buffers = GaugeMetricFamily("dmabuf_exporter_buffers", "dma-bufs per exporter", labels=["exporter"])
    size = GaugeMetricFamily("dmabuf_exporter_bytes", "bytes of dma-bufs per exporter", labels=["exporter"])
    for total in inventory.exporters:
        name = total.exporter or "unknown"
        buffers.add_metric([name], total.buffers)
        size.add_metric([name], total.bytes)
    out += [buffers, size]

    shown, rest_count, rest_bytes = _largest(inventory, top)
    per_buffer = GaugeMetricFamily("dmabuf_buffer_bytes", f"size of each of the {top} largest dma-bufs",
                                   labels=["inode", "exporter", "name"])
    for b in shown:
        per_buffer.add_metric([str(b.inode), b.exporter or "unknown", terminal_safe(b.name, none="")], b.size)
    out.append(per_buffer)
    out.append(GaugeMetricFamily("dmabuf_other_buffers", "dma-bufs beyond the top ones", value=rest_count))
    out.append(GaugeMetricFamily("dmabuf_other_buffers_bytes", "bytes of dma-bufs beyond the top ones",
                                 value=rest_bytes))

    processes = sorted(inventory.processes, key=lambda p: (-p.rss, p.pid))
    labels = ["pid", "comm"]
    rss = GaugeMetricFamily("dmabuf_process_rss_bytes", "dma-buf bytes a process references", labels=labels)
    pss = GaugeMetricFamily("dmabuf_process_pss_bytes", "dma-buf bytes shared out among holders", labels=labels)
    count = GaugeMetricFamily("dmabuf_process_buffers", "dma-bufs a process references", labels=labels)
    for process in processes[:top]:
        key = [str(process.pid), terminal_safe(process.comm, none="")]
        rss.add_metric(key, process.rss)
        pss.add_metric(key, process.pss)
        count.add_metric(key, _buffers_held(inventory, process))
    if processes[top:]:
        others = processes[top:]
        rss.add_metric(["other", ""], sum(p.rss for p in others))
        pss.add_metric(["other", ""], sum(p.pss for p in others))
        count.add_metric(["other", ""], sum(_buffers_held(inventory, p) for p in others))
    out += [rss, pss, count]
    if inventory.cgroups is not None:
        out += _cgroup_families(cgroup_totals(inventory, inventory.cgroups, creators), top_cgroups)

    if trace is not None:
        index = index if index is not None else BufferIndex.of_inventory(inventory)
        out += _trace_families(trace, index, {b.inode for b in shown})
    return out


def _cgroup_families(totals, top):
    labels = ["cgroup", "short"]
    fields = (("held_bytes", "dmabuf_cgroup_held_bytes", "dma-buf bytes held by a cgroup's processes (fd or mapping)"),
              ("buffers", "dmabuf_cgroup_held_buffers", "dma-bufs held by a cgroup's processes"),
              ("shared_bytes", "dmabuf_cgroup_shared_bytes",
               "the part of a cgroup's held bytes also held from another cgroup"),
              ("processes", "dmabuf_cgroup_processes", "processes of a cgroup holding dma-bufs"))
    if totals.creators_known:
        fields += (("created_bytes", "dmabuf_cgroup_created_bytes", "dma-buf bytes a cgroup's processes created"),)
    shown, rest = top_cgroups(totals, top)
    unknown = [row for row in totals.rows if row.kind == UNKNOWN]
    out = []
    for attribute, name, help_text in fields:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        for row in shown:
            family.add_metric([terminal_safe(row.path), terminal_safe(row.short)], getattr(row, attribute))
        if rest:
            family.add_metric(["other", ""], sum(getattr(row, attribute) for row in rest))
        for row in unknown:
            family.add_metric(["unknown", ""], getattr(row, attribute) or 0)
        out.append(family)
    kernel_only = sum(row.held_bytes for row in totals.rows if row.kind == "kernel-only")
    kernel_only_buffers = sum(row.buffers for row in totals.rows if row.kind == "kernel-only")
    out += [GaugeMetricFamily("dmabuf_cgroups_shared_bytes", "bytes of dma-bufs held from more than one cgroup, "
                              "each counted once", value=totals.shared_bytes),
            GaugeMetricFamily("dmabuf_cgroups_shared_buffers", "dma-bufs held from more than one cgroup",
                              value=totals.shared_buffers),
            GaugeMetricFamily("dmabuf_kernel_only_bytes", "bytes of dma-bufs no process holds", value=kernel_only),
            GaugeMetricFamily("dmabuf_kernel_only_buffers", "dma-bufs no process holds", value=kernel_only_buffers)]
    return out


def _largest(inventory, top):
    """(the `top` largest buffers as Buffer objects, largest first then by inode; how many others; their
    bytes), from the inventory's arrays: a scrape at ten thousand buffers makes `top` objects, not all."""
    if inventory.arrays is None:
        ordered = sorted((e.buffer for e in inventory.buffers), key=lambda b: (-b.size, b.inode))
        return ordered[:top], len(ordered[top:]), sum(b.size for b in ordered[top:])
    columns = inventory.arrays.columns
    order = np.lexsort((columns.inode, ~columns.size))  # stable; ~ on uint64 orders largest first
    return columns.pick(order[:top].tolist()), max(len(order) - top, 0), int(columns.size[order[top:]].sum())


def _buffers_held(inventory, process):
    return len(process.buffers) if inventory.arrays is None else inventory.arrays.buffers_held(process.pid)


def _trace_families(trace, index, shown_inodes):

    missing = trace.missing_concerns()
    out = []
    per_path = trace.per_path()
    for field, name, help_text, concern in _PER_PATH:
        if concern in missing:
            continue
        family = CounterMetricFamily(f"dmabuf_{name}", help_text, labels=["path"])
        for path, counters in sorted(per_path.items()):
            family.add_metric([path], getattr(counters, field))
        out.append(family)
    buffer_io = CounterMetricFamily("dmabuf_buffer_io_bytes", "bytes moved into or out of the top dma-bufs",
                                    labels=["inode", "path"])
    aggregated = {}
    for inode, paths in sorted(index.per_buffer(trace.by_target, alive_only=True).items()):
        for path, counters in paths.items():
            if inode in shown_inodes:
                buffer_io.add_metric([str(inode), path], counters.bytes)
            else:
                aggregated[path] = aggregated.get(path, 0) + counters.bytes
    for path, value in sorted(aggregated.items()):
        buffer_io.add_metric(["other", path], value)
    out.append(buffer_io)
    live = GaugeMetricFamily("dmabuf_hook_live", "1 when the concern's hooks are attached, 0 when missing",
                             labels=["concern"])
    for concern in sorted({h.concern for h in trace.hooks}):
        live.add_metric([concern], 0 if concern in missing else 1)
    out.append(live)
    out.append(CounterMetricFamily("dmabuf_dropped_events", "ring buffer records lost", value=trace.dropped))
    refused = CounterMetricFamily("dmabuf_map_full_refused_keys",
                                  "new keys a full BPF map refused: what they carried is missing from the counters",
                                  labels=["map"])
    for name in MINIMAL_MAPS:  # the maps these counters come from; the others are never read here
        refused.add_metric([name], trace.map_full.get(name, 0))
    out.append(refused)
    return out


class DmabufCollector:
    """A prometheus_client collector: each scrape takes a fresh inventory and trace snapshot.
    Scrapes may come from several threads at once (the HTTP server is threaded): one at a time here."""

    def __init__(self, take_inventory, tracer=None, top: int = DEFAULT_TOP, top_cgroups: int = DEFAULT_TOP_CGROUPS,
                 creations=lambda: None):
        """creations: () -> {inode: leaks.Creation} known now, or None (no lifecycle probe: no created bytes)."""
        self._take = take_inventory
        self._creations = creations
        self._top_cgroups = top_cgroups
        self._reader = TraceReader(tracer) if tracer is not None else None
        self._index = BufferIndex()  # fed by each scrape's inventory read
        self._top = top
        self._lock = threading.Lock()

    def collect(self):
        with self._lock:
            inventory = self._take()
            creations = self._creations()  # after the read: a buffer made during it has its creation
            self._index.learn_inventory(inventory)
            trace = self._reader.snapshot(self._index) if self._reader is not None else None  # targets, tasks
            return families(inventory, trace, self._top, self._index, self._top_cgroups, creator_cgroups(creations))


def parse_listen(text: str):
    """'ADDR:PORT', ':PORT' or '[v6]:PORT' -> (addr, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise DmabufTopError(f"--listen takes ADDR:PORT (e.g. 127.0.0.1:9464), not '{text}'", exit_code=2)
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve(address: str, port: int, collector: DmabufCollector, ready: Optional[threading.Event] = None):
    """Serve /metrics until interrupted (SIGINT/SIGTERM end it through SystemExit/KeyboardInterrupt)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        raise DmabufTopError(f"cannot listen on {address}:{port}: {error.strerror}; pick another --listen",
                             exit_code=2) from None
    try:
        if ready is not None:
            ready.set()
        while True:  # time.sleep is interrupted by the signal handlers that end the command
            time.sleep(3600)
    finally:
        server.shutdown()
        server.server_close()

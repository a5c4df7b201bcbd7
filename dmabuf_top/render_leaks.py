"""`dmabuf-top leaks` as text or JSON (a leaks.LeakReport in). Pure.

JSON (one object per report, one per line; "schema": "dmabuf-top.leaks/1"):

    {"schema", "elapsed_s", "min_age_s", "observations", "creations_known", "notes": [str],
     "buffers", "bytes",
     "groups": [{"stack": [frame]|null, "exporter", "size", "name", "name_hex" (the group key when the stack
                 is not known; null otherwise), "count", "bytes", "growth_buffers", "growth_bytes",
                 "series": [{"t_s", "buffers", "bytes"}] (the first observation, then the latest: at most
                             leaks.SERIES_KEPT),
                 "buffers": [{"inode", "size", "exporter", "name", "name_hex", "age_s", "age_known",
                              "preexisting", "creator": {"pid", "tid", "comm", "state", "cgroup", "cgroup_hex"}|null,
                              "creator_state": "running"|"exited"|"not known",
                              "fd_holders": [{"pid", "comm", "comm_hex", "fds"}],
                              "map_holders": [{"pid", "comm", "comm_hex", "maps"}],
                              "kernel_holds": [str],
                              "last_events": [{"event", "pid", "comm", "age_s"}]|null}]}],
     "hold_events_known": bool}

"age_known" false: the buffer existed before dmabuf-top started, "age_s" is then a lower bound and it has no
stack. "kernel_holds" is empty for a buffer a process holds, else the devices attached to it or
"kernel reference". "last_events" (added in December 2026, same schema: a new key only) are, for such a buffer,
its last dma_buf_get/put and device attach/detach events, oldest first, with who did them and how long ago; null
where those hooks are missing ("hold_events_known" false: the text says "missing"); [] for a buffer a process
holds. Names, comms and cgroups are given lossy and exact (hex), as in snapshot.
"""
from __future__ import annotations

import json

from .leaks import NOT_KNOWN
from .text import human_size, terminal_safe

SCHEMA = "dmabuf-top.leaks/1"


def _lossy(raw):
    return None if raw is None else bytes(raw).decode("utf-8", "replace")


def _hex(raw):
    return None if raw is None else bytes(raw).hex()


def _holders(holders, what):
    return [{"pid": h.pid, "comm": _lossy(h.comm), "comm_hex": _hex(h.comm), what: h.count} for h in holders]


def _events(leak, now_ns):
    if leak.last_events is None:
        return None
    return [{"event": e.event, "pid": e.pid, "comm": e.comm, "age_s": round((now_ns - e.at_ns) / 1e9, 3)}
            for e in leak.last_events]


def _buffer_dict(leak, now_ns) -> dict:
    creator = None
    if leak.creator is not None:
        c = leak.creator
        creator = {"pid": c.pid, "tid": c.tid, "comm": c.comm, "state": leak.creator_state,
                   "cgroup": _lossy(c.cgroup), "cgroup_hex": _hex(c.cgroup)}
    return {"inode": leak.inode, "size": leak.size, "exporter": leak.exporter, "name": _lossy(leak.name),
            "name_hex": _hex(leak.name), "age_s": round(leak.age_s, 3), "age_known": leak.age_known,
            "preexisting": leak.preexisting, "creator": creator, "creator_state": leak.creator_state,
            "fd_holders": _holders(leak.fd_holders, "fds"), "map_holders": _holders(leak.map_holders, "maps"),
            "kernel_holds": list(leak.kernel_holds), "last_events": _events(leak, now_ns)}


def to_dict(report) -> dict:
    groups = []
    for group in report.groups:
        by_buffer = group.stack is None
        exporter, size, name = group.key[1:] if by_buffer else (None, None, None)
        growth_buffers, growth_bytes = group.growth
        groups.append({
            "stack": None if by_buffer else list(group.stack),
            "exporter": exporter or None if by_buffer else None, "size": size,
            "name": _lossy(name), "name_hex": _hex(name),
            "count": group.count, "bytes": group.bytes, "growth_buffers": growth_buffers, "growth_bytes": growth_bytes,
            "series": [{"t_s": round(t, 3), "buffers": n, "bytes": b} for t, n, b in group.series],
            "buffers": [_buffer_dict(leak, report.now_ns) for leak in group.buffers],
        })
    return {"schema": SCHEMA, "elapsed_s": round(report.elapsed_s, 3), "min_age_s": report.min_age_s,
            "observations": report.observations, "creations_known": report.creations_known,
            "notes": list(report.notes), "buffers": report.buffers, "bytes": report.bytes, "groups": groups,
            "hold_events_known": report.hold_events_known}


def render_json(report) -> str:
    return json.dumps(to_dict(report), ensure_ascii=True)


def _age(leak) -> str:
    return f"{leak.age_s:.1f}s" if leak.age_known else f">={leak.age_s:.1f}s"


def creator_text(leak) -> str:
    """pid(comm), "... exited" when it has; "before start" for a buffer older than the tool; else "not known"."""
    return creator_label(leak.creator, leak.creator_state, leak.preexisting)


def creator_label(creator, state, preexisting) -> str:
    """creator_text of a buffer given as its leaks.Creation (or None), creator state and preexisting flag."""
    if creator is None:
        return "before start" if preexisting else NOT_KNOWN
    text = f"{creator.pid}({terminal_safe(creator.comm)})"
    return f"{text} exited" if state == "exited" else text


def holders_text(holders) -> str:
    return " ".join(f"{h.pid}({terminal_safe(h.comm, none='?')})x{h.count}" for h in holders) or "-"


def events_text(leak, now_ns) -> str:
    """A kernel-only buffer's last hold events: "get 12(cam) 3.1s ago, put ..."; "missing" without the hooks."""
    if leak.last_events is None:
        return "last get/put: missing (no dma_buf get/put hooks on this kernel)"
    said = ", ".join(f"{e.event} {e.pid}({terminal_safe(e.comm)}) {(now_ns - e.at_ns) / 1e9:.1f}s ago"
                     for e in leak.last_events)
    return f"last get/put: {said or 'none since dmabuf-top started'}"


def render_text(report) -> str:
    lines = [f"leaks: {report.buffers} buffers alive >= {report.min_age_s:g}s, {human_size(report.bytes)}, "
             f"in {len(report.groups)} groups ({report.observations} observations over {report.elapsed_s:.1f}s)"]
    lines += [f"note: {note}" for note in report.notes]
    for number, group in enumerate(report.groups, 1):
        growth_buffers, growth_bytes = group.growth
        sign = "+" if growth_bytes >= 0 else "-"
        lines.append("")
        lines.append(f"group {number}: {group.count} buffers, {human_size(group.bytes)}, growth {growth_buffers:+d} "
                     f"buffers {sign}{human_size(abs(growth_bytes))} over {len(group.series)} observations")
        if group.stack is not None:
            lines.append("  allocation stack:")
            lines += [f"    {terminal_safe(frame)}" for frame in group.stack]
        else:
            exporter, size, name = group.key[1:]
            stack_note = ("existed before dmabuf-top started: no stack" if all(b.preexisting for b in group.buffers)
                          else "allocation stack not known")
            lines.append(f"  {exporter or '?'} {human_size(size)} {terminal_safe(name)}  ({stack_note})")
        lines.append("  " + "  ".join(f"{h:<{w}}" for h, w in _HEAD).rstrip())
        for leak in group.buffers:
            held_by = ", ".join(terminal_safe(what) for what in leak.kernel_holds)
            if leak.kernel_holds:
                held_by += "; " + events_text(leak, report.now_ns)
            cells = (str(leak.inode), human_size(leak.size), _age(leak), creator_text(leak),
                     holders_text(leak.fd_holders), holders_text(leak.map_holders))
            lines.append(("  " + "  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, _HEAD)) + "  " + held_by).rstrip())
    return "\n".join(lines).rstrip() + "\n"


_HEAD = (("INODE", 8), ("SIZE", 10), ("AGE", 8), ("CREATOR", 22), ("FD HOLDERS", 24), ("MAP HOLDERS", 24),
         ("HELD BY (no process)", 0))

"""The Leaks pane's rows: one per group of a leaks.LeakReport. Pure.

The grouping, ages, creators and holders are leaks.LeakTracker's (the rules of `dmabuf-top leaks`); this module
only says each group in one line of cells (columns.COLUMNS["leaks"]):

  age       the group's oldest buffer; a columns.AgeAtLeast (">=") when it existed before the view started
  creator   the oldest buffer's creator as `leaks` prints it (render_leaks.creator_text), "+N" other creators
  holders   every distinct holder in the group: pid(comm) by fd, "pid(comm) map" by mapping, and for buffers no
            process holds "no process: " the attached devices or "kernel reference"
  stack     the user frames innermost first, then " | " and the kernel frames: the code path that allocated
            reads first; a group without a stack says why ("existed before dmabuf-top started: no stack")
"""
from __future__ import annotations

from typing import List

from ..render_leaks import creator_text
from ..text import terminal_safe
from .columns import AgeAtLeast, Row

NO_STACK_BEFORE = "existed before dmabuf-top started: no stack"
NO_STACK = "allocation stack not known"


def _holders(group) -> str:
    seen: List[str] = []
    for leak in group.buffers:
        labels = [f"{h.pid}({terminal_safe(h.comm, none='?')})" for h in leak.fd_holders]
        labels += [f"{h.pid}({terminal_safe(h.comm, none='?')}) map" for h in leak.map_holders]
        if leak.kernel_holds:
            labels.append("no process: " + ", ".join(terminal_safe(what) for what in leak.kernel_holds))
        seen += [label for label in labels if label not in seen]
    return " ".join(seen) or "-"


def _creator(group) -> str:
    oldest = group.buffers[0]  # LeakTracker sorts a group's buffers oldest first
    others = {buffer.creator.pid for buffer in group.buffers if buffer.creator is not None} - (
        {oldest.creator.pid} if oldest.creator is not None else set())
    return creator_text(oldest) + (f" +{len(others)}" if others else "")


def _stack(group) -> str:
    if group.stack is None:
        exporter, size, name = group.key[1:]
        why = NO_STACK_BEFORE if all(buffer.preexisting for buffer in group.buffers) else NO_STACK
        label = " ".join(part for part in (exporter or "?", terminal_safe(name, none="")) if part)
        return f"({why}) {label}"
    creation = next(buffer.creator for buffer in group.buffers if buffer.creator is not None)
    user = creation.user_stack if creation.kernel_frames is not None else ()
    kernel = group.stack[: creation.kernel_frames] if creation.kernel_frames is not None else group.stack
    text = " < ".join(terminal_safe(frame) for frame in user)
    if kernel:
        text += (" | " if text else "") + " < ".join(terminal_safe(frame) for frame in kernel)
    return text


def leak_rows(report) -> List[Row]:
    rows = []
    for group in report.groups:
        oldest = group.buffers[0]
        age = oldest.age_s if oldest.age_known else AgeAtLeast(oldest.age_s)
        values = {"buffers": group.count, "bytes": group.bytes, "growth": group.growth[1], "age": age,
                  "creator": _creator(group), "holders": _holders(group), "stack": _stack(group)}
        extra = {"inodes": [buffer.inode for buffer in group.buffers]}
        key = " ".join(str(part) for part in group.key)
        rows.append(Row(key, values, extra, None, " ".join(str(v) for v in values.values()).lower()))
    return rows

"""Every buffer a recording saw, whatever its lifetime: the session's buffers, buffer_names and alloc_stacks rows.

`BufferBook` learns each buffer from the lifecycle probe's records (creator, cgroup, creation, names, release,
allocation stacks), from the iterator's reads (exporter, size, name of a buffer that was there before the
recording) and from the I/O records (who used it). It hands back the rows that changed since it was last asked:
a buffer's row is rewritten (INSERT OR REPLACE by inode) as the recording learns more, so a recording cut short
keeps what it knew. Pure: the stacks, symbols and cgroup paths come from the callables it is given.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from . import session as records

# Events whose task holds or uses the buffer (an fd made or got, a mapping).
HOLDING_EVENTS = ("export", "fd", "get", "mmap")
# Events that carry dmabuf->name as the hook read it (the tracepoints carry no name).
NAMING_EVENTS = ("export", "name", "release")


@dataclass
class _Facts:
    inode: int
    exporter: str = ""
    size: int = 0
    name: Optional[bytes] = None
    creator: Tuple[int, int, str] = (0, 0, "")  # tgid, tid, comm
    cgroup_id: int = 0
    cgroup_path: str = ""
    created_ns: int = 0
    released_ns: int = 0
    kernel_stack_id: int = -1
    user_stack_id: int = -1
    holders: Dict[int, str] = field(default_factory=dict)  # tgid -> comm

    def row(self):
        holders = "\n".join(f"{tgid} {comm}" for tgid, comm in sorted(self.holders.items()))
        return records.BufferRecord(self.inode, self.exporter, self.size, self.name, *self.creator, self.cgroup_id,
                                    self.cgroup_path, self.created_ns, self.released_ns, self.kernel_stack_id,
                                    self.user_stack_id, holders)


class BufferBook:
    """kernel_frames(stack id) -> [frame]; user_frames(record) -> [frame] (the record's creator and user stack);
    cgroup_path(cgroup id) -> str ("" when unknown)."""

    def __init__(self, kernel_frames: Callable[[int], List[str]], user_frames: Callable[[object], List[str]],
                 cgroup_path: Callable[[int], str] = lambda _id: ""):
        self._kernel_frames = kernel_frames
        self._user_frames = user_frames
        self._cgroup_path = cgroup_path
        self._facts: Dict[int, _Facts] = {}
        self._changed: Set[int] = set()
        self._stack_ids: Dict[Tuple[str, str], int] = {}  # (kind, frames) -> session id

    def __len__(self):
        return len(self._facts)

    def _buffer(self, inode) -> _Facts:
        facts = self._facts.get(inode)
        if facts is None:
            facts = self._facts[inode] = _Facts(inode)
        self._changed.add(inode)
        return facts

    def _name(self, facts, name, time_ns, source, tgid, out):
        if name is not None and name != facts.name:
            facts.name = name
            out.append(records.BufferName(time_ns, facts.inode, name, source, tgid))

    def _stack(self, kind, frames, out) -> int:
        if not frames:
            return -1
        key = (kind, "\n".join(frames))
        known = self._stack_ids.get(key)
        if known is None:
            known = self._stack_ids[key] = len(self._stack_ids) + 1
            out.append(records.AllocStack(known, kind, key[1]))
        return known

    def lifecycle(self, record) -> List:
        """A probes.buffer_lifecycle.LifecycleRecord -> the BufferName and AllocStack rows it adds."""
        out: List = []
        if not record.inode:
            return out
        facts = self._buffer(record.inode)
        if record.size:
            facts.size = record.size
        if record.exporter:
            facts.exporter = record.exporter
        if record.event == "export":
            facts.created_ns = record.timestamp_ns
            facts.released_ns = 0  # an inode number used again
            facts.creator = (record.tgid, record.tid, record.comm)
            facts.cgroup_id = record.cgroup_id
            facts.cgroup_path = self._cgroup_path(record.cgroup_id) if record.cgroup_id else ""
            facts.kernel_stack_id = self._stack("kernel", self._kernel_frames(record.kernel_stack), out)
            facts.user_stack_id = self._stack("user", self._user_frames(record), out)
        elif record.event == "release":
            facts.released_ns = record.timestamp_ns
        if record.event in NAMING_EVENTS:
            self._name(facts, record.name, record.timestamp_ns, record.event, record.tgid, out)
        if record.event in HOLDING_EVENTS and record.tgid:
            facts.holders.setdefault(record.tgid, record.comm)
        return out

    def seen(self, time_ns, inode, exporter, name, size) -> List:
        """An iterator pass showed this buffer; returns the BufferName row when its name is news."""
        out: List = []
        facts = self._facts.get(inode)
        if facts is not None and facts.exporter == exporter and facts.size == size and facts.name == name:
            return out
        facts = self._buffer(inode)
        facts.exporter, facts.size = exporter or facts.exporter, size or facts.size
        self._name(facts, name, time_ns, "snapshot", 0, out)
        return out

    def used(self, inode, tgid, comm):
        """An I/O record moved bytes into or out of this buffer."""
        facts = self._facts.get(inode)
        if facts is None or tgid not in facts.holders:
            self._buffer(inode).holders.setdefault(tgid, comm)

    def changed_rows(self) -> List:
        """The buffers rows of every buffer that changed since the last call."""
        rows = [self._facts[inode].row() for inode in sorted(self._changed)]
        self._changed.clear()
        return rows

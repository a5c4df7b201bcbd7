"""TaskstatsSource: delay accounting (cumulative) of the traced command and its descendants, every tick."""
import os
from contextlib import ExitStack
from typing import Dict, List, Mapping

from ..errors import DmabufTopError
from ..probes.hooks import State
from ..taskstats import TaskStatsClient, delay_accounting
from . import session as records


def descendants(root: int, parents: Mapping[int, int]) -> List[int]:
    """root and every process whose ancestry (pid -> ppid) leads to it, sorted."""
    children: Dict[int, List[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def parse_ppid(stat_line: str) -> int:
    """The ppid field of /proc/PID/stat (the comm in parentheses may hold spaces and ')')."""
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def read_parents(proc="/proc") -> Dict[int, int]:
    parents = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            try:
                with open(f"{proc}/{entry}/stat") as stat:
                    parents[int(entry)] = parse_ppid(stat.read())
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return parents


def taskstats_sample(now_ns: int, tgid: int, stats):
    """A taskstats.TaskStats (summed over the thread group) as a TaskstatsSample; absent fields are 0."""
    def delay(kind):
        found = stats.delays.get(kind)
        return found.total_ns if found else 0

    return records.TaskstatsSample(now_ns, tgid, stats.pid or tgid, stats.comm, 0, delay("cpu"), delay("blkio"),
                                   delay("swapin"), delay("freepages"), stats.read_bytes or 0,
                                   stats.write_bytes or 0)


class TaskstatsSource:
    """Delay accounting (cumulative) of the traced command and its descendants, every interval."""

    name = "taskstats"

    def __init__(self, client_factory=None, parents=read_parents):
        self._client_factory = client_factory
        self._parents = parents
        self._client = None
        self._root = None
        self._resources = ExitStack()

    def start(self, context):
        if context.target_pid is None:
            return [records.Hook("taskstats", "taskstats", State.NOT_NEEDED, "",
                                 "taskstats follow a traced command: record -- CMD")]
        try:
            accounting = self._resources.enter_context(delay_accounting())
            self._client = (self._client_factory or TaskStatsClient)()
            self._resources.callback(self._client.close)
        except DmabufTopError as error:
            self._resources.close()
            return [records.Hook("taskstats", "taskstats", State.MISSING, "", f"taskstats off: {error}")]
        self._root = context.target_pid
        detail = "delay accounting on" if accounting else \
            "delay accounting could not be turned on: only CPU delay is counted"
        return [records.Hook("taskstats", "taskstats", State.LIVE, "netlink", detail)]

    def poll(self, now_ns):
        if self._client is None:
            return []
        rows = []
        for tgid in descendants(self._root, self._parents()):
            stats = self._client.for_process(tgid)
            if stats is not None:
                rows.append(taskstats_sample(now_ns, tgid, stats))
        return rows

    def stop(self, now_ns):
        try:
            return self.poll(now_ns)
        finally:
            self._client = None
            self._resources.close()

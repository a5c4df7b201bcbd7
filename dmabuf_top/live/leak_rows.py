"""The Leaks pane: one row per group of leaks.LeakTracker's columns, a Row built only for the groups shown. Pure.

The grouping, ages, creators and holders are leaks.LeakTracker's (the rules of `dmabuf-top leaks`); this module
only says each group in one line of cells (columns.COLUMNS["leaks"]):

  age       the group's oldest buffer; a columns.AgeAtLeast (">=") when it existed before the view started
  creator   the oldest buffer's creator as `leaks` prints it (render_leaks.creator_label), "+N" other creators
  holders   every distinct holder in the group: pid(comm) by fd, "pid(comm) map" by mapping, and for buffers no
            process holds "no process: " the attached devices or "kernel reference"
  stack     the user frames innermost first, then " | " and the kernel frames: the code path that allocated
            reads first; a group without a stack says why ("existed before dmabuf-top started: no stack")

Cost: at 10,000 buffers in 6,700 groups (benchmarks/live.py's population: two in three buffers named apart), a
LeakReport (an object per buffer, a series per group) and a Row per group cost 0.57 s of CPU per refresh on the CI
host, thirty times the rest of the view (26 ms with the pane as it is). So a LeakTable keeps leaks.LeakColumns and
the per-group numbers as arrays, sorts the numeric columns on them, and builds Rows only for the groups asked for
(the screen's sixty) with their holders found in one pass over the inventory's holdings. A sort by a text column
makes that one column's text for every group, and a typed filter matches each column's texts (its numbers as
str() gives them) without a Row, which is what a Row's search text is made of: stack texts are kept across
refreshes by group key (KeyTexts), holders' labels and creators' states found once per pid. The order is
view.sort_rows's: by the key, ties by the row key (the group key's text) ascending.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..leaks import EXITED, KERNEL_REFERENCE, RUNNING, LeakColumns, pid_alive
from ..render_leaks import creator_label
from ..text import terminal_safe
from .buffer_table import RowList
from .columns import ASCENDING, AgeAtLeast, Row

NO_STACK_BEFORE = "existed before dmabuf-top started: no stack"
NO_STACK = "allocation stack not known"
# Every character str() of an int or a float can give (digits, sign, point, exponent, inf, nan).
_NUMBER_CHARS = frozenset("0123456789+-.einfa")
_TEXT_KEYS = ("creator", "holders", "stack")
_FD, _MAP, _KERNEL = 0, 1, 2  # a holder's kind, in the order a buffer's holders are said


def _stack_text(stack, key, all_preexisting: bool, creation) -> str:
    """The stack column's text of a group (stack: its allocation stack, None when grouped by exporter + size + name;
    creation: its oldest buffer's)."""
    if stack is None:
        exporter, size, name = key[1:]
        why = NO_STACK_BEFORE if all_preexisting else NO_STACK
        label = " ".join(part for part in (exporter or "?", terminal_safe(name, none="")) if part)
        return f"({why}) {label}"
    user = creation.user_stack if creation.kernel_frames is not None else ()
    kernel = stack[: creation.kernel_frames] if creation.kernel_frames is not None else stack
    text = " < ".join(terminal_safe(frame) for frame in user)
    if kernel:
        text += (" | " if text else "") + " < ".join(terminal_safe(frame) for frame in kernel)
    return text


class LeakTable:
    """One frame's Leaks pane over `table` (leaks.LeakColumns of the inventory whose InventoryArrays are
    `arrays`; the columns' positions are rows of arrays.columns). comms: {pid: comm bytes} of the holders.
    Iterating gives every Row in group order; `visible` gives the pane as shown."""

    def __init__(self, table: LeakColumns, arrays, comms: Mapping[int, bytes],
                 alive: Callable[[int], bool] = pid_alive, key_texts: Optional["KeyTexts"] = None):
        self._table, self._arrays, self._comms, self._alive = table, arrays, comms, alive
        starts, ends = table.starts, table.ends
        self.count = (ends - starts).astype(np.int64)
        self.bytes = np.add.reduceat(table.size, starts) if len(table) else np.zeros(0, np.int64)
        self.age = table.age_ns[starts] / 1e9
        self._growth: Optional[np.ndarray] = None  # every group's, only to sort or filter by it
        self._rows: Dict[int, Row] = {}
        self._ties: Optional[np.ndarray] = None
        self._key_texts = key_texts if key_texts is not None else KeyTexts()
        self._texts: Dict[str, List[str]] = {}  # a text column's every group's text, for a text sort or a filter
        self._all_holders: Optional[Dict[int, str]] = None  # every group's holders, once a filter needed them
        self._creator_labels: Dict[tuple, str] = {}  # (pid, comm) -> label: a creator's state read once
        self._labels: Dict[int, str] = {}  # holders' labels by pid

    def __len__(self):
        return len(self._table)

    def __iter__(self):
        return iter(self.rows(range(len(self))))

    # -- Rows, built on demand

    def rows(self, groups) -> List[Row]:
        groups = [int(group) for group in groups]
        missing = [group for group in groups if group not in self._rows]
        if missing:
            holders = self._all_holders if self._all_holders is not None else self._holders(missing)
            for group in missing:
                self._rows[group] = self._row(group, holders.get(group) or "-")
        return [self._rows[group] for group in groups]

    def _row(self, group, holders) -> Row:
        table = self._table
        start, end = int(table.starts[group]), int(self.count[group] + table.starts[group])
        age = float(self.age[group])
        values = {"buffers": int(self.count[group]), "bytes": int(self.bytes[group]),
                  "growth": table.growth(group)[1], "age": age if table.age_known[start] else AgeAtLeast(age),
                  "creator": self._creators([group])[0], "holders": holders,
                  "stack": self._stacks([group], [bool(table.preexisting[start:end].all())])[0]}
        extra = {"inodes": table.inode[start:end].tolist()}
        return Row(self._key_text(group), values, extra, None, " ".join(str(v) for v in values.values()).lower())

    def _creators(self, groups) -> List[str]:
        """Each group's oldest buffer's creator as `leaks` says it, "+N" for the other creators of the group."""
        table, creations, labels = self._table, self._table.creations, self._creator_labels
        groups = np.asarray(groups, dtype=np.intp)
        starts = table.starts[groups]
        out = []
        for start, count, inode, preexisting in zip(starts.tolist(), self.count[groups].tolist(),
                                                    table.inode[starts].tolist(), table.preexisting[starts].tolist()):
            creation = creations.get(inode)
            if creation is None:
                creator = creator_label(None, None, preexisting)
            else:
                creator = labels.get((creation.pid, creation.comm))
                if creator is None:  # one state and one label per creator
                    state = RUNNING if self._alive(creation.pid) else EXITED
                    creator = labels[(creation.pid, creation.comm)] = creator_label(creation, state, preexisting)
            if count > 1:
                others = set(table.creator_pid[start:start + count].tolist()) - {
                    -1, creation.pid if creation is not None else -1}
                if others:
                    creator += f" +{len(others)}"
            out.append(creator)
        return out

    def _stacks(self, groups, all_preexisting) -> List[str]:
        """Each group's stack text (all_preexisting: per group, whether all its buffers were there before the view
        started), kept across refreshes by its key and what else the text depends on."""
        table, texts = self._table, self._key_texts
        out = []
        for group, preexisting in zip(groups, all_preexisting):
            key = table.keys[group]
            if key[0] != "stack":
                out.append(texts.stack(key, preexisting, _stack_text, None, key, preexisting, None))
                continue
            creation = table.creations.get(int(table.inode[table.starts[group]]))  # where the stack splits
            out.append(texts.stack(key, creation and creation.kernel_frames,
                                   _stack_text, table.stack(group), key, preexisting, creation))
        return out

    def _key_text(self, group) -> str:
        return self._key_texts(self._table.keys[group])

    def _label(self, pid) -> str:
        label = self._labels.get(pid)
        if label is None:
            label = self._labels[pid] = f"{pid}({terminal_safe(self._comms.get(pid, b''), none='?')})"
        return label

    def _holders(self, groups: Sequence[int]) -> Dict[int, str]:
        """{group: its distinct holders in the order `leaks` meets them}: buffers oldest first, each buffer's fd
        holders by pid, then its mapping holders, then (held by no process) what the kernel holds it by. One
        pass over the holdings of the groups' buffers, whatever their number."""
        table, arrays = self._table, self._arrays
        if len(groups) == 0:  # no group yet (every buffer younger than --min-age): nothing to index by group
            return {}
        entries = len(table.inode)
        group_of = np.repeat(np.arange(len(table), dtype=np.intp), self.count)
        rank = np.arange(entries, dtype=np.int64) - table.starts[group_of]  # 0 for a group's oldest buffer
        wanted = np.zeros(len(table), dtype=bool)
        wanted[np.asarray(groups, dtype=np.intp)] = True
        entry_of_row = np.full(len(arrays.columns), -1, dtype=np.intp)
        entry_of_row[table.position] = np.arange(entries)
        entry = entry_of_row[arrays.pair_row]
        held = np.zeros(entries, dtype=bool)
        held[entry[entry >= 0]] = True
        entry = np.where(entry >= 0, entry, 0)
        ours = (entry_of_row[arrays.pair_row] >= 0) & wanted[group_of[entry]]
        parts = []
        for kind, counts in ((_FD, arrays.pair_fds), (_MAP, arrays.pair_maps)):
            chosen = entry[ours & (counts > 0)]
            pids = arrays.pair_pid[ours & (counts > 0)]
            parts.append((group_of[chosen], rank[chosen], np.full(len(chosen), kind), pids.astype(np.int64)))
        kernel_texts: List[str] = []
        orphans = np.flatnonzero(~held & wanted[group_of])
        if len(orphans):
            parts.append((group_of[orphans], rank[orphans], np.full(len(orphans), _KERNEL),
                          self._kernel_holds(orphans, kernel_texts)))
        group, order, kind, ident = (np.concatenate(column) for column in zip(*parts))
        # the first time each (group, holder) is met, then those in the order they were met
        by_holder = np.lexsort((order, ident, kind, group))
        group, order, kind, ident = group[by_holder], order[by_holder], kind[by_holder], ident[by_holder]
        first = np.ones(len(group), dtype=bool)
        first[1:] = (group[1:] != group[:-1]) | (kind[1:] != kind[:-1]) | (ident[1:] != ident[:-1])
        group, order, kind, ident = group[first], order[first], kind[first], ident[first]
        met = np.lexsort((ident, kind, order, group))
        said: Dict[int, List[str]] = {}
        for g, k, i in zip(group[met].tolist(), kind[met].tolist(), ident[met].tolist()):
            text = self._label(i) if k == _FD else self._label(i) + " map" if k == _MAP else kernel_texts[i]
            said.setdefault(g, []).append(text)
        return {g: " ".join(texts) for g, texts in said.items()}

    def _kernel_holds(self, orphans: np.ndarray, texts: List[str]) -> np.ndarray:
        """An index into `texts` per buffer no process holds: "no process: " its attached devices, or a kernel
        reference. Only buffers with attachments are decoded (their device names are in the record)."""
        columns = self._arrays.columns
        rows = self._table.position[orphans]
        attached = columns.attachment_counts()[rows] != 0  # -1: not known, decode to see
        numbering: Dict[str, int] = {}
        ids = np.full(len(orphans), -1, dtype=np.int64)
        reference = "no process: " + KERNEL_REFERENCE
        ids[~attached] = numbering.setdefault(reference, 0)
        where = np.flatnonzero(attached)
        for at, buffer in zip(where.tolist(), columns.pick(rows[where].tolist())):
            held_by = tuple(buffer.attached_devices) or (KERNEL_REFERENCE,)
            text = "no process: " + ", ".join(terminal_safe(what) for what in held_by)
            ids[at] = numbering.setdefault(text, len(numbering))
        texts.extend(numbering)
        return ids

    # -- The pane as shown

    def visible(self, key: str, reverse: bool = False, needle: str = "") -> RowList:
        candidates = np.arange(len(self))
        if needle:
            candidates = self._matching(needle.lower())
        return RowList(self, self.order(key, reverse, candidates))

    def _matching(self, needle: str) -> np.ndarray:
        """The groups whose Row's search text would contain `needle` (lower case), from each column's texts: the
        search text is the cells' values as str() says them, joined by spaces and lowered, so a needle without a
        space is in it when it is in one cell's text, and one with a space is looked for in the joined texts."""
        cells = []
        if set(needle) <= _NUMBER_CHARS or " " in needle:  # else no number's str() can hold it: skip the numbers
            cells = [list(map(str, self.count.tolist())), list(map(str, self.bytes.tolist())),
                     list(map(str, self._growths().tolist())), list(map(str, self.age.tolist()))]
        if " " in needle:
            cells += [self._lowered(key) for key in _TEXT_KEYS]
            found = [needle in " ".join(texts) for texts in zip(*cells)]
            return np.flatnonzero(np.array(found, dtype=bool)).astype(np.intp)
        hit = np.zeros(len(self), dtype=bool)
        for texts in cells + [self._column_texts(key) for key in _TEXT_KEYS]:
            hit[_containing(texts, needle)] = True
        return np.flatnonzero(hit).astype(np.intp)

    def _lowered(self, key: str) -> List[str]:
        lowered = self._texts.get(key + ".lower")
        if lowered is None:
            lowered = self._texts[key + ".lower"] = [text.lower() for text in self._column_texts(key)]
        return lowered

    def _column_texts(self, key: str) -> List[str]:
        """Every group's text in column `key` (creator, holders or stack), as its Row would say it."""
        texts = self._texts.get(key)
        if texts is None:
            groups = range(len(self))
            if key == "creator":
                texts = self._creators(groups)
            elif key == "holders":
                if self._all_holders is None:
                    self._all_holders = self._holders(groups)
                texts = [self._all_holders.get(group) or "-" for group in groups]
            else:
                table = self._table
                texts = self._stacks(groups, (np.logical_and.reduceat(table.preexisting, table.starts) if len(self)
                                              else np.zeros(0, dtype=bool)).tolist())
            self._texts[key] = texts
        return texts

    def order(self, key: str, reverse: bool, candidates: np.ndarray) -> np.ndarray:
        values = self._sort_column(key)[candidates]
        if (key not in ASCENDING) != reverse:
            values = -values
        return candidates[np.lexsort((self._tie_ranks()[candidates], values))]

    def _sort_column(self, key) -> np.ndarray:
        if key in _TEXT_KEYS:
            return _ranks(self._lowered(key))
        if key == "growth":
            return self._growths()
        return {"buffers": self.count, "bytes": self.bytes, "age": self.age}[key]

    def _growths(self) -> np.ndarray:
        if self._growth is None:
            self._growth = np.array([self._table.growth(group)[1] for group in range(len(self))], dtype=np.int64)
        return self._growth

    def _tie_ranks(self) -> np.ndarray:
        if self._ties is None:
            self._ties = self._key_texts.ranks(self._table.keys)
        return self._ties


class KeyTexts:
    """A group key's text (the Row key, and the tie order) and its stack column's text, kept across refreshes: the
    groups of one refresh are mostly the last one's, and at 6,700 groups making their texts and ranking them was
    half the pane's cost (the stack texts: most of a typed filter's)."""

    def __init__(self, limit: int = 100_000):
        self._texts: Dict[tuple, str] = {}
        self._stacks: Dict[tuple, str] = {}
        self._limit = limit
        self._ranked: Optional[tuple] = None  # (keys, their ranks) of the last ranking

    def stack(self, key, depends, make: Callable[..., str], *args) -> str:
        """The stack text of the group with this key, made by make(*args) the first time (depends: whatever else
        the text depends on)."""
        text = self._stacks.get((key, depends))
        if text is None:
            if len(self._stacks) >= self._limit:
                self._stacks.clear()
            text = self._stacks[(key, depends)] = make(*args)
        return text

    def __call__(self, key) -> str:
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) >= self._limit:  # churning groups: start again rather than grow without bound
                self._texts.clear()
            text = self._texts[key] = " ".join(str(part) for part in key)
        return text

    def ranks(self, keys: List[tuple]) -> np.ndarray:
        """Each key's place in the order of the texts (the same keys as last time: the same ranks)."""
        if self._ranked is not None and self._ranked[0] == keys:
            return self._ranked[1]
        ranks = _ranks([self(key) for key in keys])
        self._ranked = (keys, ranks)
        return ranks


def _containing(texts: List[str], needle: str) -> np.ndarray:
    """The indices of the texts that contain `needle` (lower case, no line break) once lowered: one search through
    all of them joined by line breaks (no match can cross one), not a test per text."""
    joined = "\n".join(texts)
    if not joined.isascii():  # lowering may change a text's length: offsets would not map back to texts
        return np.array([at for at, text in enumerate(texts) if needle in text.lower()], dtype=np.intp)
    ends = np.cumsum(np.fromiter((len(text) + 1 for text in texts), dtype=np.int64, count=len(texts)))
    starts = np.fromiter((match.start() for match in re.finditer(re.escape(needle), joined.lower())), dtype=np.int64)
    return np.unique(np.searchsorted(ends, starts, side="right")).astype(np.intp)  # a text may match twice


def _ranks(texts: List[str]) -> np.ndarray:
    """Each text's place in sorted order (equal texts share one)."""
    rank = {text: number for number, text in enumerate(sorted(set(texts)))}
    return np.array([rank[text] for text in texts], dtype=np.int64)

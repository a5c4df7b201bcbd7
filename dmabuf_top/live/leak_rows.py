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
str() gives them) without a Row, which is what a Row's search text is made of. Those texts are kept across
refreshes (KeyTexts), each by what it is made of, so that nothing kept is shown stale: a stack text by the group
key and where its stack splits or whether it predates the view, a holders text (HolderTexts) while the group's
holders, their order and their comms are those of the last refresh, a creator's label by pid, comm and state (read
once per refresh); and a filter's answer per column while its texts are the very ones it searched. With a filter
typed at 10,000 buffers that took the pane from 2.2x the rest of the view to 1.5x (benchmarks/README.md). The
order is view.sort_rows's: by the key, ties by the row key (the group key's text) ascending.
"""
from __future__ import annotations

import operator
import re
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

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
# The creator of a group whose oldest buffer has no creation, by whether that buffer was there before the view.
_NO_CREATION = np.array([creator_label(None, None, False), creator_label(None, None, True)], dtype=object)
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
        self._states: Dict[int, str] = {}  # creators' states by pid: read once per refresh
        self._labels: Dict[int, str] = {}  # holders' labels by pid
        self._group_of: Optional[np.ndarray] = None  # each entry's group
        self._others: Optional[np.ndarray] = None  # each group's creators other than its oldest buffer's
        self._preexisting: Optional[np.ndarray] = None  # each group's: all its buffers there before the view

    def __len__(self):
        return len(self._table)

    def __iter__(self):
        return iter(self.rows(range(len(self))))

    # -- Rows, built on demand

    def rows(self, groups) -> List[Row]:
        groups = [int(group) for group in groups]
        missing = [group for group in groups if group not in self._rows]
        if missing:
            cells = {key: self._cells(key, missing) for key in _TEXT_KEYS}
            for group in missing:
                self._rows[group] = self._row(group, {key: texts[group] for key, texts in cells.items()})
        return [self._rows[group] for group in groups]

    def _row(self, group, texts: Mapping[str, str]) -> Row:
        """The Row of a group whose text columns say `texts`."""
        table = self._table
        start, end = int(table.starts[group]), int(self.count[group] + table.starts[group])
        age = float(self.age[group])
        values = {"buffers": int(self.count[group]), "bytes": int(self.bytes[group]),
                  "growth": table.growth(group)[1], "age": age if table.age_known[start] else AgeAtLeast(age),
                  "creator": texts["creator"], "holders": texts["holders"], "stack": texts["stack"]}
        extra = {"inodes": table.inode[start:end].tolist()}
        return Row(self._key_text(group), values, extra, None, " ".join(str(v) for v in values.values()).lower())

    def _cells(self, key: str, groups: List[int]):
        """Column `key`'s text (creator, holders or stack) of each of the groups, by group: every group's when a
        filter or a text sort made them, else made for these groups only, in one pass."""
        every = self._texts.get(key)
        if every is not None:
            return every
        if key == "holders":
            said = self._holders(groups)
            return {group: said.get(group) or "-" for group in groups}
        if key == "creator":
            return dict(zip(groups, self._creators(groups)))
        return dict(zip(groups, self._stacks(groups)))

    def _all_preexisting(self) -> np.ndarray:
        """Per group, whether all its buffers were there before the view started."""
        if self._preexisting is None:
            table = self._table
            self._preexisting = (np.logical_and.reduceat(table.preexisting, table.starts) if len(self)
                                 else np.zeros(0, dtype=bool))
        return self._preexisting

    def _creators(self, groups) -> List[str]:
        """Each group's oldest buffer's creator as `leaks` says it, "+N" for the other creators of the group. A
        group whose oldest buffer has no creation (most, on a system older than the view) is said without a look-up;
        a creator's label is kept across refreshes by what it is made of (pid, comm, state), its state read once
        per refresh."""
        table = self._table
        groups = np.asarray(groups, dtype=np.intp)
        starts = table.starts[groups]
        out = _NO_CREATION[table.preexisting[starts].astype(np.intp)]  # a new object array
        for at in np.flatnonzero(table.creator_pid[starts] != -1).tolist():
            creation = table.creations[int(table.inode[starts[at]])]
            state = self._states.get(creation.pid)
            if state is None:
                state = self._states[creation.pid] = RUNNING if self._alive(creation.pid) else EXITED
            out[at] = self._key_texts.creator(creation, state, bool(table.preexisting[starts[at]]))
        others = self._other_creators()[groups]
        for at in np.flatnonzero(others).tolist():
            out[at] += f" +{others[at]}"
        return out.tolist()

    def _other_creators(self) -> np.ndarray:
        """Per group, how many distinct creators its buffers have besides its oldest buffer's."""
        if self._others is None:
            table, group_of = self._table, self._entry_groups()
            pid = table.creator_pid
            other = (pid != -1) & (pid != pid[table.starts][group_of])
            group, pid = group_of[other], pid[other]
            order = np.lexsort((pid, group))
            group, pid = group[order], pid[order]
            first = np.ones(len(group), dtype=bool)
            first[1:] = (group[1:] != group[:-1]) | (pid[1:] != pid[:-1])
            self._others = np.bincount(group[first], minlength=len(table)).astype(np.int64)
        return self._others

    def _entry_groups(self) -> np.ndarray:
        if self._group_of is None:
            self._group_of = np.repeat(np.arange(len(self._table), dtype=np.intp), self.count)
        return self._group_of

    def _stacks(self, groups: Optional[Sequence[int]] = None) -> List[str]:
        """The stack text of each of the groups (None: of every group), kept across refreshes by its key and what
        else the text depends on: whether all the group's buffers were there before the view started (a group by
        exporter + size + name), or where its oldest buffer's stack splits into kernel and user frames (by stack)."""
        table, every = self._table, groups is None
        groups = np.arange(len(table), dtype=np.intp) if every else np.asarray(groups, dtype=np.intp)
        keys = table.keys if every else list(map(table.keys.__getitem__, groups.tolist()))
        all_preexisting = (self._all_preexisting() if every else self._all_preexisting()[groups]).tolist()
        depends = list(all_preexisting)
        starts = table.starts[groups]
        creations: Dict[int, object] = {}
        for at in np.flatnonzero(table.creator_pid[starts] != -1).tolist():  # only these can be grouped by stack
            if keys[at][0] == "stack":  # where its oldest buffer's stack splits into kernel and user frames
                creation = creations[at] = table.creations.get(int(table.inode[starts[at]]))
                depends[at] = creation and creation.kernel_frames

        def make(at):
            stack = table.stack(int(groups[at]))
            return _stack_text(stack, keys[at], all_preexisting[at], creations.get(at))

        return self._key_texts.stacks(keys, depends, make)

    def _key_text(self, group) -> str:
        return self._key_texts(self._table.keys[group])

    def _label(self, pid) -> str:
        label = self._labels.get(pid)
        if label is None:
            label = self._labels[pid] = f"{pid}({terminal_safe(self._comms.get(pid, b''), none='?')})"
        return label

    def _holders(self, groups: Sequence[int]) -> Dict[int, str]:
        """{group: its distinct holders in the order `leaks` meets them}, made afresh (the rows shown)."""
        return self._say(*self._said(groups))

    def _every_holders(self) -> List[str]:
        """Every group's holders text ("-": none), each kept from an earlier refresh when what it says is the same
        (KeyTexts.holders)."""
        group, kind, ident = self._said(range(len(self)))
        oldest = self._table.inode[self._table.starts]
        return self._key_texts.holders.texts(oldest, group, kind, ident, self._comms,
                                             lambda chosen: self._say(group[chosen], kind[chosen], ident[chosen]))

    def _say(self, group: np.ndarray, kind: np.ndarray, ident: np.ndarray) -> Dict[int, str]:
        """{group: its holders' labels joined} of _said's arrays."""
        kernel_texts = self._key_texts.holders.kernel_texts
        said: Dict[int, List[str]] = {}
        for g, k, i in zip(group.tolist(), kind.tolist(), ident.tolist()):
            text = self._label(i) if k == _FD else self._label(i) + " map" if k == _MAP else kernel_texts[i]
            said.setdefault(g, []).append(text)
        return {g: " ".join(texts) for g, texts in said.items()}

    def _said(self, groups: Sequence[int]):
        """(group, kind, ident) of each distinct holder of the groups, in the order `leaks` meets them: by group,
        its buffers oldest first, each buffer's fd holders by pid, then its mapping holders, then (held by no
        process) what the kernel holds it by. ident: a pid, or for _KERNEL the text's number
        (KeyTexts.holders.kernel_texts). One pass over the holdings of the groups' buffers, whatever their number."""
        table, arrays = self._table, self._arrays
        if len(groups) == 0:  # no group yet (every buffer younger than --min-age): nothing to index by group
            return (np.zeros(0, dtype=np.intp),) * 3
        self._key_texts.holders.begin()
        entries = len(table.inode)
        group_of = self._entry_groups()
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
        orphans = np.flatnonzero(~held & wanted[group_of])
        if len(orphans):
            parts.append((group_of[orphans], rank[orphans], np.full(len(orphans), _KERNEL),
                          self._kernel_holds(orphans)))
        group, order, kind, ident = (np.concatenate(column) for column in zip(*parts))
        # the first time each (group, holder) is met, then those in the order they were met
        by_holder = np.lexsort((order, ident, kind, group))
        group, order, kind, ident = group[by_holder], order[by_holder], kind[by_holder], ident[by_holder]
        first = np.ones(len(group), dtype=bool)
        first[1:] = (group[1:] != group[:-1]) | (kind[1:] != kind[:-1]) | (ident[1:] != ident[:-1])
        group, order, kind, ident = group[first], order[first], kind[first], ident[first]
        met = np.lexsort((ident, kind, order, group))
        return group[met], kind[met], ident[met]

    def _kernel_holds(self, orphans: np.ndarray) -> np.ndarray:
        """Per buffer no process holds, the number (KeyTexts.holders.kernel_texts) of its text: "no process: " its
        attached devices, or a kernel reference. Only buffers with attachments are decoded (their device names are
        in the record)."""
        columns, number = self._arrays.columns, self._key_texts.holders.kernel_number
        rows = self._table.position[orphans]
        attached = columns.attachment_counts()[rows] != 0  # -1: not known, decode to see
        ids = np.full(len(orphans), number("no process: " + KERNEL_REFERENCE), dtype=np.int64)
        where = np.flatnonzero(attached)
        for at, buffer in zip(where.tolist(), columns.pick(rows[where].tolist())):
            held_by = tuple(buffer.attached_devices) or (KERNEL_REFERENCE,)
            ids[at] = number("no process: " + ", ".join(terminal_safe(what) for what in held_by))
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
        for texts in cells:
            hit[_containing(texts, needle)] = True
        for key in _TEXT_KEYS:
            hit[self._key_texts.found(key, self._column_texts(key), needle)] = True
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
            groups = np.arange(len(self))
            if key == "creator":
                texts = self._creators(groups)
            elif key == "holders":
                texts = self._every_holders()
            else:
                texts = self._stacks()
            self._texts[key] = texts
        return texts

    def order(self, key: str, reverse: bool, candidates: np.ndarray) -> np.ndarray:
        values = self._sort_column(key)[candidates]
        if (key not in ASCENDING) != reverse:
            values = -values
        return candidates[np.lexsort((self._tie_ranks()[candidates], values))]

    def _sort_column(self, key) -> np.ndarray:
        if key in _TEXT_KEYS:
            return self._key_texts.ranked(key, self._column_texts(key), lambda: _ranks(self._lowered(key)))
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
    """A group key's text (the Row key, and the tie order), its stack column's text, its holders' (HolderTexts) and
    its creator's label, kept across refreshes, each by what it is made of: the groups of one refresh are mostly the
    last one's, and at 6,700 groups making their texts and ranking them was half the pane's cost (the stack, holder
    and creator texts: most of a typed filter's)."""

    def __init__(self, limit: int = 100_000):
        self._texts: Dict[tuple, str] = {}
        self._stacks: Dict[tuple, str] = {}
        self._creators: Dict[tuple, str] = {}
        self._limit = limit
        self._ranked: Optional[tuple] = None  # (keys, their ranks) of the last ranking
        self._last_stacks: Optional[tuple] = None  # (keys, depends, texts) of the last stacks()
        self._found: Dict[str, tuple] = {}  # column -> (texts, needle, places) of its last search
        self._column_ranks: Dict[str, tuple] = {}  # column -> (texts, ranks) of its last text sort
        self.holders = HolderTexts(limit)

    def creator(self, creation, state: str, preexisting: bool) -> str:
        """render_leaks.creator_label of a creation (not None) in this state, by (pid, comm, state, preexisting)."""
        key = (creation.pid, creation.comm, state, preexisting)
        text = self._creators.get(key)
        if text is None:
            if len(self._creators) >= self._limit:
                self._creators.clear()
            text = self._creators[key] = creator_label(creation, state, preexisting)
        return text

    def stacks(self, keys: List[tuple], depends: list, make: Callable[[int], str]) -> List[str]:
        """The stack texts of the groups with these keys (depends: per group, whatever else its text depends on),
        each made by make(its place in keys) the first time: the last list again when keys and depends are the last
        ones, else one look-up per group and no call (a filter asks for every group's)."""
        last = self._last_stacks
        if last is not None and last[1] == depends and last[0] == keys:
            return last[2]
        texts = self._stacks
        wanted = list(zip(keys, depends))
        out = list(map(texts.get, wanted))
        if None in out:
            for at in [at for at, text in enumerate(out) if text is None]:
                if len(texts) >= self._limit:
                    texts.clear()
                out[at] = texts[wanted[at]] = make(at)
        self._last_stacks = (keys, depends, out)
        return out

    def found(self, column: str, texts: List[str], needle: str) -> np.ndarray:
        """The places of the texts that contain `needle` (_containing): the last answer in this column again when
        asked with the needle and the very texts of then (the same objects, as kept texts are: the same content)."""
        last = self._found.get(column)
        if last is not None and last[1] == needle and _same_objects(texts, last[0]):
            return last[2]
        hit = _containing(texts, needle)
        hit.flags.writeable = False  # shared with the next refreshes
        self._found[column] = (texts, needle, hit)
        return hit

    def ranked(self, column: str, texts: List[str], rank: Callable[[], np.ndarray]) -> np.ndarray:
        """The ranks rank() gives the texts of a column sorted by: the last ones of this column again when its
        texts are the very ones of then."""
        last = self._column_ranks.get(column)
        if last is not None and _same_objects(texts, last[0]):
            return last[1]
        ranks = rank()
        ranks.flags.writeable = False  # shared with the next refreshes
        self._column_ranks[column] = (texts, ranks)
        return ranks

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


class _Said(NamedTuple):
    """The holders texts of one refresh and what they were made of (HolderTexts.texts' arguments)."""

    sorted_oldest: np.ndarray  # each group's oldest inode, ascending
    order: np.ndarray  # the group of each of them
    starts: np.ndarray  # where each group's holders start in kind and ident
    lengths: np.ndarray  # how many holders each group has
    kind: np.ndarray
    ident: np.ndarray
    texts: np.ndarray  # object: each group's text
    comms: Dict[int, bytes]


class HolderTexts:
    """Every group's holders text, kept from the last refresh that made them all (a typed filter, a sort by
    holders): a group is said again only when what its text is made of changed. A group is known again by its
    oldest buffer's inode, and its text taken again when its holders are those of then, in the same order (kind,
    pid or kernel text: LeakTable._said's arrays) and none of their pids has another comm now; so a holder gone,
    added or moved, a buffer freed, a process renamed or an orphan's devices changed make the group's text anew,
    from the same sanitising code."""

    def __init__(self, limit: int = 100_000):
        self._limit = limit
        self._numbers: Dict[str, int] = {}  # a kernel holder's text -> its number while kept
        self.kernel_texts: List[str] = []
        self._last: Optional[_Said] = None  # the last refresh's, when it said every group

    def begin(self) -> None:
        """Before a pass numbers kernel texts: a churn of device names starts the numbering again (and then nothing
        said before is taken again); never in the middle of a pass, whose numbers index kernel_texts."""
        if len(self.kernel_texts) >= self._limit:
            self._numbers.clear(), self.kernel_texts.clear()
            self._last = None

    def kernel_number(self, text: str) -> int:
        number = self._numbers.get(text)
        if number is None:
            number = self._numbers[text] = len(self.kernel_texts)
            self.kernel_texts.append(text)
        return number

    def texts(self, oldest: np.ndarray, group: np.ndarray, kind: np.ndarray, ident: np.ndarray,
              comms: Mapping[int, bytes], say: Callable[[np.ndarray], Dict[int, str]]) -> List[str]:
        """Every group's text ("-": no holder), given each group's oldest inode and its holders as said (group,
        kind, ident: ordered by group); say(entries) makes the texts of the groups of those entries."""
        count = len(oldest)
        lengths = np.bincount(group, minlength=count)
        starts = np.cumsum(lengths) - lengths
        out = np.full(count, "-", dtype=object)
        same, was = self._unchanged(oldest, group, kind, ident, comms, lengths, starts)
        if same.any():
            out[same] = self._last.texts[was[same]]
        for g, text in say(np.flatnonzero(~same[group])).items():
            out[g] = text
        order = np.argsort(oldest, kind="stable")
        self._last = _Said(oldest[order], order, starts, lengths, kind, ident, out, dict(comms))
        return out.tolist()

    def _unchanged(self, oldest, group, kind, ident, comms, lengths, starts) -> Tuple[np.ndarray, np.ndarray]:
        """(per group: whether the last refresh said a group with the same oldest buffer, the same holders in the
        same order and the same comms for them, so that its text can be taken again; which group it was then)."""
        same = np.zeros(len(oldest), dtype=bool)
        last = self._last
        if last is None or len(last.sorted_oldest) == 0:
            return same, None
        at = np.minimum(np.searchsorted(last.sorted_oldest, oldest), len(last.sorted_oldest) - 1)
        was = last.order[at]
        same = (last.sorted_oldest[at] == oldest) & (last.lengths[was] == lengths) & (lengths > 0)
        entries = np.flatnonzero(same[group])
        then = last.starts[was[group[entries]]] + entries - starts[group[entries]]
        differ = (last.kind[then] != kind[entries]) | (last.ident[then] != ident[entries])
        same[group[entries[differ]]] = False
        renamed = [pid for pid in comms.keys() | last.comms.keys() if comms.get(pid) != last.comms.get(pid)]
        if renamed:
            by_pid = (kind != _KERNEL) & np.isin(ident, np.array(renamed, dtype=np.int64))
            same[group[by_pid]] = False
        return same, was


def _same_objects(texts: List[str], then: List[str]) -> bool:
    """Whether the texts are the very objects of then, in the same places (so the same content, found cheaply)."""
    return texts is then or len(texts) == len(then) and all(map(operator.is_, texts, then))


def _containing(texts: List[str], needle: str) -> np.ndarray:
    """The indices of the texts that contain `needle` (lower case, no line break) once lowered: one search through
    all of them joined by line breaks (no match can cross one), not a test per text."""
    joined = "\n".join(texts)
    if not joined.isascii():  # lowering may change a text's length: offsets would not map back to texts
        return np.array([at for at, text in enumerate(texts) if needle in text.lower()], dtype=np.intp)
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    starts = np.fromiter((match.start() for match in re.finditer(re.escape(needle), joined.lower())), dtype=np.int64)
    return np.unique(np.searchsorted(ends, starts, side="right")).astype(np.intp)  # a text may match twice


def _ranks(texts: List[str]) -> np.ndarray:
    """Each text's place in sorted order (equal texts share one)."""
    rank = {text: number for number, text in enumerate(sorted(set(texts)))}
    return np.array([rank[text] for text in texts], dtype=np.int64)

"""The Buffers pane as columns: ten thousand buffers sorted and filtered on arrays, Rows built only when shown.

At 10,000 buffers, a Row per buffer per refresh (a dict of values, an escaped
name, a holders string, a search string) was most of what the live view cost:
2.5 s of CPU per refresh on the lab's emulated CPU. The screen shows sixty of
them. So the pane is kept as the inventory's arrays (inode, size, exporter code,
attachments, holdings) plus one float array per I/O rate column (NaN: no rate
yet), and

  - sorting needs a key for every row: numeric keys are sorted as arrays; text
    keys (exporter, name, holders) are built for every row only when one of
    them is the sort key, and then ranked;
  - filtering needs every row's search text: built only while a filter is set;
  - a Row (what screen.py and jsonout.py format) is built only for the rows
    asked for: the visible ones on screen, every one for --json or -C.

The order is the one view.sort_rows gives a list of Rows (tests/unit compare
the two for every sort key, direction and filter): known values by the key, ties
by inode ascending, rows without a value (None: no rate yet) last, by inode.
Only stable numpy sorts are used (see inventory.stable_groups for why).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..inventory.types import Refs
from ..text import terminal_safe
from .columns import ASCENDING, IO_COLUMNS, Row, exporter_search_text

# Sort keys held as arrays; the others (exporter, name, holders) are text.
_NUMERIC = ("inode", "size", "attachments", *IO_COLUMNS)


class NameCache:
    """Raw name -> terminal-safe text, kept across refreshes (names rarely change; escaping is per character)."""

    def __init__(self, limit: int = 100_000):
        self._safe: Dict[Optional[bytes], str] = {}
        self._limit = limit

    def __call__(self, raw):
        safe = self._safe.get(raw)
        if safe is None:
            if len(self._safe) >= self._limit:  # churning names: start again rather than grow without bound
                self._safe.clear()
            safe = self._safe[raw] = terminal_safe(raw)
        return safe


class BufferTable:
    """One frame's Buffers pane. Table rows 0..live-1 are the buffers in `selection` (rows of the
    inventory's columns, ascending); the freed buffers' Rows (from the previous frame) follow.

    io: {I/O column: float64 array over the live rows, NaN where there is no rate};
    path_rates: {inode: per-path rates for JSON} for the buffers with traced I/O;
    new: bool array over the live rows; labels: {pid: "pid(comm)"}.
    Iterating gives every Row in table order; `visible` gives the pane as shown.
    """

    def __init__(self, arrays, selection, io: Mapping[str, np.ndarray], new: np.ndarray,
                 path_rates: Mapping[int, Optional[dict]], labels: Mapping[int, str], names: NameCache,
                 freed: Sequence[Row] = ()):
        self._arrays = arrays
        self._columns = arrays.columns
        self._selection = selection
        self.inode = self._columns.inode[selection]
        self._io = io
        self._new = new
        self._path_rates = path_rates
        self._labels = labels
        self._names = names
        self.freed = list(freed)
        self._rows: Dict[int, Row] = {}
        self._raw_names: Optional[list] = None
        self._holders_text: Optional[List[str]] = None
        self._live_search: Optional[List[str]] = None
        self._text_keys: Dict[str, tuple] = {}  # sort key -> (uint64 ranks, known) over the live rows
        self._all_refs: Optional[List[Dict[int, Refs]]] = None
        self._pairs_by_row = None

    def inherit_text(self, previous: Optional["BufferTable"]) -> None:
        """Take the previous frame's per-row texts (names, holders, search) when nothing they are made of
        changed: the same records, the same holdings, the same process names. The usual case from one
        refresh to the next, and what a typed filter would otherwise rebuild every second."""
        if previous is None or previous._labels != self._labels or not np.array_equal(previous._selection,
                                                                                       self._selection):
            return
        mine, theirs = self._arrays, previous._arrays
        if mine.columns.records() is None or mine.columns.records() != theirs.columns.records():
            return
        if not (np.array_equal(mine.pair_pid, theirs.pair_pid) and np.array_equal(mine.pair_row, theirs.pair_row)):
            return
        self._raw_names, self._holders_text = previous._raw_names, previous._holders_text
        self._live_search = previous._live_search
        self._text_keys = previous._text_keys

    @property
    def live(self) -> int:
        return len(self._selection)

    def __len__(self):
        return self.live + len(self.freed)

    def __iter__(self):
        return iter(self.rows(range(len(self))))

    # -- Rows, built on demand

    def rows(self, indices) -> List[Row]:
        indices = [int(i) for i in indices]
        missing = [i for i in indices if i < self.live and i not in self._rows]
        if len(missing) > 64 and self._all_refs is None:  # many rows (--json, -C): every holding in one pass
            self._all_refs = self._refs_of_every_row()
        if missing:
            buffers = self._columns.pick(self._selection[missing].tolist())
            for i, buffer in zip(missing, buffers):
                self._rows[i] = self._live_row(i, buffer)
        return [self._rows[i] if i < self.live else self.freed[i - self.live] for i in indices]

    def _live_row(self, i, buffer) -> Row:
        inode = buffer.inode
        refs = self._all_refs[i] if self._all_refs is not None else self._refs(int(self._selection[i]))
        holders = self._holders_line(refs)
        name = self._names(buffer.name)
        values = {"inode": inode, "exporter": buffer.exporter, "size": buffer.size,
                  "attachments": buffer.attachment_count, "holders": holders, "name": name}
        for column in IO_COLUMNS:
            value = self._io[column][i]
            values[column] = None if value != value else float(value)  # NaN: no rate
        extra = {"name_raw": buffer.name, "holder_refs": refs, "paths": self._path_rates.get(inode)}
        return Row(inode, values, extra, "new" if self._new[i] else None,
                   _search_text(inode, buffer.exporter, name, holders))

    def _holders_line(self, refs) -> str:
        return " ".join([self._labels.get(pid) or f"{pid}(?)" for pid in refs])

    def _refs_of_every_row(self) -> List[Dict[int, Refs]]:
        refs: List[Dict[int, Refs]] = [{} for _ in range(self.live)]
        a = self._arrays
        for pid, row, fds, maps in zip(a.pair_pid.tolist(), self._position()[a.pair_row].tolist(),
                                       a.pair_fds.tolist(), a.pair_maps.tolist()):
            if row >= 0:
                refs[row][pid] = Refs(fds, maps)  # pids ascending, as the pairs are sorted
        return refs

    def _position(self) -> np.ndarray:
        """Table row of each row of the columns (-1: not selected)."""
        position = np.full(len(self._columns), -1, dtype=np.intp)
        position[self._selection] = np.arange(self.live)
        return position

    def _refs(self, source_row) -> Dict[int, Refs]:
        """{pid: Refs} of one buffer, pids ascending (the pairs are sorted by pid, then row)."""
        order, rows = self._by_row()
        low, high = np.searchsorted(rows, source_row, "left"), np.searchsorted(rows, source_row, "right")
        pairs = order[low:high]
        a = self._arrays
        return dict(zip(a.pair_pid[pairs].tolist(), map(Refs, a.pair_fds[pairs].tolist(), a.pair_maps[pairs].tolist())))

    def _by_row(self):
        if self._pairs_by_row is None:
            order = np.argsort(self._arrays.pair_row, kind="stable")
            self._pairs_by_row = (order, self._arrays.pair_row[order])
        return self._pairs_by_row

    # -- Every row's text, built only when a sort or a filter needs it

    def raw_names(self) -> list:
        if self._raw_names is None:
            every = self._columns.names()
            self._raw_names = [every[row] for row in self._selection.tolist()]
        return self._raw_names

    def holders_text(self) -> List[str]:
        if self._holders_text is None:
            pids: List[List[int]] = [[] for _ in range(self.live)]
            for pid, row in zip(self._arrays.pair_pid.tolist(), self._position()[self._arrays.pair_row].tolist()):
                if row >= 0:
                    pids[row].append(pid)
            labels = self._labels
            self._holders_text = [" ".join([labels.get(pid) or f"{pid}(?)" for pid in held]) for held in pids]
        return self._holders_text

    def _exporter_names(self) -> list:
        names = self._columns.exporters
        return [names[code] for code in self._columns.exporter_code[self._selection].tolist()]

    def search_text(self) -> List[str]:
        if self._live_search is None:
            names = self._names
            self._live_search = [_search_text(inode, exporter, names(raw), holders) for inode, exporter, raw, holders
                                 in zip(self.inode.tolist(), self._exporter_names(), self.raw_names(),
                                        self.holders_text())]
        return self._live_search + [row.search for row in self.freed]

    # -- The pane as shown

    def visible(self, key: str, reverse: bool = False, needle: str = "") -> "RowList":
        candidates = np.arange(len(self))
        if needle:
            needle = needle.lower()
            candidates = np.array([i for i, text in enumerate(self.search_text()) if needle in text], dtype=np.intp)
        return RowList(self, self.order(key, reverse, candidates))

    def order(self, key: str, reverse: bool, candidates: np.ndarray) -> np.ndarray:
        values, known = self._sort_column(key)
        tie = self._ties()
        descending = (key not in ASCENDING) != reverse
        with_value = candidates[known[candidates]]
        without = candidates[~known[candidates]]
        ranked = values[with_value]
        if descending:
            ranked = ~ranked if ranked.dtype == np.uint64 else -ranked
        with_value = with_value[np.lexsort((tie[with_value], ranked))]
        without = without[np.argsort(tie[without], kind="stable")]
        return np.concatenate((with_value, without))

    def _ties(self) -> np.ndarray:
        return np.concatenate((self.inode.astype(np.uint64),
                               np.array([row.key for row in self.freed], dtype=np.uint64)))

    def _sort_column(self, key):
        """(values over every table row, known mask): uint64 or float64 for numbers, uint64 ranks for text."""
        freed = [row.values.get(key) for row in self.freed]
        if key in _NUMERIC:
            if key in IO_COLUMNS:
                live = self._io[key]
                values = np.concatenate((live, np.array([np.nan if v is None else v for v in freed], dtype=np.float64)))
                return values, ~np.isnan(values)
            if key == "attachments":
                live = self._columns.attachment_counts()[self._selection]
            elif key == "size":
                live = self._columns.size[self._selection].astype(np.int64)
            else:
                live = self.inode.astype(np.int64)
            values = np.concatenate((live, np.array([-1 if v is None else v for v in freed], dtype=np.int64)))
            known = values >= 0
            return np.where(known, values, 0).astype(np.uint64), known
        if not freed and key in self._text_keys:
            return self._text_keys[key]
        if key == "exporter":
            texts = self._exporter_names()
        elif key == "name":
            texts = [self._names(raw) for raw in self.raw_names()]
        elif key == "holders":
            texts = list(self.holders_text())
        else:
            raise KeyError(key)
        texts += freed
        lowered = [None if text is None else text.lower() for text in texts]
        rank = {text: number for number, text in enumerate(sorted({t for t in lowered if t is not None}))}
        known = np.array([text is not None for text in lowered], dtype=bool)
        ranked = np.array([rank.get(text, 0) for text in lowered], dtype=np.uint64), known
        if not freed:  # ranks over the live rows alone are kept for the next frame
            self._text_keys[key] = ranked
        return ranked


def _search_text(inode, exporter, name, holders) -> str:
    return f"{inode} {exporter_search_text(exporter) if exporter else ''} {name} {holders}".lower()


class RowList(Sequence):
    """The rows of a pane in display order; a Row is built only when it is read."""

    def __init__(self, table: BufferTable, order: np.ndarray):
        self._table = table
        self.order = order

    def __len__(self):
        return len(self.order)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._table.rows(self.order[index].tolist())
        return self._table.rows([self.order[index]])[0]

    def __iter__(self):
        return iter(self._table.rows(self.order.tolist()))

"""The live view's state and what it selects: pane, sort, filter (what the keys change). Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .buffer_table import BufferTable
from .columns import ASCENDING, COLUMNS, DEFAULT_SORT, PANES, Row, sort_keys
from .leak_rows import LeakTable
from .model import Frame


@dataclass
class ViewState:
    pane: str = "buffers"
    sort: Dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SORT))
    reverse: Dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PANES, False))
    filter: str = ""
    paused: bool = False
    scroll: int = 0
    editing_filter: Optional[str] = None  # the text being typed after '/', None when not typing
    max_rows: Optional[int] = None

    def set_sort(self, key):
        """-s KEY: every pane that has the column sorts by it."""
        if key not in sort_keys():
            raise ValueError(key)
        for pane in PANES:
            if any(c.key == key for c in COLUMNS[pane]):
                self.sort[pane] = key

    def move_sort(self, step):
        columns = COLUMNS[self.pane]
        index = next(i for i, c in enumerate(columns) if c.key == self.sort[self.pane])
        self.sort[self.pane] = columns[(index + step) % len(columns)].key
        self.scroll = 0

    def next_pane(self, step=1):
        self.pane = PANES[(PANES.index(self.pane) + step) % len(PANES)]
        self.scroll = 0


def visible_rows(frame: Frame, view: ViewState) -> Sequence[Row]:
    """The current pane's rows, filtered then sorted (None values last in either direction). The
    Buffers and Leaks panes' are a buffer_table.RowList: their Rows are built only when read."""
    rows = frame.rows[view.pane]
    if isinstance(rows, (BufferTable, LeakTable)):
        return rows.visible(view.sort[view.pane], view.reverse[view.pane], view.filter)
    if view.filter:
        needle = view.filter.lower()
        rows = [row for row in rows if needle in row.search]
    return sort_rows(rows, view.sort[view.pane], view.reverse[view.pane])


def sort_rows(rows: Sequence[Row], key: str, reverse: bool = False) -> List[Row]:
    """Known values by `key` (text without case), ties by the row key ascending so the order is stable
    from frame to frame; rows without a value last, by row key. buffer_table.BufferTable.order gives
    the same order on arrays."""
    descending = key not in ASCENDING
    if reverse:
        descending = not descending
    known = [row for row in rows if row.values.get(key) is not None]
    unknown = [row for row in rows if row.values.get(key) is None]
    text = bool(known) and isinstance(known[0].values[key], str)
    known.sort(key=_tie)
    known.sort(key=(lambda row: row.values[key].lower()) if text else (lambda row: row.values[key]),
               reverse=descending)
    unknown.sort(key=_tie)
    return known + unknown


def _tie(row):
    """Row keys are ints (inodes, pids) or names (None for an unknown exporter)."""
    return (0, row.key, "") if isinstance(row.key, int) else (1, 0, str(row.key))

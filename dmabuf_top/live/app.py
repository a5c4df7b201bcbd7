"""The curses loop of `dmabuf-top`: keys in, frames from the sampler's Collector thread, screen.render out.

Why curses and not Textual: it is in the standard library (nothing to install
on a device being debugged), starts in milliseconds next to Textual's hundreds,
and a real terminal multiplexer (tmux) drives it in tests exactly as a user
does. Everything worth testing is pure and tested without a terminal: the model
(rows, sort, filter), screen.render (lines at a fixed size) and `handle_key`
(what each binding does to the view).

The terminal is restored on every exit path: `q`, an exception in the
collector or here, Ctrl-C, and SIGTERM (turned into SystemExit so the
`finally` blocks run; kernel state such as task_delayacct is restored by the
caller's context managers for the same reason).
"""
from __future__ import annotations

import curses
import os
import queue
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Tuple

from ..sampler import Collector, sigterm_exits
from .columns import PANES
from .screen import render
from .view import ViewState


@dataclass(frozen=True)
class Binding:
    keys: Tuple[object, ...]  # characters, or curses key codes
    action: str
    label: str  # shown in the footer ("" = not shown)


BINDINGS = (
    Binding(("q", "Q"), "quit", "quit"),
    Binding(("\t",), "next_pane", "pane"),
    Binding((curses.KEY_BTAB,), "previous_pane", ""),
    Binding(("1", "2", "3", "4", "5", "6"), "pane", ""),
    Binding(("<", ","), "sort_left", "sort <"),
    Binding((">", "."), "sort_right", "sort >"),
    Binding(("r", "R"), "reverse", "reverse"),
    Binding(("/",), "filter", "filter"),
    Binding(("\x1b",), "clear_filter", "clear"),
    Binding((" ", "p", "P"), "pause", "pause"),
    Binding((curses.KEY_UP, "k"), "up", ""),
    Binding((curses.KEY_DOWN, "j"), "down", ""),
    Binding((curses.KEY_PPAGE,), "page_up", ""),
    Binding((curses.KEY_NPAGE,), "page_down", ""),
    Binding((curses.KEY_HOME, "g"), "home", ""),
)
_ACTIONS = {key: binding.action for binding in BINDINGS for key in binding.keys}
_KEY_NAMES = {"\t": "Tab", "\x1b": "Esc", " ": "space"}


def footer_text(view: ViewState) -> str:
    if view.editing_filter is not None:
        return "type to filter by name, exporter, process or pid   Enter apply   Esc cancel"
    parts = []
    for binding in BINDINGS:
        if binding.label:
            key = binding.keys[0]
            parts.append(f"{_KEY_NAMES.get(key, key)} {binding.label}")
    return "  ".join(parts) + f"  1-{len(PANES)} pane  arrows scroll"


def _as_key(key):
    """curses gives ints; printable ones become their character."""
    if isinstance(key, int) and 0 <= key < 256:
        return chr(key)
    return key


def handle_key(view: ViewState, key, page: int = 10) -> Optional[str]:
    """Apply one key to the view; returns the action taken ("quit" ends the loop), None if unbound."""
    key = _as_key(key)
    if view.editing_filter is not None:
        if key in ("\n", "\r", curses.KEY_ENTER):
            view.filter, view.editing_filter, view.scroll = view.editing_filter, None, 0
            return "apply_filter"
        if key == "\x1b":
            view.editing_filter = None
            return "cancel_filter"
        if key in (curses.KEY_BACKSPACE, "\x7f", "\b"):
            view.editing_filter = view.editing_filter[:-1]
            return "edit_filter"
        if isinstance(key, str) and key.isprintable():
            view.editing_filter += key
            return "edit_filter"
        return None
    action = _ACTIONS.get(key)
    if action == "next_pane":
        view.next_pane(1)
    elif action == "previous_pane":
        view.next_pane(-1)
    elif action == "pane":
        view.pane, view.scroll = PANES[int(key) - 1], 0
    elif action == "sort_left":
        view.move_sort(-1)
    elif action == "sort_right":
        view.move_sort(1)
    elif action == "reverse":
        view.reverse[view.pane] = not view.reverse[view.pane]
    elif action == "filter":
        view.editing_filter = view.filter
    elif action == "clear_filter":
        view.filter, view.scroll = "", 0
    elif action == "pause":
        view.paused = not view.paused
    elif action == "up":
        view.scroll = max(view.scroll - 1, 0)
    elif action == "down":
        view.scroll += 1
    elif action == "page_up":
        view.scroll = max(view.scroll - page, 0)
    elif action == "page_down":
        view.scroll += page
    elif action == "home":
        view.scroll = 0
    return action


_ATTRS = {}


def _init_attrs():
    colors = False
    try:
        if curses.has_colors():
            curses.start_color()
            curses.use_default_colors()
            for number, color in ((1, curses.COLOR_CYAN), (2, curses.COLOR_GREEN), (3, curses.COLOR_RED),
                                  (4, curses.COLOR_YELLOW)):
                curses.init_pair(number, color, -1)
            colors = True
    except curses.error:
        colors = False

    def pair(number):
        return curses.color_pair(number) if colors else 0

    _ATTRS.update({
        "title": curses.A_BOLD | pair(1),
        "header": curses.A_REVERSE,
        "sorted": curses.A_REVERSE | curses.A_BOLD | curses.A_UNDERLINE,
        "new": curses.A_BOLD | pair(2),
        "freed": curses.A_DIM | pair(3),
        "warn": pair(4),
        "footer": curses.A_REVERSE,
        "dim": curses.A_DIM,
        "normal": curses.A_NORMAL,
    })


def _draw(screen, lines):
    screen.erase()
    height, width = screen.getmaxyx()
    for y, line in enumerate(lines[:height]):
        x = 0
        for text, attr in line:
            if x >= width:
                break
            try:  # the bottom-right cell cannot be written without scrolling: curses reports it, harmlessly
                screen.addnstr(y, x, text, width - x, _ATTRS.get(attr, 0))
            except curses.error:
                pass
            x += len(text)
    screen.refresh()


@contextmanager
def terminal():
    os.environ.setdefault("ESCDELAY", "25")  # Esc answers at once instead of after curses' default 1 s
    try:
        os.get_terminal_size(1)
        # ncurses prefers LINES/COLUMNS to the terminal's own size; inherited ones are stale (a parent's
        # size, or 80x24 set by a test runner) and would pin the view to them even across resizes.
        os.environ.pop("LINES", None)
        os.environ.pop("COLUMNS", None)
    except OSError:
        pass
    screen = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        screen.keypad(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        _init_attrs()
        yield screen
    finally:
        screen.keypad(False)
        curses.nocbreak()
        curses.echo()
        curses.endwin()


def run(sources, model, interval: float, count: Optional[int], view: ViewState) -> int:
    """The full-screen view until `q` (or `count` frames); returns the exit code."""
    frames: "queue.Queue" = queue.Queue()
    collector = Collector(sources, model, interval, frames.put, frames.put, count=count)
    with sigterm_exits():
        try:
            with terminal() as screen:
                screen.timeout(100)
                collector.start()
                return _loop(screen, frames, collector, view, interval, count, on_first_paint=sources.start_background)
        finally:
            # The terminal is the user's again before waiting for a sample in progress to end.
            collector.stop()
            if collector.is_alive():
                collector.join(timeout=max(interval, 1.0) + 5)


def _loop(screen, frames, collector, view, interval, count, on_first_paint=lambda: None):
    """on_first_paint: called once the first frame is on screen (the slow part of the start begins then)."""
    frame, dirty, shown, last_frame_at = None, True, 0, time.monotonic()
    painted = False
    while True:
        while True:
            try:
                item = frames.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            shown += 1
            last_frame_at = time.monotonic()
            if not view.paused:  # still sampled while paused, so rates stay honest when it resumes
                frame, dirty = item, True
        if count is not None and shown >= count and time.monotonic() - last_frame_at >= min(interval, 1.0):
            return 0
        if dirty:
            height, width = screen.getmaxyx()
            _draw(screen, render(frame, view, width, height, footer=footer_text(view)))
            dirty = False
            if frame is not None and not painted:
                painted = True
                on_first_paint()
        key = screen.getch()
        if key == -1:
            continue
        if key == curses.KEY_RESIZE:
            dirty = True
            continue
        height, _ = screen.getmaxyx()
        if handle_key(view, key, page=max(height - 10, 1)) == "quit":
            return 0
        dirty = True

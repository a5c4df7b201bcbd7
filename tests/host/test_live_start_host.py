"""The live view's fast start on this kernel: the inventory is sampled while the I/O hooks load in the background.

Feature detection is held back by an event here (in the lab guest it takes tens of
seconds on its own), so what the view shows meanwhile is seen deterministically.
"""
import threading

import pytest

from dmabuf_top import features
from dmabuf_top.sampler import Sources
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.screen import line_text, render
from dmabuf_top.live.view import ViewState

pytestmark = pytest.mark.root


@pytest.fixture
def held_detection(monkeypatch):
    """features.detect waits for the returned event before doing the real trials."""
    release = threading.Event()
    real = features.detect

    def detect(*args, **kwargs):
        assert release.wait(60), "the test never released feature detection"
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "detect", detect)
    yield release
    release.set()


def test_samples_are_taken_while_the_hooks_load_and_traced_once_they_are_up(held_detection):
    with Sources(background=True, taskstats=False) as sources:
        model = LiveModel(1.0, kernel="host", cannot_see=sources.cannot_see)
        sample = sources.sample()
        sources.start_background()  # as the view does after its first paint
        assert sample.tracing_pending and sample.trace is None
        frame = model.update(sample)
        assert frame.tracing_pending and frame.missing == {"delayacct": frame.missing["delayacct"]}
        text = [line_text(line) for line in render(frame, ViewState(pane="paths"), 160, 30)]
        assert any("hooks: starting" in line for line in text)
        assert all(row.values["bytes"] is None for row in frame.rows["paths"])  # '-', neither 0 nor n/t
        frame = model.update(sources.sample())  # a second pending sample: still no rate to give
        assert all(row.values["bytes"] is None for row in frame.rows["paths"])

        held_detection.set()
        sources._starting.join(120)
        assert not sources.tracing_pending and sources.tracer is not None
        frame = model.update(sources.sample())
        assert not frame.tracing_pending and "read" in frame.live_concerns
        assert "cpu_copy" in frame.missing  # fentry is refused on this kernel: now said, with the reason
        read = next(row for row in frame.rows["paths"] if row.key == "read")
        assert read.values["bytes"] is None  # the first traced sample has no rate yet...
        frame = model.update(sources.sample())
        read = next(row for row in frame.rows["paths"] if row.key == "read")
        assert read.values["bytes"] is not None  # ...the second has


def test_nothing_but_the_inventory_is_opened_before_start_background(held_detection):
    with Sources(background=True) as sources:
        assert sources.taskstats is None and sources.tracer is None and sources.tracing_pending
        assert sources._starting.ident is None  # not even started: it would compete with the first screen
        sample = sources.sample()
        assert sample.taskstats == {} and sample.tracing_pending
        assert sources._starting.ident is None  # samples do not start it: the view does, once it has painted
        sources.start_background()
        assert sources._starting.ident is not None


def test_closing_while_the_hooks_load_leaves_no_tracer_behind(held_detection):
    sources = Sources(background=True, taskstats=False)
    sources.start_background()
    starting = sources._starting
    sources.close()
    held_detection.set()
    starting.join(120)
    assert not starting.is_alive() and sources.tracer is None


def test_without_background_the_first_sample_is_already_traced():
    with Sources(background=False, taskstats=False) as sources:
        sample = sources.sample()
        assert not sample.tracing_pending and sample.trace is not None

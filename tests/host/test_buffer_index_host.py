"""A recording reads the kernel's dma-buf list once per tick, with the real iterator: its buffer snapshots and
its I/O attribution share that read (inventory.index.BufferFeed)."""
import pytest

from dmabuf_top.probes.dmabuf_iter import DmabufIterator
from dmabuf_top.recording.recorder import Recorder
from dmabuf_top.recording.session import SessionWriter
from dmabuf_top.recording.sources import all_sources

pytestmark = pytest.mark.root


class CountingIterator(DmabufIterator):
    """The real iterator, counting its kernel passes; the one instance a recording loads."""

    made = []

    def __init__(self):
        super().__init__()
        self.reads = 0
        CountingIterator.made.append(self)

    def read(self):
        self.reads += 1
        return super().read()


class Ticks:
    """A source that only counts the recorder's ticks."""

    name = "ticks"
    polls = 0

    def start(self, context):
        return []

    def poll(self, now_ns):
        self.polls += 1
        return []

    def stop(self, now_ns):
        return []


def test_a_record_tick_reads_iter_dmabuf_once(tmp_path):
    ticks = Ticks()
    with SessionWriter(tmp_path / "r.session") as writer:
        Recorder(writer, all_sources(iterator_factory=CountingIterator) + [ticks], interval_s=0.1,
                 duration_s=2.0).run()
    assert len(CountingIterator.made) == 1  # one loaded iterator for the snapshots and the attribution
    assert ticks.polls >= 1  # (as many as a loaded machine allows in 2 s)
    assert CountingIterator.made[0].reads == ticks.polls + 1  # once per tick, and once at the stop

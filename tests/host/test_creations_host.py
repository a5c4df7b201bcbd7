"""Sources(creations=True) on this kernel: the lifecycle probe's records followed for the Leaks pane and the
cgroups' created bytes, or, where no hook sees dma_buf_export (this host: no dma_buf tracepoints, no fentry),
creators "not known" (Sample.creations None) with a sentence, never an empty "nothing was created"."""
import threading

import pytest

from dmabuf_top.leak_creations import EXPORT_PROGRAMS
from dmabuf_top.sampler import Sources

pytestmark = pytest.mark.root


def test_creations_are_followed_where_exports_are_seen_else_not_known():
    with Sources(taskstats=False, creations=True, creation_stacks=True) as sources:
        exports = any(h.live for h in sources.tracer.hooks if h.program in EXPORT_PROGRAMS)
        sample = sources.sample()
        if exports:
            assert sample.creations is not None and sources.feed is not None
            assert any(t.name == "dmabuf-top creations" for t in threading.enumerate())
        else:
            assert sample.creations is None and sources.creations() is None and sources.feed is None
            assert any("who creates buffers" in sentence for sentence in sources.cannot_see)
        # the I/O programs ring nothing: only the lifecycle probe's records are read
        assert sources.tracer.record and not sources.tracer._io_records
    assert not any(t.name == "dmabuf-top creations" for t in threading.enumerate())


def test_without_creations_the_tracer_rings_nothing():
    with Sources(taskstats=False) as sources:
        assert sources.sample().creations is None and not sources.tracer.record

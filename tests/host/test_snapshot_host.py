"""`dmabuf-top snapshot` on this machine's kernel: the BPF programs load and run for real.

The CI host has no dma-buf exporter, so every source must agree on an empty
system, say which source it used, and exit 0.
"""
import json
import os

import pytest

from dmabuf_top.cli import main
from dmabuf_top.inventory.collect import IteratorSnapshots
from dmabuf_top.probes.task_dmabufs import read_holders

pytestmark = pytest.mark.root


def run(capsys, *args):
    code = main(["snapshot", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_task_iterators_load_and_find_no_dmabuf_here():
    holders = read_holders()
    assert holders.fds == [] and holders.maps == []


def test_iterator_snapshot_repeats_without_reloading():
    with IteratorSnapshots() as snapshots:
        first, second = snapshots.take(), snapshots.take()
    assert first.totals == second.totals
    assert (first.source, first.holders_source) == ("iterator", "iterator")


@pytest.mark.parametrize("source,holders", [("iterator", "iterator"), ("fdinfo", "procfs"), ("iterator", "procfs")])
def test_json_names_its_sources(capsys, source, holders):
    doc = json.loads(run(capsys, "--json", "--source", source, "--holders", holders))
    assert (doc["source"], doc["holders_source"]) == (source, holders)
    assert doc["totals"]["buffers"] == len(doc["buffers"]) == 0


def test_default_picks_the_iterator_and_says_so(capsys):
    out = run(capsys)
    assert out.splitlines()[0].startswith("source: iterator (iter/dmabuf); holders: iterator")
    assert out.splitlines()[-1].startswith("dmabuf total: 0 B in 0 buffers")


@pytest.mark.parametrize("view", ["--buffers", "--exporters", "--grid"])
def test_views_and_csv(capsys, view):
    assert run(capsys, view).startswith("source: ")
    assert len(run(capsys, view, "--csv").splitlines()) == 1


def test_bufinfo_source_or_a_one_line_reason(capsys):
    code = main(["snapshot", "--source", "bufinfo", "--json"])
    out, err = capsys.readouterr()
    if os.path.exists("/sys/kernel/debug/dma_buf/bufinfo"):
        assert code == 0 and json.loads(out)["source"] == "bufinfo"
    else:
        assert code == 4 and len(err.strip().splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    assert main(["snapshot", "--json", "--csv"]) == 2
    assert main(["snapshot", "--source", "fdinfo", "--holders", "iterator"]) == 2
    assert main(["snapshot", "-p", "999999999"]) == 1
    err = capsys.readouterr().err
    assert err.count("dmabuf-top:") == 3 and "Traceback" not in err

"""The live model: rows per pane, rates over the measured time, new/freed, n/t, sort and filter."""
import pytest
from live_fixtures import MiB, inventory, sample, two_frames

from dmabuf_top.inventory.types import Buffer
from dmabuf_top.live.columns import COLUMNS, DEFAULT_SORT, PANES, sort_keys
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.view import ViewState, sort_rows, visible_rows
from dmabuf_top.sampler import Sample


def by_key(rows):
    return {row.key: row for row in rows}


def test_every_default_sort_key_is_a_column_of_its_pane():
    for pane in PANES:
        assert DEFAULT_SORT[pane] in {c.key for c in COLUMNS[pane]}
        keys = [c.key for c in COLUMNS[pane]]
        assert len(keys) == len(set(keys)), pane


def test_first_frame_has_no_rates_and_nothing_marked_new():
    first, _ = two_frames()
    rows = by_key(first.rows["buffers"])
    assert first.elapsed is None
    assert rows[101].values["read"] is None and rows[101].state is None
    assert by_key(first.rows["processes"])[10].values["blkio"] is None


def test_rates_divide_by_the_measured_time_not_the_interval():
    _, second = two_frames()
    assert second.elapsed == 2.0
    weights = by_key(second.rows["buffers"])[101]
    assert weights.values["read"] == 32 * MiB  # 64 MiB over 2.0 s, though the interval is 1 s
    assert weights.values["write"] == 0
    assert weights.extra["paths"]["read"]["bytes"] == 32 * MiB


def test_udmabuf_io_is_found_through_its_memfd():
    _, second = two_frames()
    assert by_key(second.rows["buffers"])[102].values["write"] == MiB / 2


def test_process_rates_and_delay_share():
    _, second = two_frames()
    loader = by_key(second.rows["processes"])[10]
    assert loader.values["read"] == 32 * MiB
    assert loader.values["blkio"] == pytest.approx(25.0)  # 0.5 s of waiting in 2.0 s
    assert loader.values["swapin"] == 0 and loader.values["reclaim"] == 0
    assert loader.extra["delays"]["blkio"] == {"count": 3, "total_ns": 500_000_000}
    assert loader.values["rss"] == 20 * MiB and loader.values["comm"] == "loader"


def test_exporter_rows_sum_their_buffers():
    _, second = two_frames()
    rows = by_key(second.rows["exporters"])
    assert rows["system"].values["buffers"] == 2 and rows["system"].values["bytes"] == 17 * MiB
    assert rows["system"].values["read"] == 32 * MiB
    assert rows["udmabuf"].values["write"] == MiB / 2


def test_paths_pane_lists_every_path_and_says_what_is_missing():
    _, second = two_frames()
    rows = by_key(second.rows["paths"])
    assert list(rows) == ["read", "write", "copy_file_range", "sendfile", "splice", "rw_file", "io_uring", "aio"]
    assert rows["read"].values["bytes"] == 32 * MiB
    assert rows["read"].values["latency"] == pytest.approx(2.0)  # 8000 ns over 4 calls
    assert "no cpu_copy, gup" in rows["read"].values["status"]
    assert second.not_traced("paths") == {"copy", "pin"}
    assert second.not_traced("buffers") == {"copy", "pin"}


def test_missing_path_hooks_make_the_path_not_traced():
    model = LiveModel(1.0)
    frame = model.update(sample(1.0, hooks=[]))
    # no hook statuses at all: nothing is missing either (an empty tracer is not a refusal)
    assert "read" not in frame.missing
    frame = LiveModel(1.0).update(Sample(1.0, 0.0, inventory(), None, {}, False))
    assert {"read", "write", "cpu_copy", "delayacct"} <= set(frame.missing)
    assert frame.not_traced("processes") >= {"read", "write", "xfer", "copy", "pin", "blkio", "swapin", "reclaim"}


def test_new_and_freed_buffers_are_marked_for_one_frame():
    model = LiveModel(1.0)
    model.update(sample(1.0))
    added = Buffer(inode=104, size=MiB, exporter="system", name=b"fresh", file_refs=1, attachment_count=0)
    frame = model.update(sample(2.0, extra=[added]))
    rows = by_key(frame.rows["buffers"])
    assert rows[104].state == "new" and rows[101].state is None
    frame = model.update(sample(3.0))
    rows = by_key(frame.rows["buffers"])
    assert rows[104].state == "freed" and rows[104].values["name"] == "fresh"
    frame = model.update(sample(4.0))
    assert 104 not in by_key(frame.rows["buffers"])


def test_pid_restricts_buffers_processes_and_io():
    model = LiveModel(1.0, pid=20)
    model.update(sample(1.0))
    frame = model.update(sample(2.0, read_bytes=MiB, shmem_write=MiB))
    assert [row.key for row in frame.rows["buffers"]] == [102]
    assert [row.key for row in frame.rows["processes"]] == [20]


def test_sort_is_descending_for_numbers_ascending_for_names_and_none_last():
    _, second = two_frames()
    view = ViewState()
    assert [r.key for r in visible_rows(second, view)] == [101, 102, 103]
    view.reverse["buffers"] = True
    assert [r.key for r in visible_rows(second, view)] == [103, 102, 101]
    view = ViewState()
    view.set_sort("name")
    names = [r.values["name"] for r in visible_rows(second, view)]
    assert names == sorted(names, key=str.lower)
    first, _ = two_frames()
    rows = sort_rows(first.rows["buffers"], "read")
    assert all(r.values["read"] is None for r in rows)


def test_move_sort_walks_the_columns_and_wraps():
    view = ViewState()
    keys = [c.key for c in COLUMNS["buffers"]]
    view.move_sort(1)
    assert view.sort["buffers"] == keys[keys.index("size") + 1]
    view.sort["buffers"] = keys[-1]
    view.move_sort(1)
    assert view.sort["buffers"] == keys[0]


def test_set_sort_rejects_unknown_keys_and_applies_to_every_pane_with_the_column():
    view = ViewState()
    view.set_sort("read")
    assert view.sort["buffers"] == view.sort["processes"] == view.sort["exporters"] == "read"
    assert view.sort["paths"] == "bytes"
    with pytest.raises(ValueError):
        view.set_sort("nonsense")
    assert "blkio" in sort_keys()


@pytest.mark.parametrize("needle,expected", [("weights", [101]), ("UDMABUF", [102]), ("loader", [101, 102]),
                                             ("20(", [102]), ("nothing-like-this", [])])
def test_filter_matches_name_exporter_holder_and_pid(needle, expected):
    _, second = two_frames()
    view = ViewState(filter=needle)
    assert sorted(r.key for r in visible_rows(second, view)) == expected

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_top.errors import DmabufTopError
from dmabuf_top.taskstats import (
    _FIELDS,
    _V15_FIELDS,
    DELAY_KINDS,
    DelayAccounting,
    decode_taskstats,
    find_attribute,
    start_ticks_in,
)


def build(version, values, layout=_FIELDS, size=432):
    raw = bytearray(size)
    struct.pack_into("<H", raw, 0, version)
    for name, value in values.items():
        offset, fmt, _since = layout[name]
        struct.pack_into("<" + fmt, raw, offset, value)
    return bytes(raw)


def test_v16_reply_gives_every_delay():
    values = {f"{kind}_count": index + 1 for index, kind in enumerate(DELAY_KINDS)}
    values.update({f"{kind}_delay_total": (index + 1) * 1000 for index, kind in enumerate(DELAY_KINDS)})
    values.update(ac_comm=b"loader", ac_pid=42, ac_ppid=1, read_bytes=4096)
    stats = decode_taskstats(build(16, values))
    assert stats.version == 16 and stats.pid == 42 and stats.comm == "loader"
    assert {kind: (d.count, d.total_ns) for kind, d in stats.delays.items()} == {
        kind: (index + 1, (index + 1) * 1000) for index, kind in enumerate(DELAY_KINDS)
    }
    assert stats.read_bytes == 4096


def test_an_old_kernel_reports_only_what_it_has():
    # Version 8 ends after freepages: no thrashing, compaction, wpcopy or IRQ numbers may be invented.
    raw = build(8, {"blkio_count": 2, "blkio_delay_total": 5, "freepages_count": 1, "freepages_delay_total": 9},
                size=328)
    stats = decode_taskstats(raw)
    assert set(stats.delays) == {"cpu", "blkio", "swapin", "freepages"}
    assert stats.delays["freepages"].total_ns == 9


def test_version_15_interleaved_layout():
    raw = build(15, {"blkio_count": 3, "blkio_delay_total": 7, "freepages_delay_total": 11,
                     "freepages_count": 1}, layout=_V15_FIELDS, size=560)
    stats = decode_taskstats(raw)
    assert stats.delays["blkio"].total_ns == 7 and stats.delays["freepages"].total_ns == 11
    assert "irq" not in stats.delays


def test_truncated_reply_is_a_clear_error():
    with pytest.raises(DmabufTopError, match="too short"):
        decode_taskstats(b"\x10")


@given(st.binary(min_size=2, max_size=600))
def test_any_bytes_decode_without_crashing(raw):
    stats = decode_taskstats(raw)
    for delay in stats.delays.values():
        assert delay.count >= 0 and delay.total_ns >= 0


def test_attribute_walk_finds_the_stats_and_stops_on_garbage():
    first = struct.pack("<HHI", 8, 2, 1234)
    second = struct.pack("<HH", 4 + 5, 3) + b"hello" + b"\0\0\0"
    assert find_attribute(first + second, 3) == b"hello"
    assert find_attribute(first, 3) is None
    assert find_attribute(struct.pack("<HH", 200, 3), 3) is None


def test_start_time_is_read_past_a_comm_with_spaces_and_parentheses():
    fields_after_comm = " ".join(["S"] + [str(n) for n in range(4, 22)] + ["123456"] + ["0"] * 30)
    assert start_ticks_in(f"42 (a) b (c)) {fields_after_comm}\n".encode()) == 123456
    assert start_ticks_in(b"42 (cut) S 1 2") is None


def test_delays_are_kept_only_for_processes_started_after_accounting_came_on():
    turned_on = DelayAccounting(True, since_ticks=1000)
    assert turned_on.why_not_kept(1001) is None  # forked in a later tick: counted
    assert "started before delay accounting was turned on" in turned_on.why_not_kept(999)
    assert turned_on.why_not_kept(1000) == turned_on.why_not_kept(999)  # the same tick: either side, so n/a
    assert "start time unknown" in turned_on.why_not_kept(None)
    # Already on when the view started: every process counts, whenever it started.
    assert DelayAccounting(True, since_ticks=None).why_not_kept(5) is None
    # Off: no process has them, which views say once for the whole column (n/t), not per row.
    assert not DelayAccounting(False) and DelayAccounting(False).why_not_kept(5) is None

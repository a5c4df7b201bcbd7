"""The inventory's arithmetic (join, refs, RSS, PSS, kernel-only, exporters) and its renderers, without a kernel."""
import csv
import io
import json

import pytest

from dmabuf_top.inventory.inventory import build_inventory, exporter_totals
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef, Refs
from dmabuf_top.inventory.render_snapshot import SCHEMA, render_csv, render_json, render_table, to_dict

MiB = 1 << 20
HOSTILE = b"\x1b[31m<script>\nx\t\xff"


def buffer(inode, size, exporter="system", name=None, refs=1):
    return Buffer(inode=inode, size=size, exporter=exporter, name=name, file_refs=refs, attachment_count=0)


@pytest.fixture
def inventory():
    """pid 10 and 20 share buffer 1 (fd + fd/map); 10 holds 2 twice; 30 maps 3; 4 is kernel-only."""
    buffers = [buffer(1, 3 * MiB + 1, refs=3), buffer(2, MiB, "udmabuf", b"dup", refs=2),
               buffer(3, 4096, name=HOSTILE, refs=1), buffer(4, 8 * MiB, name=b"kernel", refs=1)]
    holders = Holders(
        fds=[FdRef(10, 3, 1), FdRef(20, 4, 1), FdRef(10, 5, 2), FdRef(10, 6, 2), FdRef(99, 1, 777)],
        maps=[MapRef(20, 1, 0x1000, 0x2000), MapRef(30, 3, 0x5000, 0x6000)],
        comms={10: b"ten", 20: b"twenty", 30: b"\x1b]0;evil\x07"},
    )
    return build_inventory(buffers, holders, "iterator", "iterator")


def test_refs_per_buffer_and_process(inventory):
    assert inventory.buffer(1).holders == {10: Refs(1, 0), 20: Refs(1, 1)}
    assert inventory.buffer(2).holders == {10: Refs(2, 0)}
    assert inventory.buffer(3).holders == {30: Refs(0, 1)}
    assert inventory.process(10).buffers == {1: Refs(1, 0), 2: Refs(2, 0)}
    assert (inventory.process(10).fd_refs, inventory.process(20).map_refs) == (3, 1)


def test_rss_counts_each_buffer_once_and_pss_divides_by_holders(inventory):
    assert inventory.process(10).rss == 3 * MiB + 1 + MiB
    assert inventory.process(10).pss == (3 * MiB + 1) // 2 + MiB
    assert inventory.process(20).rss == 3 * MiB + 1
    assert inventory.process(20).pss == (3 * MiB + 1) // 2
    assert (inventory.process(30).rss, inventory.process(30).pss) == (4096, 4096)


def test_kernel_only_and_kernel_refs(inventory):
    assert [entry.inode for entry in inventory.buffers if entry.kernel_only] == [4]
    assert inventory.buffer(4).kernel_refs == 1
    assert inventory.buffer(1).kernel_refs == 0  # 3 refs = 2 fds + 1 mapping


def test_totals(inventory):
    totals = inventory.totals
    assert (totals.buffers, totals.bytes) == (4, 3 * MiB + 1 + MiB + 4096 + 8 * MiB)
    assert (totals.kernel_only_buffers, totals.kernel_only_bytes) == (1, 8 * MiB)
    assert totals.userspace_rss == (3 * MiB + 1 + MiB) + (3 * MiB + 1) + 4096
    assert totals.userspace_pss == (3 * MiB + 1) // 2 * 2 + MiB + 4096


def test_refs_to_unknown_buffers_are_dropped_and_counted(inventory):
    assert inventory.unmatched_refs == 1
    assert 99 not in {process.pid for process in inventory.processes}


def test_ordering_largest_first(inventory):
    assert [entry.inode for entry in inventory.buffers] == [4, 1, 2, 3]
    assert [process.pid for process in inventory.processes] == [10, 20, 30]


def test_exporter_totals_unknown_exporter_is_none():
    totals = exporter_totals([buffer(1, 10), buffer(2, 5, exporter=None), buffer(3, 7)])
    assert [(t.exporter, t.buffers, t.bytes) for t in totals] == [("system", 2, 17), (None, 1, 5)]


def test_unknown_refs_from_a_partial_source():
    partial = Buffer(inode=5, size=4096, exporter=None, name=None, file_refs=None, attachment_count=None)
    inventory = build_inventory([partial], Holders([], [MapRef(1, 5, 0, 4096)], {}), "fdinfo", "procfs")
    assert inventory.buffer(5).kernel_refs is None
    doc = to_dict(inventory)
    assert doc["buffers"][0]["exporter"] is None and doc["buffers"][0]["file_refs"] is None
    assert "?" in render_table(inventory, "buffers")


def test_only_process(inventory):
    mine = inventory.only_process(10)
    assert [p.pid for p in mine.processes] == [10]
    assert [entry.inode for entry in mine.buffers] == [1, 2]
    assert mine.totals == inventory.totals
    assert inventory.only_process(12345).processes == []


def test_json_is_exact_and_lossless(inventory):
    doc = json.loads(render_json(inventory))
    assert doc["schema"] == SCHEMA and doc["source"] == "iterator"
    by_inode = {entry["inode"]: entry for entry in doc["buffers"]}
    assert bytes.fromhex(by_inode[3]["name_hex"]) == HOSTILE
    assert by_inode[3]["name"] == HOSTILE.decode("utf-8", "replace")
    assert by_inode[1]["name"] is None and by_inode[1]["name_hex"] is None
    assert by_inode[1]["size"] == 3 * MiB + 1
    assert by_inode[1]["holders"] == [{"pid": 10, "fds": 1, "maps": 0}, {"pid": 20, "fds": 1, "maps": 1}]
    processes = {process["pid"]: process for process in doc["processes"]}
    assert bytes.fromhex(processes[30]["comm_hex"]) == b"\x1b]0;evil\x07"
    assert render_json(inventory).isascii()


def test_empty_name_differs_from_unnamed():
    inventory = build_inventory([buffer(1, 10, name=b"")], Holders([], [], {}), "iterator", "iterator")
    entry = to_dict(inventory)["buffers"][0]
    assert (entry["name"], entry["name_hex"]) == ("", "")


@pytest.mark.parametrize("view", ["processes", "buffers", "exporters", "grid"])
def test_tables_never_carry_control_bytes(inventory, view):
    text = render_table(inventory, view)
    assert not any(ord(char) < 32 and char != "\n" for char in text)
    assert "\udcff" not in text
    assert text.splitlines()[0].startswith("source: iterator")
    assert text.splitlines()[-1].startswith("dmabuf total: 12.0 MiB in 4 buffers")


def test_buffers_table_shows_holders_and_escaped_name(inventory):
    lines = render_table(inventory, "buffers").splitlines()
    row = next(line for line in lines if line.lstrip().startswith("3 "))
    assert "30:0(1)" in row and row.endswith("\\x1b[31m<script>\\nx\\t\\xff")
    kernel_row = next(line for line in lines if line.lstrip().startswith("4 "))
    assert " kernel " in kernel_row


def test_grid_cells_are_fd_map(inventory):
    lines = render_table(inventory, "grid").splitlines()
    header = next(line for line in lines if line.startswith("INODE"))
    assert header.split()[3:6] == ["10", "20", "30"]
    row = next(line for line in lines if line.lstrip().startswith("1 "))
    assert row.split()[4:7] == ["1(0)", "1(1)", "-"]


@pytest.mark.parametrize("view", ["processes", "buffers", "exporters", "grid"])
def test_csv_one_line_per_row(inventory, view):
    text = render_csv(inventory, view)
    rows = list(csv.reader(io.StringIO(text)))
    expected = {"processes": 3, "buffers": 4, "exporters": 2, "grid": 4}[view]
    assert len(text.splitlines()) == len(rows) == expected + 1


def test_csv_buffers_exact_bytes_and_named_flag(inventory):
    rows = list(csv.DictReader(io.StringIO(render_csv(inventory, "buffers"))))
    by_inode = {int(row["inode"]): row for row in rows}
    assert by_inode[1]["size"] == str(3 * MiB + 1)
    assert (by_inode[1]["named"], by_inode[1]["name"]) == ("0", "")
    assert by_inode[3]["name"] == "\\x1b[31m<script>\\nx\\t\\xff"


def test_process_view_blocks_and_totals(inventory):
    text = render_table(inventory, "processes")
    assert "ten:10" in text and "\\x1b]0;evil\\x07:30" in text
    assert "held by the kernel only" in text
    assert text.count("PROCESS TOTAL") == 3

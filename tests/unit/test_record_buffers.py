"""Every buffer a recording saw (recording/buffers.py), its session tables (schema v3, and v2 read the legacy way),
and the ELF symbolizer of allocation stacks (symbolize.py), on real ELF files of this machine."""
import ctypes
import dataclasses
import io
import os
import shutil
import subprocess
import sys

import pytest

from dmabuf_top.analysis import flame, tables
from dmabuf_top.analysis.export import CsvRenderer
from dmabuf_top.analysis.html import HtmlRenderer
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.kernelfs import kernel_dev_to_user
from dmabuf_top.probes import buffer_lifecycle
from dmabuf_top.probes.buffer_lifecycle import LifecycleRecord
from dmabuf_top.recording import session as s
from dmabuf_top.recording.buffers import BufferBook
from dmabuf_top.recording.session import SCHEMA_VERSION, Session, SessionWriter
from dmabuf_top.symbolize import ElfSymbols, Mapping, Symbolizer, read_maps

MIB = 1 << 20
DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def export(inode, t, size=MIB, tgid=10, name=None, stacks=(1, 2)):
    return LifecycleRecord(tgid, "load", "export", -1, t, inode, size, tgid + 1, 99, "system", name, *stacks)


def event(kind, inode, t, tgid=10, name=None):
    return LifecycleRecord(tgid, "load", kind, -1, t, inode, MIB, tgid, 0, "", name)


def book():
    return BufferBook(kernel_frames=lambda sid: ["dma_buf_export", "dma_heap_ioctl"] if sid >= 0 else [],
                      user_frames=lambda record: ["ioctl+0x1b (libc.so.6)", "load+0x2 (loader)"]
                      if record.user_stack >= 0 else [],
                      cgroup_path=lambda cid: {99: "/system.slice/load.service"}.get(cid, ""))


def test_a_short_lived_buffer_is_kept_with_its_creator_names_stacks_and_release():
    b = book()
    rows = b.lifecycle(export(7, 100))
    assert rows == [s.AllocStack(1, "kernel", "dma_buf_export\ndma_heap_ioctl"),
                    s.AllocStack(2, "user", "ioctl+0x1b (libc.so.6)\nload+0x2 (loader)")]
    assert b.lifecycle(event("name", 7, 110, name=b"scratch")) == [s.BufferName(110, 7, b"scratch", "name", 10)]
    b.used(7, 10, "load")
    assert b.lifecycle(event("release", 7, 120, name=b"scratch")) == []  # the same name: no news
    (row,) = b.changed_rows()
    assert row == s.BufferRecord(7, "system", MIB, b"scratch", 10, 11, "load", 99, "/system.slice/load.service",
                                 100, 120, 1, 2, "10 load")
    assert b.changed_rows() == []  # only what changed since
    # Another buffer from the same place shares the stack rows; a rename is news.
    assert b.lifecycle(export(8, 200)) == []
    b.lifecycle(event("name", 8, 210, name=b"a"))
    assert b.lifecycle(event("name", 8, 220, name=b"b")) == [s.BufferName(220, 8, b"b", "name", 10)]
    assert [r.name for r in b.changed_rows()] == [b"b"]


def test_buffers_seen_only_by_a_read_and_holders_from_io():
    b = book()
    assert b.seen(50, 3, "udmabuf", None, 4096) == []
    assert b.seen(60, 3, "udmabuf", None, 4096) == [] and len(b.changed_rows()) == 1
    assert b.seen(70, 3, "udmabuf", b"late", 4096) == [s.BufferName(70, 3, b"late", "snapshot", 0)]
    b.used(3, 42, "reader")
    (row,) = b.changed_rows()
    assert (row.name, row.created_ns, row.creator_tgid, row.kernel_stack_id, row.holders) == \
        (b"late", 0, 0, -1, "42 reader")


def test_the_index_attributes_io_to_a_buffer_made_and_freed_between_two_reads():
    index = BufferIndex()
    index.learn([])
    assert index.buffer_of("dmabuf", 7, 0) == 0
    index.learn_lifecycle([export(7, 1), event("release", 7, 2)])
    assert index.buffer_of("dmabuf", 7, 0) == 7
    for _ in range(BufferIndex.KEPT_READS - 1):
        index.learn([])
        assert index.buffer_of("dmabuf", 7, 0) == 7
    index.learn([])
    assert index.buffer_of("dmabuf", 7, 0) == 0  # gone as long ago as a read would keep it
    index.learn_lifecycle([(9, "export")])
    for _ in range(5):
        index.learn([])
    assert index.buffer_of("dmabuf", 9, 0) == 9 and index.buffer_of("shmem", 9, 0) == 0  # alive: kept


def test_the_index_attributes_io_into_the_memfd_of_a_udmabuf_freed_before_any_read():
    """A udmabuf's I/O targets are its memfd's pages: the lifecycle probe's "backing" record says which memfd,
    so a udmabuf made, filled and freed between two reads keeps its bytes; only that memfd, only as long as
    the udmabuf is kept."""
    index = BufferIndex()
    index.learn([])
    memfd = (41, 23)  # (inode, st_dev)
    assert index.buffer_of("shmem", *memfd) == 0
    backing = dataclasses.replace(event("backing", 15, 2), backing=memfd)
    index.learn_lifecycle([export(15, 1), backing, event("release", 15, 3)])
    assert index.buffer_of("shmem", *memfd) == 15
    assert index.buffer_of("shmem", 41, 24) == 0 and index.buffer_of("shmem", 42, 23) == 0  # another memfd
    for _ in range(BufferIndex.KEPT_READS - 1):
        index.learn([])
        assert index.buffer_of("shmem", *memfd) == 15
    index.learn([])
    assert index.buffer_of("shmem", *memfd) == 0  # forgotten with the udmabuf
    # Forgotten too while other buffers are still kept (a heap buffer never released).
    index.learn_lifecycle([export(16, 4), dataclasses.replace(event("backing", 17, 5), backing=memfd),
                           event("release", 17, 6)])
    for _ in range(BufferIndex.KEPT_READS):
        index.learn([])
    assert index.buffer_of("dmabuf", 16, 0) == 16 and index.buffer_of("shmem", *memfd) == 0


def test_a_backing_record_decodes_the_memfd_as_stat_gives_it():
    raw = buffer_lifecycle.LifecycleRecordC(event=11, tgid=7, inode=15, size=4096, backing_inode=41,
                                            backing_dev=(259 << 20) | 3)
    record = buffer_lifecycle.decode_record(bytes(raw))
    assert (record.event, record.inode, record.backing) == ("backing", 15, (41, kernel_dev_to_user((259 << 20) | 3)))
    assert os.major(record.backing[1]) == 259 and os.minor(record.backing[1]) == 3
    assert buffer_lifecycle.decode_record(bytes(buffer_lifecycle.LifecycleRecordC(event=1, inode=15))).backing is None


def test_a_v3_session_keeps_buffers_names_and_stacks(tmp_path):
    path = tmp_path / "v3.session"
    with SessionWriter(path) as writer:
        b = book()
        writer.add_all(b.lifecycle(export(7, 100)))
        writer.add_all(b.lifecycle(event("name", 7, 110, name=b"\x1b[2Jfirst")))
        writer.add_all(b.changed_rows())
        writer.add_all(b.lifecycle(event("name", 7, 130, name=b"second")))
        writer.add_all(b.lifecycle(event("release", 7, 140)))
        writer.add_all(b.changed_rows())  # the row is rewritten, not added
        writer.add(s.PathSample(120, 7, 0, "read", MIB, calls=1))
    with Session(path) as session:
        assert session.schema_version == SCHEMA_VERSION == 3
        assert session.count(s.BufferRecord) == 1 and session.count(s.AllocStack) == 2
        (row,) = tables.top_buffers(session)
        assert (row.name, row.names, row.io_bytes, row.creator_pid, row.cgroup) == \
            (b"second", (b"\x1b[2Jfirst", b"second"), MIB, 10, "/system.slice/load.service")
        assert row.created_s is not None and row.released_s is not None
        assert tables.summary(session)["buffers_seen"] == 1
        (stack,) = tables.allocation_stacks(session)
        assert (stack.buffers, stack.bytes, stack.user_frames[-1], stack.kernel_frames[0]) == \
            (1, MIB, "load+0x2 (loader)", "dma_buf_export")
        # flame --alloc: bytes by allocation stack, user root first, the kernel's leaf last.
        assert flame.alloc_folded(session) == {
            "system;load+0x2 (loader);ioctl+0x1b (libc.so.6);dma_heap_ioctl;dma_buf_export": MIB}
        assert flame.alloc_folded(session, weight="hits") == {
            "system;load+0x2 (loader);ioctl+0x1b (libc.so.6);dma_heap_ioctl;dma_buf_export": 1}
        svg, folded = io.StringIO(), io.StringIO()
        flame.FlameSvgRenderer(RenderOptions(stacks="alloc")).render(session, svg)
        flame.FoldedRenderer(RenderOptions(stacks="alloc")).render(session, folded)
        page, table = io.StringIO(), io.StringIO()
        HtmlRenderer().render(session, page)
        CsvRenderer().render(session, table)
    assert "Buffers by allocation stack" in svg.getvalue() and folded.getvalue().endswith(f" {MIB}\n")
    # The hostile first name is shown, neutralised, in the history; never as a raw escape.
    assert "second" in page.getvalue() and "(was \\x1b[2Jfirst)" in page.getvalue()
    assert "\x1b" not in page.getvalue() and "\x1b" not in table.getvalue()
    assert "load+0x2 (loader)" in page.getvalue()


def test_a_v2_session_reads_its_buffers_from_snapshots_and_lifecycle_events():
    """tests/data/session-v2.db was written by the v2 code (tests/data/write_session_v2.py at commit e6a3835)."""
    with Session(os.path.join(DATA, "session-v2.db")) as session:
        assert session.schema_version == 2
        rows = {b.inode: b for b in tables.top_buffers(session)}
        assert set(rows) == {10, 11, 12} and tables.summary(session)["buffers_seen"] == 3
        assert (rows[11].name, rows[11].creator_pid, rows[11].released_s) == (b"weights", 100, None)
        # The short-lived one: no snapshot ever showed it; the lifecycle events did, and its I/O is its own.
        assert (rows[12].size, rows[12].io_bytes, rows[12].creator_comm) == (MIB, MIB, "load")
        assert rows[12].released_s is not None and rows[12].name is None
        assert rows[10].created_s is None and rows[10].creator_pid == 0  # there before the recording
        assert tables.allocation_stacks(session) == []  # v2 took none


# -- the symbolizer, on this machine's ELF files


def libc_path():
    return next(m.path for m in read_maps(os.getpid()) if os.path.basename(m.path).startswith("libc.so"))


def test_libc_symbols_and_build_id_from_its_elf_file():
    libc = ctypes.CDLL("libc.so.6")
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    symbolizer = Symbolizer()
    assert symbolizer.remember(os.getpid())
    frame = symbolizer.frame(os.getpid(), address + 1)
    assert frame.endswith("+0x1 (" + os.path.basename(libc_path()) + ")") and "getpid" in frame
    mapping = next(m for m in read_maps(os.getpid()) if m.start <= address < m.end)
    symbols = ElfSymbols(mapping.path)
    assert len(symbols.build_id) == 40
    # A (build id, file offset) frame, as the kernel gives it for a process that is gone: same answer.
    assert symbolizer.build_id_frame(symbols.build_id, address - mapping.start + mapping.offset + 1) == frame
    assert symbolizer.build_id_frame("ab" * 20, 0x10) == f"[unknown]+0x10 [{'ab' * 20}]"
    assert symbolizer.frame(os.getpid(), 8) == "[unknown] 0x8"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_a_program_with_symbols_and_the_same_stripped(tmp_path):
    source = tmp_path / "f.c"
    source.write_text("__attribute__((noinline)) int load_named_buffer(int x) { return x * 3 + 1; }\n"
                      "int main(int argc, char **argv) { return load_named_buffer(argc); }\n")
    binary = tmp_path / "f"
    subprocess.run(["cc", "-O1", "-Wl,--build-id", "-o", str(binary), str(source)], check=True)
    symbols = ElfSymbols(str(binary))
    vaddr = next(start for start, _size, name in symbols._symbols if name == "load_named_buffer")
    assert symbols.function_at(vaddr + 2) == ("load_named_buffer", 2)
    # Through a pretend mapping of the whole file at a PIE base: file offset -> vaddr -> symbol.
    file_offset = next(offset + vaddr - start for offset, start, size in symbols._loads
                       if start <= vaddr < start + size)
    base = 0x5555_0000_0000
    fake = Symbolizer(maps_reader=lambda pid: [Mapping(base, base + (1 << 20), 0, str(binary))])
    assert fake.remember(1)
    assert fake.frame(1, base + file_offset + 2) == "load_named_buffer+0x2 (f)"
    stripped = tmp_path / "f.stripped"
    subprocess.run(["strip", "-s", "-o", str(stripped), str(binary)], check=True)
    bare = Symbolizer(maps_reader=lambda pid: [Mapping(base, base + (1 << 20), 0, str(stripped))])
    bare.remember(1)
    assert bare.frame(1, base + file_offset + 2) == \
        f"f.stripped+{file_offset + 2:#x} [{ElfSymbols(str(stripped)).build_id}]"


def test_not_an_elf_file_has_no_symbols(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + os.urandom(200))
    assert ElfSymbols(str(junk)).function_at(0x1000) is None
    assert ElfSymbols(str(tmp_path / "absent")).build_id == ""
    assert Symbolizer(maps_reader=lambda pid: []).remember(1) is False


def test_the_python_interpreter_is_an_elf_the_reader_takes():
    symbols = ElfSymbols(os.path.realpath(sys.executable))
    assert symbols._loads  # program headers read, whatever its symbols



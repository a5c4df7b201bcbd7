"""Parsing /proc/PID/fdinfo and /proc/PID/maps for dma-bufs, and the scan over a fake /proc tree."""
import os

from dmabuf_top.inventory.procfs import DmabufFdinfo, parse_fdinfo, parse_maps_line, scan, unescape_maps_path

# Taken from the 7.2 lab guest (tests/vm/test_alloc.py shows the same layout).
NAMED = b"pos:\t0\nflags:\t02000002\nmnt_id:\t14\nino:\t1\nsize:\t1048576\ncount:\t1\nexp_name:\tsystem\nname:\tx\nname:\tevil\n\n"
UNNAMED = b"pos:\t0\nflags:\t02000002\nmnt_id:\t14\nino:\t2\nsize:\t4096\ncount:\t3\nexp_name:\tsystem\n"
REGULAR = b"pos:\t0\nflags:\t0100002\nmnt_id:\t25\nino:\t1234\n"


def test_fdinfo_name_runs_to_the_last_newline():
    assert parse_fdinfo(NAMED) == DmabufFdinfo(1, 1048576, 1, "system", b"x\nname:\tevil\n")


def test_fdinfo_unnamed():
    assert parse_fdinfo(UNNAMED) == DmabufFdinfo(2, 4096, 3, "system", None)


def test_fdinfo_empty_name():
    assert parse_fdinfo(UNNAMED + b"name:\t\n").name == b""


def test_fdinfo_of_another_file_is_none():
    assert parse_fdinfo(REGULAR) is None
    assert parse_fdinfo(b"") is None


def test_fdinfo_without_ino_line():
    old = UNNAMED.replace(b"ino:\t2\n", b"")
    assert parse_fdinfo(old).inode is None


def test_maps_line_with_tab_and_escaped_newline():
    line = b"7f97df19a000-7f97df29a000 rw-s 00002000 00:0c 1                          /dmabuf:a\tb\\012c\n"
    entry = parse_maps_line(line)
    assert (entry.start, entry.end, entry.offset, entry.inode) == (0x7F97DF19A000, 0x7F97DF29A000, 0x2000, 1)
    assert entry.name == b"a\tb\nc"


def test_maps_unnamed_and_spaces_in_name():
    assert parse_maps_line(b"1000-2000 rw-s 00000000 00:0c 7    /dmabuf:\n").name == b""
    assert parse_maps_line(b"1000-2000 rw-s 00000000 00:0c 7    /dmabuf:  two  spaces\n").name == b"  two  spaces"


def test_maps_other_lines_are_ignored():
    assert parse_maps_line(b"55d0-55e0 r--p 00000000 08:01 42   /usr/bin/python3\n") is None
    assert parse_maps_line(b"7ffd-7ffe rw-p 00000000 00:00 0    [stack]\n") is None
    assert parse_maps_line(b"garbage") is None


def test_unescape():
    assert unescape_maps_path(b"a\\012b") == b"a\nb"


def make_proc(root, pid, fds, maps=b"", comm=b"holder\n"):
    """A /proc/PID directory: fds = {n: (link target, fdinfo bytes)}."""
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "fdinfo").mkdir()
    for number, (target, info) in fds.items():
        os.symlink(target, base / "fd" / str(number))
        (base / "fdinfo" / str(number)).write_bytes(info)
    (base / "maps").write_bytes(maps)
    (base / "comm").write_bytes(comm)


def test_scan_finds_fds_and_mappings_and_partial_mapped_only_buffers(tmp_path):
    make_proc(tmp_path, 10, {3: ("/dmabuf:x", NAMED), 4: ("/dev/null", REGULAR), 5: ("/dmabuf:", UNNAMED)},
              maps=b"1000-3000 rw-s 00000000 00:0c 9   /dmabuf:only\\012mapped\n"
                   b"5000-6000 rw-s 00000000 00:0c 2   /dmabuf:\n")
    make_proc(tmp_path, 11, {}, comm=b"empty\n")
    (tmp_path / "12").mkdir()  # a process that vanished: no fd directory any more
    (tmp_path / "self").mkdir()
    found = scan(str(tmp_path))
    assert sorted((ref.pid, ref.fd, ref.inode) for ref in found.holders.fds) == [(10, 3, 1), (10, 5, 2)]
    assert sorted((ref.pid, ref.inode) for ref in found.holders.maps) == [(10, 2), (10, 9)]
    assert found.holders.comms == {10: b"holder"}
    buffers = {b.inode: b for b in found.buffers()}
    assert (buffers[1].size, buffers[1].exporter, buffers[1].file_refs) == (1048576, "system", 1)
    only_mapped = buffers[9]
    assert (only_mapped.size, only_mapped.exporter, only_mapped.name, only_mapped.file_refs) == (
        0x2000, None, b"only\nmapped", None)


def test_scan_of_an_unreadable_fd_table_is_silent(tmp_path):
    make_proc(tmp_path, 10, {3: ("/dmabuf:x", NAMED)})
    os.chmod(tmp_path / "10" / "fdinfo" / "3", 0)
    found = scan(str(tmp_path))
    if os.geteuid() != 0:  # root reads through mode 0
        assert found.holders.fds == []

"""debugfs bufinfo parsing: kernel formats, hostile names, error messages."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_top.inventory import bufinfo as bufinfo_module
from dmabuf_top.inventory.bufinfo import (
    BufinfoFormatError,
    parse_bufinfo,
    printable,
    read_bufinfo,
)
from dmabuf_top.errors import KernelLacks, NeedsPrivilege


def render_bufinfo(buffers):
    """dma_buf_debug_show() from drivers/dma-buf/dma-buf.c (5.3+ through 7.x), in Python.

    Each buffer is a dict: size, flags, mode, count, exporter, inode, name
    (bytes or None), fences (list of bytes, already prefixed "<usage> fence:"),
    devices (list of str).
    """
    out = [b"\nDma-buf Objects:\n",
           b"%-8s\t%-8s\t%-8s\t%-8s\texp_name\t%-8s\tname\n" % (b"size", b"flags", b"mode",
                                                            b"count", b"ino")]
    total = 0
    for buffer in buffers:
        name = buffer.get("name")
        out.append(b"%08d\t%08x\t%08x\t%08d\t%s\t%08d\t%s\n" % (
            buffer["size"], buffer.get("flags", 2), buffer.get("mode", 0x4801f),
            buffer.get("count", 1), buffer["exporter"].encode(), buffer["inode"],
            b"<none>" if name is None else name))
        for fence in buffer.get("fences", ()):
            out.append(b"\t" + fence + b"\n")
        out.append(b"\tAttached Devices:\n")
        for device in buffer.get("devices", ()):
            out.append(b"\t%s\n" % device.encode())
        out.append(b"Total %d devices attached\n\n" % len(buffer.get("devices", ())))
        total += buffer["size"]
    out.append(b"\nTotal %d objects, %d bytes\n" % (len(buffers), total))
    return b"".join(out)


# What a 7.x guest prints for one named system-heap buffer and one unnamed udmabuf,
# written out by hand from the kernel's format strings.
MODERN_TEXT = (
    b"\n"
    b"Dma-buf Objects:\n"
    b"size    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
    b"00004096\t00000002\t0004801f\t00000001\tsystem\t00000005\tframe-0\n"
    b"\tAttached Devices:\n"
    b"Total 0 devices attached\n"
    b"\n"
    b"01048576\t00000002\t0004801f\t00000003\tudmabuf\t00000004\t<none>\n"
    b"\twrite fence:drm_sched gfx_0.0.0 seq 42 signalled\n"
    b"\tread fence:drm_sched gfx_0.0.0 seq 43 unsignalled\n"
    b"\tAttached Devices:\n"
    b"\t0000:00:02.0\n"
    b"\tudmabuf\n"
    b"Total 2 devices attached\n"
    b"\n"
    b"\n"
    b"Total 2 objects, 1052672 bytes\n"
)

# 4.x - 5.2: no ino, no name; fences as Exclusive/Shared.
OLD_TEXT = (
    b"\n"
    b"Dma-buf Objects:\n"
    b"size    \tflags   \tmode    \tcount   \texp_name\n"
    b"00008192\t00000002\t00000007\t00000002\tion\n"
    b"\tExclusive fence: i915 ring0 signalled\n"
    b"\tAttached Devices:\n"
    b"\tkgsl-3d0\n"
    b"Total 1 devices attached\n"
    b"\n"
    b"\n"
    b"Total 1 objects, 8192 bytes\n"
)


def test_modern_format_fields():
    info = parse_bufinfo(MODERN_TEXT)
    assert info.total_objects == 2
    assert info.total_bytes == 1052672
    first, second = info.buffers
    assert (first.size, first.flags, first.mode, first.count) == (4096, 2, 0x4801F, 1)
    assert (first.exporter, first.inode, first.name) == ("system", 5, b"frame-0")
    assert first.devices == () and first.fences == ()
    assert (second.exporter, second.inode, second.name, second.count) == ("udmabuf", 4, None, 3)
    assert second.devices == ("0000:00:02.0", "udmabuf")
    assert second.fences == (b"write fence:drm_sched gfx_0.0.0 seq 42 signalled",
                             b"read fence:drm_sched gfx_0.0.0 seq 43 unsignalled")
    assert info.by_inode()[5] is first


def test_old_format_without_inode_and_name():
    (buffer,) = parse_bufinfo(OLD_TEXT).buffers
    assert (buffer.size, buffer.exporter, buffer.inode, buffer.name) == (8192, "ion", None, None)
    assert buffer.devices == ("kgsl-3d0",)
    assert buffer.fences == (b"Exclusive fence: i915 ring0 signalled",)


def test_str_input_is_accepted():
    assert parse_bufinfo(MODERN_TEXT.decode()).buffers[0].name == b"frame-0"


def test_no_buffers():
    info = parse_bufinfo(render_bufinfo([]))
    assert info.buffers == () and (info.total_objects, info.total_bytes) == (0, 0)


def test_empty_text_is_empty():
    assert parse_bufinfo(b"").buffers == ()


def test_not_bufinfo_is_refused():
    with pytest.raises(BufinfoFormatError):
        parse_bufinfo(b"size:\t4096\ncount:\t1\nexp_name:\tsystem\n")


def test_cut_off_text_keeps_what_is_complete():
    text = render_bufinfo([dict(size=4096, exporter="system", inode=7, name=b"a"),
                           dict(size=8192, exporter="system", inode=8, name=b"b")])
    second_line = text.index(b"00008192")
    cut = text[: text.index(b"\n", second_line) + 1]
    info = parse_bufinfo(cut)
    assert [b.inode for b in info.buffers] == [7, 8]
    assert info.total_objects is None


def test_empty_name_differs_from_no_name():
    text = render_bufinfo([dict(size=4096, exporter="system", inode=1, name=b""),
                           dict(size=4096, exporter="system", inode=2, name=None)])
    named_empty, unnamed = parse_bufinfo(text).buffers
    assert named_empty.name == b""
    assert unnamed.name is None


def test_large_sizes_and_inodes_wider_than_padding():
    text = render_bufinfo([dict(size=3 << 30, exporter="system", inode=123456789012,
                                count=123456789, name=b"big")])
    (buffer,) = parse_bufinfo(text).buffers
    assert (buffer.size, buffer.inode, buffer.count) == (3 << 30, 123456789012, 123456789)


@pytest.mark.parametrize("hostile", [
    b"tab\there",
    b"\ttwo\ttabs",
    b"esc\x1b[31mred\x1b[0m",
    b"\xff\xfe not utf-8 \xc3",
    b"cr\rvt\x0bff\x0c",
    b"\x1c\x1d\x1e\x85",
    b"<none>x",
    b" ",
    b"x" * 31,
])
def test_hostile_names_without_newline_round_trip(hostile):
    text = render_bufinfo([dict(size=4096, exporter="system", inode=9, name=hostile,
                                devices=["dev0"])])
    (buffer,) = parse_bufinfo(text).buffers
    assert buffer.name == hostile
    assert buffer.devices == ("dev0",)


@pytest.mark.parametrize("hostile", [
    b"\n",
    b"a\nb",
    b"\n\tAttached Devices:\n\tevil",
    b"x\nTotal 5 devices attached\n",
    b"\nTotal 9 objects, 1 bytes",
    b"\n\n\n\n",
])
def test_names_with_newlines_do_not_move_record_boundaries(hostile):
    buffers = [dict(size=4096, exporter="system", inode=1, name=hostile, devices=["real"]),
               dict(size=8192, exporter="udmabuf", inode=2, name=b"next")]
    info = parse_bufinfo(render_bufinfo(buffers))
    assert [(b.inode, b.size, b.exporter) for b in info.buffers] == [
        (1, 4096, "system"), (2, 8192, "udmabuf")]
    assert info.buffers[0].devices == ("real",)
    assert info.buffers[0].name == hostile
    assert info.buffers[1].name == b"next"
    assert (info.total_objects, info.total_bytes) == (2, 12288)


def test_printable_escapes_controls_and_bad_utf8():
    assert printable(b"ok name") == "ok name"
    assert printable(b"a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert printable(b"\xff") == "\\xff"
    assert printable("é".encode()) == "é"


# --- property tests ------------------------------------------------------------

names_without_newline = st.binary(max_size=31).filter(lambda b: b"\0" not in b and b"\n" not in b)
any_names = st.one_of(st.none(), st.binary(max_size=31).filter(lambda b: b"\0" not in b))
exporters = st.sampled_from(["system", "udmabuf", "qcom,system", "i915", "amdgpu"])
devices = st.lists(st.from_regex(r"[a-z0-9:.\-]{1,16}", fullmatch=True), max_size=3)


def buffer_dicts(names):
    return st.builds(
        dict,
        size=st.integers(min_value=1, max_value=1 << 40),
        exporter=exporters,
        inode=st.integers(min_value=1, max_value=1 << 40),
        count=st.integers(min_value=1, max_value=10_000),
        name=names,
        devices=devices,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(buffer_dicts(st.one_of(st.none(), names_without_newline)), max_size=6))
def test_names_without_newline_round_trip_exactly(buffers):
    info = parse_bufinfo(render_bufinfo(buffers))
    assert len(info.buffers) == len(buffers)
    for parsed, original in zip(info.buffers, buffers):
        expected_name = None if original["name"] in (None, b"<none>") else original["name"]
        assert parsed.name == expected_name
        assert (parsed.size, parsed.inode, parsed.exporter, parsed.count) == (
            original["size"], original["inode"], original["exporter"], original["count"])
        assert parsed.devices == tuple(original["devices"])
    assert info.total_objects == len(buffers)


@settings(max_examples=300, deadline=None)
@given(st.lists(buffer_dicts(any_names), max_size=6))
def test_any_name_keeps_buffer_count_sizes_and_inodes(buffers):
    info = parse_bufinfo(render_bufinfo(buffers))
    assert [(b.size, b.inode) for b in info.buffers] == [
        (b["size"], b["inode"]) for b in buffers]
    assert [b.devices for b in info.buffers] == [tuple(b["devices"]) for b in buffers]
    for parsed in info.buffers:
        assert isinstance(printable(parsed.name or b""), str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_crashes(garbage):
    for text in (garbage, b"\nDma-buf Objects:\n" + garbage):
        try:
            parse_bufinfo(text)
        except BufinfoFormatError:
            pass


# --- reading the file --------------------------------------------------------


def test_read_bufinfo_from_a_file(tmp_path):
    path = tmp_path / "bufinfo"
    path.write_bytes(MODERN_TEXT)
    assert len(read_bufinfo(str(path)).buffers) == 2


def test_missing_debugfs_says_how_to_mount(monkeypatch, tmp_path):
    missing = str(tmp_path / "debug" / "dma_buf" / "bufinfo")
    monkeypatch.setattr(bufinfo_module, "BUFINFO_PATH", missing)
    monkeypatch.setattr(bufinfo_module, "_debugfs_mounted", lambda mountpoint="": False)
    with pytest.raises(KernelLacks, match="mount -t debugfs"):
        bufinfo_module.read_bufinfo(missing)


def test_missing_file_with_debugfs_names_the_kernel_options(monkeypatch, tmp_path):
    missing = str(tmp_path / "bufinfo")
    monkeypatch.setattr(bufinfo_module, "_debugfs_mounted", lambda mountpoint="": True)
    with pytest.raises(KernelLacks, match="CONFIG_DEBUG_FS"):
        read_bufinfo(missing)


@pytest.mark.skipif(os.path.exists(bufinfo_module.BUFINFO_PATH),
                    reason="this kernel has debugfs bufinfo")
def test_default_path_on_this_host_is_a_clear_kernel_lacks():
    with pytest.raises(KernelLacks) as raised:
        read_bufinfo()
    assert "\n" not in str(raised.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_needs_privilege(tmp_path):
    path = tmp_path / "bufinfo"
    path.write_bytes(MODERN_TEXT)
    path.chmod(0)
    with pytest.raises(NeedsPrivilege):
        read_bufinfo(str(path))


def test_permission_error_maps_to_needs_privilege(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(NeedsPrivilege, match="root"):
        read_bufinfo("/sys/kernel/debug/dma_buf/bufinfo")

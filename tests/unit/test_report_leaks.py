"""The report's leaks section (analysis.tables.leak_groups, html.leaks_html) from a v3 session's buffers and
alloc_stacks tables alone."""
from dmabuf_top.analysis import html, tables
from dmabuf_top.recording import session as s
from dmabuf_top.recording.session import Session, SessionWriter

MIB = 1 << 20
S = 1_000_000_000


def buffer(inode, created, released, user=2, kernel=1, size=MIB, name=b"x", tgid=10):
    return s.BufferRecord(inode, "system", size, name, tgid, tgid, "load", 0, "", created, released,
                          kernel, user, f"{tgid} load")


def write(path, rows):
    writer = SessionWriter(path)
    writer.set_metadata(started_ns=100 * S)
    writer.add_all([s.AllocStack(1, "kernel", "dma_buf_export\ndma_heap_ioctl"),
                    s.AllocStack(2, "user", "make_leak+0x4 (loader)"),
                    s.AllocStack(3, "user", "other+0x1 (loader)")] + rows)
    writer.close(ended_ns=200 * S)


def test_alive_at_the_end_or_long_lived_grouped_by_stack(tmp_path):
    path = tmp_path / "leaks.session"
    write(path, [
        buffer(1, 110 * S, 0),  # alive at the end: 90 s and counting
        buffer(2, 120 * S, 0, size=2 * MIB),  # same stack, alive at the end
        buffer(3, 130 * S, 130 * S + 5_000_000, user=3),  # lived 5 ms: not a leak
        buffer(4, 101 * S, 150 * S, user=3),  # lived 49 s, released: over the threshold
        # made before the recording, in the last pass (at 190 s): alive at the end, no stack
        s.BufferSnapshot(150 * S, 5, "system", b"old", 4 * MIB, 1, 0),
        s.BufferSnapshot(190 * S, 5, "system", b"old", 4 * MIB, 1, 0),
        # seen by one early pass only: gone, after 0 s
        s.BufferSnapshot(150 * S, 6, "system", b"brief", MIB, 1, 0),
    ])
    with Session(path) as session:
        rows = tables.leak_groups(session)
        page = html.report_body(session)
    assert [(r.stack_known, [b.inode for b in r.buffers], r.alive_at_end) for r in rows] == [
        (False, [5], 1), (True, [1, 2], 2), (True, [4], 0)]
    stacked = rows[1]
    assert stacked.user_frames == ("make_leak+0x4 (loader)",) and stacked.kernel_frames[0] == "dma_buf_export"
    assert [round(t) for t in stacked.lifetimes_s] == [90, 80] and round(rows[2].lifetimes_s[0]) == 49
    section = page.split('<section id="leaks">', 1)[1].split("</section>", 1)[0]
    assert "make_leak+0x4 (loader)" in section and "&gt;=90.000" in section and "49.000" in section
    assert "no stack: made before the recording" in section and "other+0x1" in section
    assert "brief" not in section


def test_threshold_and_nothing_to_list(tmp_path):
    path = tmp_path / "none.session"
    write(path, [buffer(1, 110 * S, 111 * S)])
    with Session(path) as session:
        assert tables.leak_groups(session) == []
        assert [r.buffers[0].inode for r in tables.leak_groups(session, min_age_s=0.5)] == [1]
        assert "No buffer was alive at the end" in html.report_body(session)

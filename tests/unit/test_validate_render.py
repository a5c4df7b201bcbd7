"""The verdict table, the evidence, the session a validate run records, and the report's method section."""
import json
from types import SimpleNamespace

from dmabuf_top.analysis import methods
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.probes.iopaths import Counters, Outcome, Target
from dmabuf_top.recording.session import Session
from dmabuf_top.trace_model import TraceSnapshot
from dmabuf_top.validate import render, runner
from dmabuf_top.validate.evidence import Evidence
from dmabuf_top.validate.store import record_run
from dmabuf_top.validate.verdict import Verdict, absent

MiB = 1 << 20
SIZE = 64 * MiB
SOURCE = runner.SourceFile("/mnt/scratch/f.bin", SIZE, "d", "ext4")


def result(name, verdict, **values):
    out = runner.MethodResult(name, f"summary of {name}", "heap", False, SIZE, verdict)
    for key, value in dict(alloc_ms=1.5, io_ms=500.0, close_ms=0.2, moved=SIZE, reached=SIZE, syscalls=2,
                           checksum="ok").items():
        setattr(out, key, value)
    for key, value in values.items():
        setattr(out, key, value)
    return out


def sample_run(missing=None):
    return runner.ValidateRun([
        result("heap-read", Verdict("copies", "1 copy, via page cache", 1.0), cpu_copied=SIZE,
               page_cache_pages=16384, buffer_inode=7, device_bytes=SIZE, device_to_buffer=0,
               paths={"read": Counters(calls=2, bytes=SIZE, cpu_copied=SIZE, pc_added=16384).to_dict()},
               evidence=[{"stack_id": 3, "point": "cpu_copy_read", "path": "read", "hits": 2, "amount": SIZE,
                          "unit": "bytes",
                          "frames": ["bpf_prog_1_copy", "bpf_trampoline_2", "vfs_read", "ksys_read"]}]),
        result("udmabuf-read-direct", Verdict("zero-copy", "zero-copy", 0.0), pinned_pages=16384, device_bytes=SIZE,
               device_to_buffer=SIZE),
        result("heap-read-direct", Verdict("failed", "failed (EFAULT)"), errno=14, checksum=None, moved=0, reached=0),
        result("heap-rwfile-ioctl", absent("absent on this kernel (ENOTTY)"), alloc_ms=None, io_ms=None,
               close_ms=None, checksum=None),
        result("evil\x1b[2J\nname", Verdict("copies", "1 copy\x1b[31m", 1.0), cpu_copied=SIZE),
    ], SOURCE, False, [HookState("copy_filemap_read", "cpu_copy", "filemap_read", State.LIVE, "fentry", "ok")],
        missing or {}, {3: ["bpf_prog_1_copy", "bpf_trampoline_2", "vfs_read", "ksys_read"]})


def test_table_rows_and_columns():
    lines = render.render_table(sample_run()).splitlines()
    assert lines[0].split()[:4] == ["METHOD", "ALLOC", "ms", "I/O"]
    heap = next(line for line in lines if line.startswith("heap-read "))
    assert heap.split() == ["heap-read", "1.5", "500.0", "128", "1.00", "0.00", "16384", "0", "2", "ok", "1", "copy,",
                            "via", "page", "cache"]
    direct = next(line for line in lines if line.startswith("udmabuf-read-direct"))
    assert direct.split()[4:6] == ["0.00", "1.00"]  # no copy; the device wrote the whole payload into the buffer
    failed = next(line for line in lines if line.startswith("heap-read-direct"))
    assert failed.split()[3:5] == ["-", "-"] and failed.endswith("failed (EFAULT)")
    assert next(line for line in lines if line.startswith("heap-rwfile-ioctl")).endswith("absent on this kernel")
    assert "64.0 MiB on ext4" in render.render_table(sample_run())


def test_hostile_names_and_labels_stay_on_one_line_without_escapes():
    text = render.render_table(sample_run()) + render.render_evidence(sample_run())
    assert "\x1b" not in text
    assert "evil\\x1b[2J\\nname" in text


def test_untraced_counters_are_nt_not_zero():
    run = sample_run(missing={"gup": "fentry refused (EPERM)"})
    run.results[1].pinned_pages = None
    lines = render.render_table(run).splitlines()
    assert next(line for line in lines if line.startswith("udmabuf-read-direct")).split()[7] == "n/t"
    assert "n/t = not traced: gup: fentry refused (EPERM)" in lines


def test_evidence_names_the_hooked_point_and_leaves_our_probe_frames_out():
    text = render.render_evidence(sample_run())
    assert "copy at filemap_read in read(): 64.0 MiB over 2 hits: vfs_read <- ksys_read" in text
    assert "bpf_prog" not in text
    assert "absent on this kernel: heap-rwfile-ioctl" in text


def test_json_is_valid_and_complete():
    data = json.loads(json.dumps(sample_run().to_dict()))
    rows = {row["name"]: row for row in data["methods"]}
    assert rows["heap-read"]["mb_s"] == 128.0
    assert rows["heap-read-direct"]["errno_name"] == "EFAULT" and rows["heap-read-direct"]["mb_s"] is None
    assert rows["heap-read"]["verdict"] == {"kind": "copies", "label": "1 copy, via page cache", "copies": 1.0,
                                            "reasons": []}
    assert data["file"]["filesystem"] == "ext4"
    assert (rows["udmabuf-read-direct"]["device_bytes"], rows["udmabuf-read-direct"]["device_to_buffer"]) == (SIZE,
                                                                                                            SIZE)
    assert rows["heap-read-direct"]["device_to_buffer"] is None  # no DMA evidence taken: null, never 0


def test_a_method_without_dma_evidence_shows_nt_in_dev_to_buf():
    lines = render.render_table(sample_run()).splitlines()
    assert next(line for line in lines if line.startswith("evil")).split()[5] == "n/t"
    assert any("DEV->BUF = bytes the device wrote into the buffer's own pages" in line for line in lines)


def test_a_recorded_run_reports_a_method_comparison(tmp_path):
    import io

    from dmabuf_top.analysis.html import HtmlRenderer

    path = tmp_path / "v.session"
    record_run(sample_run(), str(path))
    with Session(str(path)) as session:
        assert [name for (name,) in session.query("SELECT name FROM methods ORDER BY rowid")][:2] == [
            "heap-read", "udmabuf-read-direct"]
        assert "validate" not in session.metadata  # v1 kept the run as a JSON blob there
        assert session.query("SELECT path, bytes, cpu_copied_bytes, inode FROM path_samples") == [
            ("read", SIZE, SIZE, 7)]
        assert session.query("SELECT frames FROM stacks WHERE id=3")[0][0].endswith("ksys_read")
        assert session.query("SELECT name, device_bytes, device_to_buffer FROM methods ORDER BY rowid")[:3] == [
            ("heap-read", SIZE, 0), ("udmabuf-read-direct", SIZE, SIZE), ("heap-read-direct", None, None)]
        out = io.StringIO()
        HtmlRenderer().render(session, out)
    page = out.getvalue()
    assert 'id="methods"' in page and 'id="fig-methods"' in page
    assert "udmabuf-read-direct" in page and "failed (EFAULT)" in page
    assert "<th>device-&gt;buffer</th>" in page and f'<td class="n">{SIZE}</td><td class="n">{SIZE}</td>' in page
    assert "\x1b" not in page and "evil\\x1b[2J\\nname" in page


def test_a_plain_session_has_no_method_section(tmp_path):
    import io

    from dmabuf_top.analysis.html import HtmlRenderer
    from dmabuf_top.recording.session import SessionWriter

    path = tmp_path / "plain.session"
    SessionWriter(str(path)).close()
    with Session(str(path)) as session:
        assert methods.rows(session) == []
        out = io.StringIO()
        HtmlRenderer().render(session, out)
    assert 'id="methods"' not in out.getvalue()


# -- a user's command, judged on the calls that reached a dma-buf or memfd


def snapshot(targets=(), outcomes=(), tasks=()):
    return TraceSnapshot(dict(targets), dict(tasks), dict(outcomes), {}, {}, {}, 0, [])


def test_a_command_is_judged_on_its_buffer_calls_only():
    startup = Target(11, 1, "read", "none", False)  # an interpreter reading its modules: copies, not the payload
    load = Target(99, 2, "read", "shmem", True)
    after = snapshot(
        targets=[(startup, Counters(calls=50, bytes=MiB, cpu_copied=MiB, pc_added=256)),
                 (load, Counters(calls=1, bytes=SIZE, pinned_pages=16384))],
        outcomes=[(Outcome("read", "file", "none", 0, "virtiofs/fuse", "-"), {"calls": 50, "bytes": MiB}),
                  (Outcome("read", "file", "shmem", 0, "ext4", "tmpfs"), {"calls": 1, "bytes": SIZE})],
        tasks=[((5, "read"), Counters(calls=51, bytes=SIZE + MiB, cpu_copied=MiB, pinned_pages=16384))])
    out = runner.MethodResult("python3", "python3 load", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0, Evidence(SIZE + MiB, SIZE, SIZE // 4096))
    assert out.verdict.kind == "zero-copy", out.verdict
    assert (out.payload, out.pinned_pages, out.cpu_copied) == (SIZE, 16384, 0)
    assert "read into anonymous memory" in out.notes[0]


def test_a_command_that_loads_nothing_into_buffers_is_unmeasured():
    after = snapshot(outcomes=[(Outcome("read", "file", "none", 0, "ext4", "-"), {"calls": 1, "bytes": SIZE})])
    out = runner.MethodResult("cat", "cat f", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0)
    assert out.verdict.kind == "unmeasured"
    assert "no traced call moved bytes into a dma-buf or a memfd" in out.verdict.reasons


def test_a_command_whose_only_buffer_call_failed_is_failed_with_the_errno():
    after = snapshot(outcomes=[(Outcome("read", "file", "dmabuf", -14, "ext4", "dmabuf"), {"calls": 1, "bytes": 0})])
    out = runner.MethodResult("loader", "loader", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 1)
    assert out.verdict.label == "failed (EFAULT)"


def test_page_faults_of_a_command_are_a_note_not_a_verdict():
    load = Target(99, 2, "read", "shmem", True)
    after = snapshot(targets=[(load, Counters(calls=1, bytes=SIZE, pinned_pages=16384))],
                     outcomes=[(Outcome("read", "file", "shmem", 0, "ext4", "tmpfs"), {"calls": 1, "bytes": SIZE})],
                     tasks=[((5, "read"), Counters(calls=1, bytes=SIZE, pinned_pages=16384)),
                            ((5, "other"), Counters(pc_added=300))])
    out = runner.MethodResult("python3", "python3 load", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0, Evidence(SIZE, SIZE, SIZE // 4096))
    assert out.verdict.kind == "zero-copy"
    assert any("300 page-cache pages were added by page faults" in note for note in out.notes)


def test_a_command_without_dma_evidence_is_never_zero_copy():
    # Was "zero-copy" before issue 15 (the first test above, without evidence): no copy seen is no proof.
    load = Target(99, 2, "read", "shmem", True)
    after = snapshot(targets=[(load, Counters(calls=1, bytes=SIZE, pinned_pages=16384))],
                     outcomes=[(Outcome("read", "file", "shmem", 0, "ext4", "tmpfs"), {"calls": 1, "bytes": SIZE})])
    out = runner.MethodResult("python3", "python3 load", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0)
    assert out.verdict.kind == "unmeasured" and out.device_to_buffer is None


def test_a_command_that_memcpys_from_a_file_mapping_into_its_udmabuf_is_a_copy():
    # No traced call moved a byte into the buffer; the device wrote the file's page cache (faulted in through the
    # mapping), and the command's udmabuf holds the payload: copied by user space where no hook sees.
    after = snapshot(tasks=[((5, "other"), Counters(pc_added=SIZE // 4096 + 500))])
    out = runner.MethodResult("python3", "python3 mmap-load", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0, Evidence(SIZE + MiB, 0, SIZE // 4096))
    assert out.payload == SIZE and out.verdict.kind == "copies", out.verdict
    assert "the buffer's bytes came from a file mapping: a user-space copy" in out.verdict.reasons
    assert "unseen" in out.verdict.label


def test_a_command_that_reads_o_direct_into_anonymous_memory_then_copies_is_a_copy():
    # The fooling case: no kernel copy seen, no page cache, pages pinned; the device wrote elsewhere.
    after = snapshot(outcomes=[(Outcome("read", "file", "none", 0, "ext4", "-"), {"calls": 1, "bytes": SIZE})],
                     tasks=[((5, "read"), Counters(calls=1, bytes=SIZE, pinned_pages=16384))])
    out = runner.MethodResult("python3", "python3 anon-load", "command", False, 0, absent("?"))
    runner.measure_command(out, snapshot(), after, {}, 5, 0, Evidence(SIZE, 0, SIZE // 4096))
    assert out.verdict.kind == "copies" and out.verdict.copies == 1.0
    assert "device wrote 64.0 MiB into pages that are not the buffer's: copied where no hook sees" in (
        out.verdict.reasons)


def test_a_long_method_name_widens_its_column_instead_of_shifting_the_others():
    run = sample_run()
    run.results[0].name = "udmabuf-rwfile-ioctl-direct-and-more"
    lines = render.render_table(run).splitlines()[:len(run.results) + 1]
    header_alloc_end = lines[0].index("ALLOC ms") + len("ALLOC ms")
    assert all(line[header_alloc_end - 3:header_alloc_end] in ("1.5", "  -") for line in lines[1:]), lines


MIB = 1 << 20


def _method(name, verdict, payload=64 * MIB, cpu_copied=0, device_to_buffer=None, label=None):
    return SimpleNamespace(name=name, verdict=verdict, verdict_label=label or verdict, payload=payload, io_ms=10.0,
                           cpu_copied=cpu_copied, device_to_buffer=device_to_buffer)


def test_copies_no_hook_saw_are_their_own_share_of_the_copies_bar():
    # The bounce loader: O_DIRECT into anonymous memory (the device's writes land outside the buffer), then a
    # user-space memcpy no hook sees: one whole copy, all of it unseen.
    bounce = _method("bounce", "copies", cpu_copied=0, device_to_buffer=0, label="1 copy, 64.0 MiB unseen")
    buffered = _method("buffered", "copies", cpu_copied=64 * MIB, device_to_buffer=0)
    direct = _method("direct", "zero-copy", cpu_copied=0, device_to_buffer=64 * MIB)
    untraced = _method("untraced", "copies", cpu_copied=None, device_to_buffer=0)
    assert methods.copy_shares(bounce) == (0.0, 1.0)
    assert methods.copy_shares(buffered) == (1.0, 0.0)
    assert methods.copy_shares(direct) == (0.0, 0.0)
    assert methods.copy_shares(untraced) == (0.0, 0.0)  # not traced: no bar, the label says so
    assert methods.copy_shares(_method("no-evidence", "unmeasured", cpu_copied=0)) == (0.0, 0.0)
    figure = methods.comparison_figure([bounce, buffered, direct])
    copies = figure.axes[1]
    hatched = [bar.get_width() for bar in copies.patches if bar.get_hatch()]
    assert hatched == [1.0, 0.0, 0.0]

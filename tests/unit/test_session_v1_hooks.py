"""A schema-v1 session (tests/data/session-v1.db) still reads: its missing hooks stay missing, never zero.

The file was written by the v1 code (commit b0ad40b, SessionWriter + record_sources.hook_rows): hooks
rows without a concern or state column, where "not needed: " in the detail and the program name
(copy_*, gup_*) were all that told a missing hook from one that was not needed. Its cpu_copy programs
were refused, gup and page cache were live, rw_file and follow_fork were not needed.
"""
from pathlib import Path

from dmabuf_top.analysis import tables
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording.session import SCHEMA_VERSION, Hook, PathSample, Session, SessionWriter

V1_SESSION = Path(__file__).resolve().parent.parent / "data" / "session-v1.db"


def test_v1_session_reports_its_missing_concerns():
    with Session(V1_SESSION) as session:
        assert session.schema_version == 1
        assert tables.untraced_concerns(session) == {"cpu_copy"}
        states = {hook.name: hook.state for hook in session.hooks()}
        assert states["rw_file_enter"] is states["syscall_enter_raw"] is State.NOT_NEEDED
        assert states["copy_filemap_read"] is State.MISSING and states["gup_fast_enter"] is State.LIVE
        assert [name for name, _ in tables.missing_hooks(session)] == ["copy_filemap_read",
                                                                       "copy_generic_perform_write"]
        (read,) = tables.path_totals(session)
        assert read.path == "read" and read.bytes == 3 * 65536
        assert read.cpu_copied_bytes is None  # not traced: never shown as 0
        assert read.pinned_bytes == 3 * 3 * session.page_size


def test_v2_stores_the_concern_and_state_so_program_names_do_not_matter(tmp_path):
    """A renamed program is still the concern it counts: a missing hook never becomes a zero in reports."""
    path = tmp_path / "v2.session"
    with SessionWriter(path) as writer:
        writer.add(Hook("renamed_copy_program", "cpu_copy", State.MISSING, "", "filemap_read: fentry refused"))
        writer.add(Hook("copy_fallback", "gup", State.NOT_NEEDED, "", "its primary is live"))
        writer.add(PathSample(1_000_000_000, 0, 1, "read", 4096, 0, 1, 0, 1, 0))
    with Session(path) as session:
        assert session.schema_version == SCHEMA_VERSION >= 2
        assert session.hooks()[1] == Hook("renamed_copy_program", "cpu_copy", State.MISSING, "",
                                          "filemap_read: fentry refused")
        assert tables.untraced_concerns(session) == {"cpu_copy"}
        assert tables.missing_hooks(session) == [("renamed_copy_program", "filemap_read: fentry refused")]
        (read,) = tables.path_totals(session)
        assert read.cpu_copied_bytes is None and read.pinned_bytes == session.page_size

"""A schema-v1 session (tests/data/session-v1.db) still reads: its missing hooks stay missing, never zero.

The file was written by the v1 code (commit b0ad40b, SessionWriter + record_sources.hook_rows): hooks
rows without a concern or state column, where "not needed: " in the detail and the program name
(copy_*, gup_*) were all that told a missing hook from one that was not needed. Its cpu_copy programs
were refused, gup and page cache were live, rw_file and follow_fork were not needed.
"""
from pathlib import Path

from dmabuf_top.analysis import tables
from dmabuf_top.session import Session

V1_SESSION = Path(__file__).resolve().parent.parent / "data" / "session-v1.db"


def test_v1_session_reports_its_missing_concerns():
    with Session(V1_SESSION) as session:
        assert tables.untraced_concerns(session) == {"cpu_copy"}
        (read,) = tables.path_totals(session)
        assert read.path == "read" and read.bytes == 3 * 65536
        assert read.cpu_copied_bytes is None  # not traced: never shown as 0
        assert read.pinned_bytes == 3 * 3 * session.page_size

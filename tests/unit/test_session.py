"""The session file: schema, batching, round trip, and one clear error for every file it cannot read."""
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.cli import main
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording.session import Session, SessionError, SessionWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EVERY_RECORD = [
    s.BufferSnapshot(10, 7, "system", b"w\x00\xff\x1b[31m<b>", 4096, 2, 1, 0),
    s.BufferSnapshot(11, 8, "udmabuf", None, 8192, 1, 0, 1234),
    s.LifecycleEvent(12, 7, "export", 100, "load", 4096, -1),
    s.PathSample(13, 7, 100, "read", 4096, 4096, 0, 1, 1, 0),
    s.IoEvent(14, 500, 100, 101, "load", "read", 7, 4096, 0, 3, 4096, 0),
    s.Stack(3, "copy_page_to_iter\nfilemap_read"),
    s.StackCount(3, "copy_read", "read", 1, 4096),
    s.LatencyBucket("read", 0, 1),
    s.TaskstatsSample(15, 100, 101, "load", 1, 2, 3, 4, 5, 6, 7, 8, 9),
    s.Drop(16, "ringbuf", 2),
    s.Hook("fn/filemap_read", "cpu_copy", State.MISSING, "", "fentry refused (EPERM)"),
]


def write_session(path, records=(), **writer_options):
    with SessionWriter(path, **writer_options) as writer:
        writer.set_metadata(command=["true"])
        for record in records:
            writer.add(record)
    return path


def error_of(path):
    with pytest.raises(SessionError) as caught:
        Session(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_schema_is_marked_and_file_private(tmp_path):
    path = write_session(tmp_path / "a.session")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == s.APPLICATION_ID == 0x646D6274
    assert db.execute("PRAGMA user_version").fetchone()[0] == s.SCHEMA_VERSION
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(s.TABLE_OF.values()) | {"metadata", "features"} <= tables
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(f"{path}-journal")


def test_every_record_type_round_trips(tmp_path):
    path = write_session(tmp_path / "a.session", EVERY_RECORD)
    with Session(path) as session:
        for record_type in s.TABLE_OF:
            assert session.records(record_type) == [r for r in EVERY_RECORD if type(r) is record_type]
        assert session.end_reason == "completed"
        assert session.metadata["command"] == ["true"]


def test_features_and_end(tmp_path):
    path = tmp_path / "a.session"
    writer = SessionWriter(path)
    writer.set_features({"kernel": {"release": "7.2.13"},
                         "features": {"fentry": {"available": False, "via": None, "detail": "EPERM"}}})
    assert writer.close("command exited with code 3", 3) == "command exited with code 3"
    with Session(path) as session:
        assert session.features() == {"fentry": (False, None, "EPERM")}
        assert session.metadata["kernel"] == {"release": "7.2.13"}
        assert (session.end_reason, session.exit_code) == ("command exited with code 3", 3)


def test_batches_commit_by_rows_and_by_time(tmp_path):
    now = [0.0]
    path = tmp_path / "a.session"
    writer = SessionWriter(path, batch_rows=3, batch_seconds=10, clock=lambda: now[0])
    rows = [s.Drop(i, "ringbuf", 1) for i in range(4)]

    def committed():
        with Session(path) as session:
            return session.count(s.Drop)

    writer.add(rows[0])
    writer.add(rows[1])
    assert committed() == 0
    writer.add(rows[2])
    assert committed() == 3
    writer.add(rows[3])
    writer.tick()
    assert committed() == 3
    now[0] = 10.0
    writer.tick()
    assert committed() == 4
    writer.close()


def test_an_unclosed_writer_reads_as_unfinished(tmp_path):
    path = tmp_path / "a.session"
    writer = SessionWriter(path)
    writer.add(s.Drop(1, "ringbuf", 1))
    writer.flush()
    with Session(path) as session:
        assert session.end_reason.startswith("unfinished")
        assert session.exit_code is None
    writer.close()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_session(tmp_path / "a.session")
    with pytest.raises(SessionError, match="already exists.*--force"):
        SessionWriter(path)
    SessionWriter(path, overwrite=True).close()
    with Session(path) as session:
        assert "command" not in session.metadata


WRITER = textwrap.dedent("""
    import sys
    from dmabuf_top.recording import session as s
    writer = s.SessionWriter(sys.argv[1], batch_rows=100, batch_seconds=3600)
    i = 0
    while True:
        writer.add(s.IoEvent(i, 1, 1, 1, "w", "read", 0, 4096))
        i += 1
        if i % 100 == 0:
            print(i, flush=True)
""")


def test_sigkill_leaves_every_committed_row_readable(tmp_path):
    path = tmp_path / "killed.session"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    committed = 0
    while committed < 3000:
        committed = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with Session(path) as session:
        rows = session.count(s.IoEvent)
        assert rows >= 3000 and rows % 100 == 0
        times = [event.time_ns for event in session.records(s.IoEvent)]
        assert times == list(range(rows))
        assert session.end_reason.startswith("unfinished")


def test_truncated_file(tmp_path):
    path = write_session(tmp_path / "a.session", [s.IoEvent(i, 1, 1, 1, "w", "read", 0, 1) for i in range(5000)])
    size = os.path.getsize(path)
    os.truncate(path, size // 2)
    assert error_of(path) == f"{path} is truncated ({size // 2} of {size} bytes): copy the whole file, or record again"
    os.truncate(path, 50)
    assert "is truncated" in error_of(path)


def test_foreign_sqlite_file(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    assert error_of(path) == f"{path} is an SQLite file but not a dmabuf-top session"


@pytest.mark.parametrize("version, words", [(s.SCHEMA_VERSION + 1, "newer"), (0, "older")])
def test_other_schema_versions(tmp_path, version, words):
    path = write_session(tmp_path / "a.session")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()
    message = error_of(path)
    readable = s.SCHEMA_VERSION if words == "newer" else s.OLDEST_READABLE_VERSION
    assert f"session schema v{version}, {words} than the v{readable}" in message


def test_random_bytes_empty_missing_and_directory(tmp_path):
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(8192))
    assert error_of(noise) == f"{noise} is not a dmabuf-top session (not an SQLite file)"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert "is empty" in error_of(empty)
    assert "no such file" in error_of(tmp_path / "missing")
    assert "is a directory" in error_of(tmp_path)


def test_damaged_pages(tmp_path):
    path = write_session(tmp_path / "a.session", [s.IoEvent(i, 1, 1, 1, "w", "read", 0, 1) for i in range(5000)])
    with open(path, "r+b") as file:
        file.seek(os.path.getsize(path) // 2 // 4096 * 4096)
        file.write(os.urandom(4096 * 4))
    with pytest.raises(SessionError, match="is damaged"):
        with Session(path) as session:
            session.records(s.IoEvent)


def test_cli_says_one_line(tmp_path, capsys):
    noise = tmp_path / "noise.session"
    noise.write_bytes(b"not a session at all")
    assert main(["report", str(noise), "-o", str(tmp_path / "r.html")]) == SessionError.exit_code
    err = capsys.readouterr().err
    assert err == f"dmabuf-top: {noise} is not a dmabuf-top session (not an SQLite file)\n"


def test_a_file_that_cannot_be_replaced_is_one_error_line():
    # procfs refuses unlink even to root, as a read-only results directory does (EROFS).
    with pytest.raises(SessionError, match=r"^cannot create /proc/version: "):
        SessionWriter("/proc/version", overwrite=True)

"""A full disk ends a session cleanly: a tiny tmpfs (root) fills up under a writer."""
import os
import subprocess

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.cli import main
from dmabuf_top.recording.session import Session, SessionWriter

pytestmark = pytest.mark.root


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_keeps_what_was_committed(tiny_disk):
    path = tiny_disk / "full.session"
    writer = SessionWriter(path, batch_rows=100)
    added = 0
    while not writer.disk_full:
        writer.add(s.IoEvent(added, 1, 1, 1, "w", "read", 0, 4096))
        added += 1
        assert added < 100_000, "a 256 KiB disk never filled up"
    assert writer.close("completed", 0) == f"disk full ({writer.rows_lost} rows not saved)"
    assert writer.rows_lost == 100 and writer.rows_committed == added - 100
    with Session(path) as session:
        assert session.count(s.IoEvent) == writer.rows_committed
        assert session.end_reason == "disk full (100 rows not saved)"
        assert session.exit_code == 0
    assert os.listdir(tiny_disk) == ["full.session"]


def test_report_onto_a_full_disk_leaves_no_partial_file(tiny_disk, tmp_path, capsys):
    session_path = tmp_path / "ok.session"
    with SessionWriter(session_path) as writer:
        writer.add(s.BufferSnapshot(1, 5, "system", b"x", 4096, 1, 0))
    filler = tiny_disk / "filler"
    with open(filler, "wb") as file:
        try:
            file.write(b"\0" * (512 * 1024))
        except OSError:
            pass
    assert main(["report", str(session_path), "-o", str(tiny_disk / "r.html")]) == 1
    assert capsys.readouterr().err == (f"dmabuf-top: cannot write {tiny_disk / 'r.html'}: No space left on device; "
                                       "nothing was written\n")
    assert sorted(os.listdir(tiny_disk)) == ["filler"]

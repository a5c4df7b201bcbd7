"""`dmabuf-top report` and `flame`: formats, overwrite protection, comparisons, one-line errors."""
import json
import os

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.cli import main
from dmabuf_top.analysis.renderers import guess_format
from dmabuf_top.recording.session import SessionWriter


@pytest.fixture
def recorded(tmp_path):
    path = tmp_path / "run.session"
    with SessionWriter(path) as writer:
        writer.add(s.BufferSnapshot(1, 5, "system", b"model", 4096, 1, 0))
        writer.add(s.IoEvent(2, 1000, 9, 9, "load", "read", 5, 4096, 0, 1))
        writer.add(s.Stack(1, "copy_page_to_iter\nfilemap_read"))
    return path


@pytest.mark.parametrize("name, fmt", [("r.html", "html"), ("r.trace.json", "perfetto"), ("r.perfetto.json", "perfetto"),
                                       ("r.json", "json"), ("r.CSV", "csv"), (None, "html"), ("r.txt", "html"),
                                       ("r.flame.svg", "svg"), ("r.svg", "svg"), ("r.folded", "folded")])
def test_format_from_the_output_name(name, fmt):
    assert guess_format(name) == fmt


def test_flame_chooses_among_its_formats_from_the_same_registry(recorded, tmp_path):
    assert guess_format("x.html", ("svg", "folded"), default="svg") == "svg"
    folded = tmp_path / "stacks.folded"
    assert main(["flame", str(recorded), "-o", str(folded)]) == 0
    assert folded.read_text() == "read;filemap_read;copy_page_to_iter 4096\n"
    assert main(["flame", str(recorded), "--format", "svg", "-o", str(tmp_path / "f.txt")]) == 0
    assert (tmp_path / "f.txt").read_text().startswith("<svg")
    assert main(["report", str(recorded), "-o", str(tmp_path / "r.svg")]) == 0
    assert (tmp_path / "r.svg").read_text().startswith("<svg")


def test_report_formats_and_no_overwrite(recorded, tmp_path, capsys):
    html = tmp_path / "r.html"
    assert main(["report", str(recorded), "-o", str(html), "--figures", str(tmp_path / "figs")]) == 0
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert len(os.listdir(tmp_path / "figs")) == 10
    before = html.stat().st_mtime_ns
    assert main(["report", str(recorded), "-o", str(html)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    assert html.stat().st_mtime_ns == before
    assert main(["report", str(recorded), "-o", str(html), "--force"]) == 0
    trace = tmp_path / "r.trace.json"
    assert main(["report", str(recorded), "-o", str(trace)]) == 0
    assert json.loads(trace.read_text())["traceEvents"]
    assert main(["report", str(recorded), "-o", str(tmp_path / "t.csv"), "--table", "paths"]) == 0
    assert (tmp_path / "t.csv").read_text().splitlines()[1].startswith("read,1,0,4096")
    assert main(["report", str(recorded), "--format", "json", "-o", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["buffers"][0]["name"] == "model"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".dmabuf-top-")]


def test_default_output_name(recorded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(recorded)]) == 0
    assert (tmp_path / "run.html").exists()


def test_compare_two_sessions(recorded, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert main(["report", str(recorded), str(recorded), "-o", str(out)]) == 0
    assert 'id="deltas"' in out.read_text()
    assert main(["report", str(recorded), str(recorded), "-o", str(tmp_path / "c.csv")]) == 2
    assert "HTML only" in capsys.readouterr().err


def test_flame(recorded, tmp_path, capsys):
    assert main(["flame", str(recorded), "--folded"]) == 0
    assert capsys.readouterr().out == "read;filemap_read;copy_page_to_iter 4096\n"
    svg = tmp_path / "f.svg"
    assert main(["flame", str(recorded), "-o", str(svg)]) == 0
    assert svg.read_text().startswith("<svg")
    assert main(["flame", str(recorded), "-o", str(svg)]) == 2

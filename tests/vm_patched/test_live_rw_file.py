"""The live view on the patched kernel: a workload loading a file with DMA_BUF_IOCTL_RW_FILE shows up on the
rw_file path, in its buffer's XFER column and in --json (tests/unit/test_live_rw_file.py has the rules;
tests/vm/test_live.py the stock kernel's 'absent')."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
from rw_file_request import SCRATCH

from dmabuf_top.live.jsonout import JSON_SCHEMA

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = str(ROOT / ".venv" / "bin" / "dmabuf-top")
SIZE = 8 << 20
WORKLOAD = textwrap.dedent("""\
    import os, sys, time
    sys.path.insert(0, sys.argv[2])
    from dmabuf_top.alloc import alloc_heap
    from dmabuf_top.validate.methods import RW_FILE_READ
    from rw_file_request import rw_file
    buffer = alloc_heap(8 << 20, name="live-rwfile")
    print("ready", buffer.inode, flush=True)
    while True:
        fd = os.open(sys.argv[1], os.O_RDONLY)
        assert rw_file(buffer.fd, fd, RW_FILE_READ, 0, 0, 8 << 20) == 8 << 20
        os.close(fd)
        time.sleep(0.05)
    """)


@pytest.fixture
def loader():
    path = os.path.join(SCRATCH, "live-rwfile.bin")
    with open(path, "wb") as out:
        out.write(os.urandom(SIZE))
    process = subprocess.Popen([sys.executable, "-c", WORKLOAD, path, str(Path(__file__).parent)],
                               stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        line = process.stdout.readline().split()
        assert line[:1] == ["ready"], line
        yield process, int(line[1])
    finally:
        process.kill()
        process.wait()
        os.unlink(path)


def test_json_shows_the_rw_file_path_and_the_buffers_xfer(loader):
    process, inode = loader
    out = subprocess.run([DMABUF_TOP, "--json", "1", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    objects = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(objects) == 2
    for obj in objects:
        jsonschema.validate(obj, JSON_SCHEMA)
        assert "rw_file" in obj["hooks"]["live"] and "rw_file" not in obj["hooks"]["absent"]
        path = next(p for p in obj["paths"] if p["path"] == "rw_file")
        assert path["status"].startswith("traced") and path["bytes"] > 0 and path["calls"] > 0
        buffer = next(b for b in obj["buffers"] if b["inode"] == inode)
        assert buffer["name"] == "live-rwfile" and buffer["xfer"] > 0 and buffer["read"] == 0
        assert buffer["paths"]["rw_file"]["bytes"] > 0
        loader_row = next(p for p in obj["processes"] if p["pid"] == process.pid)
        assert loader_row["xfer"] > 0 and loader_row["paths"]["rw_file"]["bytes"] > 0

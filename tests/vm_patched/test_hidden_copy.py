"""A kernel path that copies where no hook sees is never called zero-copy (issue 15, item 5).

kernel/series/rw-file-hidden-copy gives the heap and udmabuf a switch (a module parameter, off by default):
when on, a direct DMA_BUF_IOCTL_RW_FILE read makes the device write into bounce pages of the exporter's own,
then memcpy's them into the buffer. Every hook sees what it sees on the honest path (rw_file, direct, no copy,
no page cache); only where the device wrote tells them apart. The same methods, the same kernel, the switch
flipped: zero-copy with the device writing the payload into the buffer when off, one copy unseen when on.
"""
import contextlib
import json
import os
import subprocess
import sys

import pytest
from rw_file_request import SCRATCH

from dmabuf_top.validate import render, runner

pytestmark = pytest.mark.guest

SIZE = 64 << 20
COMMAND_SIZE = 16 << 20
SWITCHES = {"heap": "/sys/module/system_heap/parameters/rw_file_hidden_copy",
            "udmabuf": "/sys/module/udmabuf/parameters/rw_file_hidden_copy"}
METHODS = ("heap-rwfile-ioctl-direct", "udmabuf-rwfile-ioctl-direct")


def switch_state():
    state = {}
    for kind, path in SWITCHES.items():
        with open(path) as knob:
            state[kind] = knob.read().strip()
    return state


@contextlib.contextmanager
def hidden_copy(on):
    for path in SWITCHES.values():
        with open(path, "w") as knob:
            knob.write("Y" if on else "N")
    try:
        yield
    finally:
        for path in SWITCHES.values():
            with open(path, "w") as knob:
                knob.write("N")


def test_the_switch_exists_and_is_off_by_default():
    # Every other test of this suite judges the honest rw_file path on this same kernel.
    assert switch_state() == {"heap": "N", "udmabuf": "N"}


@pytest.fixture(scope="module")
def matrices():
    """{on: {name: MethodResult}}, the same methods with the switch off and on."""
    out = {}
    for on in (False, True):
        with hidden_copy(on):
            run = runner.run_matrix(SCRATCH, SIZE, names=list(METHODS))
        print(f"hidden copy {'on' if on else 'off'}:\n{render.render_table(run)}")
        out[on] = {result.name: result for result in run.results}
    return out


@pytest.mark.parametrize("name", METHODS)
def test_off_the_direct_ioctl_is_zero_copy_by_dma_evidence(matrices, name):
    result = matrices[False][name]
    assert result.verdict.kind == "zero-copy", (result.verdict, result.to_dict())
    assert result.checksum == "ok" and result.moved == SIZE
    assert result.device_to_buffer == SIZE, result.to_dict()


@pytest.mark.parametrize("name", METHODS)
def test_on_the_same_ioctl_is_one_copy_no_hook_saw(matrices, name):
    result = matrices[True][name]
    # What every hook sees is what it sees on the honest path: the bytes right, rw_file direct, no copy, no cache.
    assert result.checksum == "ok" and result.moved == result.reached == SIZE
    assert result.cpu_copied == 0 and result.page_cache_pages == 0 and result.pinned_pages == 0
    assert set(result.paths) == {"rw_file"}
    assert set(matrices[False][name].paths) == {"rw_file"}
    # Where the device wrote: not into the buffer.
    assert result.device_to_buffer == 0 and result.device_bytes >= SIZE, result.to_dict()
    assert result.verdict.kind == "copies" and result.verdict.copies == 1.0, result.verdict
    assert result.verdict.label == "1 copy, no page cache, 64.0 MiB unseen"
    assert any("into pages that are not the buffer's: copied where no hook sees" in why
               for why in result.verdict.reasons), result.verdict.reasons


@pytest.fixture(scope="module")
def command_file():
    source = runner.prepare_file(SCRATCH, COMMAND_SIZE, name="validate-hidden-copy.bin")
    yield source.path
    os.unlink(source.path)


def validate_loader(method, path):
    runner.drop_page_cache(path)
    return subprocess.run([sys.executable, "-m", "dmabuf_top", "validate", "--expect", "zero-copy", "--json", "--",
                           sys.executable, "-m", "dmabuf_top.validate.load", method, path],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_expect_zero_copy_on_a_loader_using_the_ioctl_follows_the_switch(command_file, method, on):
    with hidden_copy(on):
        done = validate_loader(method, command_file)
    row = json.loads(done.stdout.splitlines()[-1])["methods"][0]
    assert row["payload"] == COMMAND_SIZE, row
    if on:
        assert done.returncode == 1, done.stdout + done.stderr
        assert "did not hold" in done.stderr
        assert (row["verdict"]["kind"], row["device_to_buffer"], row["cpu_copied"]) == ("copies", 0, 0), row
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert (row["verdict"]["kind"], row["device_to_buffer"]) == ("zero-copy", COMMAND_SIZE), row

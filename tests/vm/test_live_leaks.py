"""The live view's Leaks pane and the creators' bytes per cgroup (live view and exporter), on real buffers.

- The Leaks pane (key 6) read in tmux as a user reads it: tests/vm/leak_creator.c makes, while the view watches,
  a buffer kept by a mapping alone and one made by a child that exited after passing it to its parent; each is
  listed with its creator ("exited" for the child, though its buffer lives on in a running holder: the holder is
  not the creator) and the user function that allocated it, from its allocation stack. A buffer this test made
  before the view started is listed without a stack, saying so, with an age that is a lower bound (though its
  creator, this very process, is alive and holds it: it must not be named the creator).
- Created bytes: the cgroups pane's CREATED counts what leak_creator made since the view started and not the
  buffer from before it; the exporter's dmabuf_cgroup_created_bytes charges the buffer child A creates and passes
  to child B to A only, though both cgroups hold it.
"""
import os
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_cgroups import EXPECTED, SIZES, _scrape, two_cgroups_made
from test_leaks import CREATOR_SOURCE, Lines
from tmux_session import Tmux, wait_for_file

from dmabuf_top.alloc import alloc_heap
from dmabuf_top.inventory.cgroups import read_cgroup, short_name

pytestmark = pytest.mark.guest

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = str(ROOT / ".venv" / "bin" / "dmabuf-top")


def lines_with(screen, *parts):
    return [line for line in screen.splitlines() if all(part in line for part in parts)]


def cell(screen, label, width, row_part):
    """The text of a right-aligned column (its label ends where its cells end) in the row containing row_part."""
    header = next(line for line in screen.splitlines() if f" {label}" in line)
    end = header.index(f" {label}") + 1 + len(label)
    row = next(line for line in screen.splitlines() if row_part in line)
    return row[end - width:end].strip()


def test_leaks_pane_names_creators_stacks_and_what_was_there_before(heap_available, tmp_path):
    binary = tmp_path / "leak_creator"
    subprocess.run(["cc", "-O1", "-fno-omit-frame-pointer", "-o", str(binary), CREATOR_SOURCE], check=True,
                   timeout=300)
    before = alloc_heap(4 * MiB, name="pre-leak")  # made and held by this process before the view starts
    done = tmp_path / "done"
    term = Tmux(tmp_path / "tmux.sock", f"cd {ROOT}; {DMABUF_TOP} --min-age 0 1; echo EXIT=$? > {done}; sleep 600",
                width=260, height=40, timeout=90)
    creator = None
    try:
        # the creations are followed once the hooks are up ("hooks live:"; "hooks: starting" before)
        term.wait_for(lambda s: "hooks live:" in s and "lifecycle" in s, timeout=900)
        term.keys("6")
        screen = term.wait_for(lambda s: "[6:Leaks]" in s and lines_with(s, "pre-leak"), timeout=60)
        old = lines_with(screen, "pre-leak")[0]
        assert "before start" in old and "existed before dmabuf-top started: no stack" in old, old
        assert ">=" in old and f"{os.getpid()}(python" in old  # held by this process, not called its creator

        creator = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        said, facts, deadline = Lines(creator), {}, time.monotonic() + 300
        while "ready" not in facts:
            line = said.next(deadline)
            assert line, f"the creator stopped: {facts}"
            key, *value = line.split()
            facts[key] = int(value[0]) if value else True
        parent, child = facts["parent"], facts["child"]
        # the orphan is listed from its export on: while its fd is in flight (the child sent it, the parent has not
        # taken it yet) no process holds it, a "kernel reference"; then the parent holds it by fd
        def held_by_parent(line):
            return f"{parent}(leak_creator)" in line.split("exited", 1)[-1]

        screen = term.wait_for(lambda s: lines_with(s, "make_mapped_leak+") and
                               any(held_by_parent(line) for line in lines_with(s, "make_child_leak+")), timeout=120)
        mapped = lines_with(screen, "make_mapped_leak+")[0]
        assert f"{parent}(leak_creator)" in mapped and "exited" not in mapped.split("make_")[0], mapped
        assert f"{parent}(leak_creator) map" in mapped and "1.0 MiB" in mapped, mapped
        orphan = lines_with(screen, "make_child_leak+")[0]
        assert f"{child}(leak_creator) exited" in orphan and "2.0 MiB" in orphan, orphan
        assert f"{parent}(leak_creator)" in orphan.split("exited", 1)[1], orphan  # its holder: the parent, by fd
        # user frames first, then the kernel's: the allocating path reads first
        assert orphan.index("make_child_leak+") < orphan.index(" | "), orphan

        # CREATED: leak_creator's 1 + 2 MiB, made while the view watched; not pre-leak's 4 MiB from before it
        short = short_name(read_cgroup(parent))
        term.keys("5")
        screen = term.wait_for(lambda s: "[5:Cgroups]" in s and any(line.startswith(short + " ")
                                                                     for line in s.splitlines()), timeout=60)
        row = next(line for line in screen.splitlines() if line.startswith(short + " "))
        assert cell(screen, "CREATED", 10, row) == "3.0 MiB", screen
        term.keys("q")
        assert wait_for_file(done, 60).strip() == "EXIT=0"
    finally:
        term.kill()
        if creator is not None:
            creator.communicate(timeout=60)  # closing its stdin ends it
        before.close()


def _created(text):
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[sample.labels.get("cgroup")] = sample.value
    return samples


def test_exporter_charges_created_bytes_to_the_creators_cgroup(heap_available, udmabuf_available):
    port = 19467
    exporter = subprocess.Popen([DMABUF_TOP, "export", "--listen", f"127.0.0.1:{port}", "--top-cgroups", "20"],
                                stderr=subprocess.PIPE, text=True)
    try:
        _scrape(port, time.monotonic() + 900)  # the hooks load before it serves: from here creations are followed
        with two_cgroups_made() as (paths, _):
            want = {paths["a"]: SIZES["a_heap"] + SIZES["a_udmabuf"] + SIZES["shared"],
                    paths["b"]: SIZES["b_heap"] + SIZES["b_udmabuf"]}
            deadline = time.monotonic() + 120
            while True:  # the records reach the exporter's thread within a poll: read until they are there
                samples = _created(_scrape(port, deadline))
                created = samples.get("dmabuf_cgroup_created_bytes", {})
                if all(created.get(path) == size for path, size in want.items()) or time.monotonic() > deadline:
                    break
                time.sleep(1)
    finally:
        exporter.terminate()
        _, stderr = exporter.communicate(timeout=60)
    assert {path: created.get(path) for path in want} == want, (created, stderr)
    for role, path in paths.items():  # held counts the shared buffer in both cgroups; created in a's only
        assert samples["dmabuf_cgroup_held_bytes"][path] == EXPECTED[role]["held_bytes"]

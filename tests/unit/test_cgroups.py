"""Per-cgroup totals (held, shared, kernel-only, created) and the short names of real-looking cgroup paths."""
import io
import json
from types import SimpleNamespace

import jsonschema
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_top.analysis import export, html, tables
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.inventory.cgroup_totals import CGROUP, KERNEL_ONLY, UNKNOWN, cgroup_totals, top_cgroups
from dmabuf_top.inventory.cgroups import parse_proc_cgroup, read_cgroup, short_name
from dmabuf_top.inventory.index import BufferFeed
from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.render_snapshot import render_csv, render_json, render_table
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.live.app import handle_key
from dmabuf_top.live.jsonout import JSON_SCHEMA, to_dict
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.screen import render
from dmabuf_top.live.view import ViewState
from dmabuf_top.probes.hooks import State
from dmabuf_top.probes.task_dmabufs import HolderColumns
from dmabuf_top.prometheus import DmabufCollector, families
from dmabuf_top.recording.cgroup_source import CgroupSource
from dmabuf_top.recording.recorder import RecordingContext
from dmabuf_top.recording.session import Session, SessionWriter
from dmabuf_top.sampler import Sample

MiB = 1 << 20
T0 = 1_000_000_000
DOCKER_ID = "3f2a1b9c0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"


@pytest.mark.parametrize("path, short", [
    (b"/", "root"),
    (b"/system.slice/foo.service", "foo.service"),
    (b"/system.slice/systemd-journald.service", "systemd-journald.service"),
    (b"/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope", "app-firefox-1234.scope"),
    (b"/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
    (b"/system.slice/docker-" + DOCKER_ID.encode() + b".scope", "docker:3f2a1b9c0d4e"),
    (b"/docker/" + DOCKER_ID.encode(), "docker:3f2a1b9c0d4e"),
    (b"/machine.slice/libpod-" + DOCKER_ID.encode() + b".scope", "podman:3f2a1b9c0d4e"),
    (b"/machine.slice/libpod-" + DOCKER_ID.encode() + b".scope/container", "podman:3f2a1b9c0d4e"),
    (b"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c1d2e3f_4a5b_6c7d_8e9f_0a1b2c3d4e5f.slice/"
     b"cri-containerd-" + DOCKER_ID.encode() + b".scope", "containerd:3f2a1b9c0d4e"),
    (b"/kubepods/burstable/pod0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f/" + DOCKER_ID.encode(),
     "containerd:3f2a1b9c0d4e"),
    (b"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c1d2e3f_4a5b.slice",
     "pod:0c1d2e3f_4a5b"),
    (b"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crio-" + DOCKER_ID.encode()
     + b".scope", "cri-o:3f2a1b9c0d4e"),
    (b"/lab/cam-a", "cam-a"),
    (b"/system.slice/foo.service (deleted)", "foo.service (deleted)"),
    (None, "unknown"),
])
def test_short_name_of_real_looking_paths(path, short):
    assert short_name(path) == short


def test_short_name_keeps_hostile_bytes_for_the_view_to_escape():
    assert short_name(b"/lab/\x1b[2J\xff") == "\x1b[2J\udcff"


def test_parse_proc_cgroup_takes_the_unified_line():
    hybrid = b"9:name=systemd:/\n4:memory:/process_api/65f6\n0::/system.slice/x.service\n"
    assert parse_proc_cgroup(hybrid) == b"/system.slice/x.service"
    assert parse_proc_cgroup(b"4:memory:/a\n") is None
    assert parse_proc_cgroup(b"0::/a b:c\n") == b"/a b:c"


def test_read_cgroup_of_an_exited_process_is_none(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_bytes(b"0::/lab/a\n")
    assert read_cgroup(7, str(tmp_path)) == b"/lab/a"
    assert read_cgroup(8, str(tmp_path)) is None


def buffer(inode, size):
    return Buffer(inode=inode, size=size, exporter="system", name=None, file_refs=1, attachment_count=0)


A, B = b"/lab/a", b"/lab/b"


@pytest.fixture
def inventory():
    """Buffers 1 (a:10 and a:11 both), 2 (b:20), 3 (shared: a:10 by fd, b:20 by mapping), 4 kernel-only,
    5 held by pid 30 whose cgroup is unknown."""
    buffers = [buffer(1, 4 * MiB), buffer(2, 2 * MiB), buffer(3, MiB), buffer(4, 8 * MiB), buffer(5, 4096)]
    holders = Holders(fds=[FdRef(10, 3, 1), FdRef(11, 3, 1), FdRef(20, 4, 2), FdRef(10, 5, 3), FdRef(30, 3, 5)],
                      maps=[MapRef(20, 3, 0, 4096)], comms={})
    inventory = build_inventory(buffers, holders, "iterator", "iterator")
    inventory.cgroups = {10: A, 11: A, 20: B, 30: None}
    return inventory


def test_held_counts_a_buffer_once_per_cgroup_and_shared_once(inventory):
    totals = cgroup_totals(inventory, inventory.cgroups)
    a, b = totals.row(A), totals.row(B)
    assert (a.processes, a.buffers, a.held_bytes, a.shared_bytes) == (2, 2, 4 * MiB + MiB, MiB)
    assert (b.processes, b.buffers, b.held_bytes, b.shared_bytes) == (1, 2, 2 * MiB + MiB, MiB)
    assert (totals.shared_buffers, totals.shared_bytes) == (1, MiB)
    assert [row.kind for row in totals.rows] == [CGROUP, CGROUP, UNKNOWN, KERNEL_ONLY]
    unknown, kernel = totals.rows[2], totals.rows[3]
    assert (unknown.processes, unknown.held_bytes, kernel.buffers, kernel.held_bytes) == (1, 4096, 1, 8 * MiB)


def test_the_figures_add_up_to_every_byte(inventory):
    totals = cgroup_totals(inventory, inventory.cgroups)
    exclusive = sum(row.exclusive_bytes for row in totals.rows)
    assert exclusive + totals.shared_bytes == inventory.totals.bytes == totals.total_bytes


def test_creator_not_known_without_the_lifecycle_probe(inventory):
    totals = cgroup_totals(inventory, inventory.cgroups)
    assert not totals.creators_known
    assert all(row.created_bytes is None for row in totals.rows)
    assert (totals.creator_not_known_buffers, totals.creator_not_known_bytes) == (5, inventory.totals.bytes)


def test_creators_known_for_some_buffers(inventory):
    c = b"/lab/gone"
    totals = cgroup_totals(inventory, inventory.cgroups, creators={1: A, 3: A, 4: c})
    assert (totals.row(A).created_buffers, totals.row(A).created_bytes) == (2, 5 * MiB)
    assert totals.row(B).created_bytes == 0  # known creators, none of them in b: a real 0
    assert (totals.row(c).held_bytes, totals.row(c).created_bytes) == (0, 8 * MiB)
    assert (totals.creator_not_known_buffers, totals.creator_not_known_bytes) == (2, 2 * MiB + 4096)


def test_only_process_part_without_arrays(inventory):
    part = inventory.only_process(20)
    totals = cgroup_totals(part, part.cgroups)
    assert [(row.path, row.held_bytes, row.shared_bytes) for row in totals.rows] == [(B, 3 * MiB, MiB),
                                                                                     (A, MiB, MiB)]


def test_top_cgroups_bounds_the_rows(inventory):
    shown, rest = top_cgroups(cgroup_totals(inventory, inventory.cgroups), 1)
    assert [row.path for row in shown] == [A] and [row.path for row in rest] == [B]


def test_no_holders_at_all():
    inventory = build_inventory([buffer(1, MiB)], Holders([], [], {}), "iterator", "iterator")
    totals = cgroup_totals(inventory, {})
    assert [(row.kind, row.held_bytes) for row in totals.rows] == [(KERNEL_ONLY, MiB)]


HOSTILE = b"/lab/\x1b[31m<b>\t\xff"


def test_snapshot_json_cgroups_exact_and_lossless(inventory):
    inventory.cgroups[20] = HOSTILE
    document = json.loads(render_json(inventory))
    rows = document["cgroups"]["rows"]
    assert [(row["kind"], row["held_bytes"], row["shared_bytes"]) for row in rows] == [
        ("cgroup", 5 * MiB, MiB), ("cgroup", 3 * MiB, MiB), ("unknown", 4096, 0), ("kernel-only", 8 * MiB, 0)]
    assert bytes.fromhex(rows[1]["cgroup_hex"]) == HOSTILE and rows[0]["short"] == "a"
    assert rows[0]["created_bytes"] is None and document["cgroups"]["shared_bytes"] == MiB
    assert {p["pid"]: bytes.fromhex(p["cgroup_hex"]) for p in document["processes"] if p["cgroup_hex"]} == {
        10: A, 11: A, 20: HOSTILE}


def test_snapshot_json_cgroups_null_when_not_read(inventory):
    inventory.cgroups = None
    assert json.loads(render_json(inventory))["cgroups"] is None


def test_cgroups_table_and_csv_neutralise_hostile_paths(inventory):
    inventory.cgroups[20] = HOSTILE
    text = render_table(inventory, "cgroups")
    assert "\x1b" not in text and "\t" not in text and "\\x1b[31m<b>\\t\\xff" in text
    assert "kernel-only" in text and "unknown cgroup" in text and "not known" in text
    assert "shared between cgroups: 1.0 MiB in 1 buffers" in text
    lines = render_csv(inventory, "cgroups").splitlines()
    assert len(lines) == 1 + 4 and "\x1b" not in "".join(lines)


def scrape(inv, top_cgroups=20):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DmabufCollector(lambda: inv, None, 20, top_cgroups))
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[(sample.labels.get("cgroup"), sample.labels.get("short"))] = (
                sample.value)
    return text, samples


def test_prometheus_cgroup_gauges_are_exact_and_add_up(inventory):
    _, samples = scrape(inventory)
    assert samples["dmabuf_cgroup_held_bytes"] == {("/lab/a", "a"): 5 * MiB, ("/lab/b", "b"): 3 * MiB,
                                                   ("unknown", ""): 4096}
    assert samples["dmabuf_cgroup_shared_bytes"][("/lab/b", "b")] == MiB
    assert samples["dmabuf_cgroup_processes"][("/lab/a", "a")] == 2
    assert samples["dmabuf_cgroups_shared_bytes"][(None, None)] == MiB
    assert samples["dmabuf_kernel_only_bytes"][(None, None)] == 8 * MiB
    assert "dmabuf_cgroup_created_bytes" not in samples  # creators not known: absent, not 0
    exclusive = sum(samples["dmabuf_cgroup_held_bytes"].values()) - sum(samples["dmabuf_cgroup_shared_bytes"].values())
    assert exclusive + MiB + 8 * MiB == inventory.totals.bytes


def test_prometheus_cgroups_bounded_with_other(inventory):
    _, samples = scrape(inventory, top_cgroups=1)
    assert samples["dmabuf_cgroup_held_bytes"] == {("/lab/a", "a"): 5 * MiB, ("other", ""): 3 * MiB,
                                                   ("unknown", ""): 4096}


def test_prometheus_hostile_cgroup_is_one_safe_label(inventory):
    inventory.cgroups[20] = b"/lab/\x1b[2J\"evil\"\\\n\xff"
    text, samples = scrape(inventory)
    assert "\x1b" not in text and all(line.startswith(("#", "dmabuf_")) for line in text.splitlines())
    assert ('/lab/\\x1b[2J"evil"\\\\\\n\\xff', '\\x1b[2J"evil"\\\\\\n\\xff') in samples["dmabuf_cgroup_held_bytes"]


def test_prometheus_created_bytes_when_creators_known(inventory):
    families_ = families(inventory, creators={1: A})
    created = next(f for f in families_ if f.name == "dmabuf_cgroup_created_bytes")
    assert {s.labels["cgroup"]: s.value for s in created.samples} == {"/lab/a": 4 * MiB, "/lab/b": 0, "unknown": 0}


def live_frame(inv):
    return LiveModel(1.0).update(Sample(monotonic=1.0, wall=1_800_000_000.0, inventory=inv))


def test_live_cgroup_pane_rows_screen_and_json(inventory):
    inventory.cgroups[20] = HOSTILE
    frame = live_frame(inventory)
    rows = {row.values["cgroup"]: row.values for row in frame.rows["cgroups"]}
    assert (rows["a"]["held"], rows["a"]["shared"], rows["a"]["processes"]) == (5 * MiB, MiB, 2)
    assert rows["kernel-only"]["held"] == 8 * MiB and rows["unknown cgroup"]["held"] == 4096
    view = ViewState(pane="cgroups")
    lines = ["".join(text for text, _ in line) for line in render(frame, view, 140, 20)]
    screen = "\n".join(lines)
    assert "\x1b" not in screen and "\\x1b[31m<b>\\t\\xff" in screen and "not known" in screen
    assert "5:Cgroups" in screen
    document = to_dict(frame)
    jsonschema.validate(document, JSON_SCHEMA)
    by_kind = [(row["kind"], row["held_bytes"], row["created_bytes"]) for row in document["cgroups"]]
    # sorted by held bytes like every pane: the kernel-only row takes its place among the cgroups
    assert by_kind == [("kernel-only", 8 * MiB, None), ("cgroup", 5 * MiB, None), ("cgroup", 3 * MiB, None),
                       ("unknown", 4096, None)]
    assert bytes.fromhex(document["cgroups"][2]["cgroup_hex"]) == HOSTILE


def test_live_key_5_selects_the_cgroup_pane():
    view = ViewState()
    handle_key(view, ord("5"))
    assert view.pane == "cgroups"


class FakeHolders:
    def __init__(self, holders):
        self.holders, self.closed = holders, False

    def read_columns(self):
        return HolderColumns.from_holders(self.holders)

    def close(self):
        self.closed = True


def test_record_source_writes_per_cgroup_rows_each_interval_and_the_report_shows_them(tmp_path):
    listed = [buffer(1, 4 * MiB), buffer(2, MiB), buffer(3, 8 * MiB)]
    iterator = SimpleNamespace(read=lambda: listed, close=lambda: None)
    holders = FakeHolders(Holders([FdRef(10, 3, 1), FdRef(20, 3, 1), FdRef(20, 4, 2)], [], {}))
    feed = BufferFeed(lambda: iterator)
    source = CgroupSource(feed, lambda: holders, lambda pids: {pid: {10: A, 20: HOSTILE}[pid] for pid in pids})
    hooks = source.start(RecordingContext(None, 0.5))
    assert hooks[0].state is State.LIVE
    first = source.poll(T0)
    assert source.poll(T0 + 100_000_000) == []  # within the interval
    listed.pop()  # the kernel-only buffer is freed
    last = source.stop(T0 + 1_000_000_000)
    assert holders.closed
    assert [(r.kind, r.cgroup, r.held_bytes, r.shared_bytes) for r in first] == [
        ("cgroup", HOSTILE, 5 * MiB, 4 * MiB), ("cgroup", A, 4 * MiB, 4 * MiB), ("kernel-only", None, 8 * MiB, 0)]
    assert [r.kind for r in last] == ["cgroup", "cgroup"]

    path = tmp_path / "session.sqlite"
    writer = SessionWriter(path)
    writer.set_metadata(command=["x"], started_ns=T0)
    writer.add_all(first + last)
    writer.close()
    with Session(path) as session:
        rows = tables.cgroup_table(session)
        assert [(r.short, r.peak_held_bytes, r.last_held_bytes, r.peak_shared_bytes) for r in rows] == [
            ("kernel-only", 8 * MiB, 0, 0), ("\x1b[31m<b>\t\udcff", 5 * MiB, 5 * MiB, 4 * MiB),
            ("a", 4 * MiB, 4 * MiB, 4 * MiB)]
        assert rows[0].peak_s == 0.0
        page = html.report_body(session)
        section = page[page.index('id="cgroups"'):page.index('id="flame"')]
        assert "\x1b" not in section and "&lt;b&gt;" in section and "<b>" not in section and "8.0 MiB" in section
        out = io.StringIO()
        export.CsvRenderer(RenderOptions(table="cgroups")).render(session, out)
        assert len(out.getvalue().splitlines()) == 4 and "\x1b" not in out.getvalue()
        cgroups = export.tables_dict(session)["cgroups"]
        assert bytes.fromhex(cgroups[1]["cgroup_hex"]) == HOSTILE


def test_a_session_without_cgroup_samples_says_so(tmp_path):
    path = tmp_path / "old.sqlite"
    writer = SessionWriter(path)
    writer.set_metadata(command=["x"], started_ns=T0)
    writer.close()
    with Session(path) as session:
        session.db.execute("DROP TABLE cgroup_samples")  # as a v2 session written before the table existed
        assert tables.cgroup_table(session) == []
        assert "No per-cgroup totals" in html.cgroups_html([])

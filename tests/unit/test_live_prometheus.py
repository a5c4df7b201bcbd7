"""Prometheus families: bounded label cardinality, hostile names as safe label values, no fake zeros."""
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from live_fixtures import HOSTILE, MiB, inventory, trace
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.prometheus import DmabufCollector, families, parse_listen


def scrape(inv, snap=None, top=20):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DmabufCollector(lambda: inv, None if snap is None else _Tracer(snap), top))
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return text, samples


class _Tracer:
    def __init__(self, snap):
        self.snap = snap

    def snapshot(self, minimal=False):
        assert minimal  # a scrape reads targets and tasks only
        return self.snap


def test_exporter_and_buffer_gauges_are_exact():
    _, samples = scrape(inventory(), trace(read_bytes=3 * MiB))
    exporters = {labels["exporter"]: value for labels, value in samples["dmabuf_exporter_bytes"]}
    assert exporters == {"system": 17 * MiB, "udmabuf": 4 * MiB}
    buffers = {labels["inode"]: (labels["name"], value) for labels, value in samples["dmabuf_buffer_bytes"]}
    assert buffers["101"] == ("weights", 16 * MiB) and buffers["103"] == ("", MiB)
    rss = {labels["pid"]: value for labels, value in samples["dmabuf_process_rss_bytes"]}
    assert rss == {"10": 20 * MiB, "20": 4 * MiB}
    io = {labels["path"]: value for labels, value in samples["dmabuf_io_bytes_total"]}
    assert io["read"] == 3 * MiB
    per_buffer = {(labels["inode"], labels["path"]): value for labels, value in samples["dmabuf_buffer_io_bytes_total"]}
    assert per_buffer[("101", "read")] == 3 * MiB


def test_hostile_names_survive_the_exposition_format():
    text, samples = scrape(inventory(), trace())
    assert "\x1b" not in text and "\x07" not in text
    names = [labels["name"] for labels, _ in samples["dmabuf_buffer_bytes"]]
    assert "\\x1b[2J\\x1b]0;owned\\x07evil\\nname\\t\\xff\\xfe<b>" in names
    # every line is one sample or comment: a newline in a name cannot forge a series
    assert all(line.startswith(("#", "dmabuf_")) for line in text.splitlines())


def test_label_cardinality_is_bounded_and_the_rest_aggregated():
    extra = [Buffer(inode=1000 + i, size=4096, exporter="system", name=f"b{i}".encode(), file_refs=1,
                    attachment_count=0) for i in range(50)]
    _, samples = scrape(inventory(extra), trace(), top=5)
    assert len(samples["dmabuf_buffer_bytes"]) == 5
    assert samples["dmabuf_other_buffers"][0][1] == 53 - 5
    # the five largest are 16 MiB, 4 MiB, 1 MiB and two 4 KiB ones: the rest is 48 pages
    assert samples["dmabuf_other_buffers_bytes"][0][1] == 48 * 4096
    total = sum(value for _, value in samples["dmabuf_buffer_bytes"]) + samples["dmabuf_other_buffers_bytes"][0][1]
    assert total == 21 * MiB + 50 * 4096


def test_untraced_counters_are_absent_not_zero():
    _, samples = scrape(inventory(), trace())
    assert "dmabuf_io_cpu_copied_bytes_total" not in samples
    assert "dmabuf_io_pinned_pages_total" not in samples
    live = {labels["concern"]: value for labels, value in samples["dmabuf_hook_live"]}
    assert live == {"read": 1, "write": 1, "cpu_copy": 0, "gup": 0}


def test_inventory_only():
    names = {family.name for family in families(inventory())}
    assert "dmabuf_exporter_bytes" in names and "dmabuf_io_bytes" not in names


@pytest.mark.parametrize("text,expected", [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9000", ("0.0.0.0", 9000)),
                                           ("[::1]:9464", ("::1", 9464))])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", "host:", "host:99999", "host:http"])
def test_parse_listen_rejects(text):
    from dmabuf_top.errors import DmabufTopError

    with pytest.raises(DmabufTopError):
        parse_listen(text)


def test_the_arrays_path_gives_the_same_exposition_as_the_objects_path():
    """families() on the join's arrays (top N picked, nothing else built) = on every BufferEntry."""
    import copy

    from dmabuf_top.inventory.inventory import build_inventory
    from dmabuf_top.inventory.types import FdRef, Holders

    buffers = [Buffer(inode=500 - i, size=MiB * (1 + i % 4), exporter=("system", "udmabuf")[i % 2],
                      name=b"b%d" % i if i % 3 else None, file_refs=1, attachment_count=0,
                      backing_inode=555 if i == 7 else 0, backing_dev=42 if i == 7 else 0) for i in range(40)]
    holders = Holders([FdRef(10 + i % 5, i, 500 - i) for i in range(40)], [], {10 + k: b"p%d" % k for k in range(5)})
    fast = build_inventory(buffers, holders, "iterator", "iterator")
    slow = copy.copy(fast)
    slow.arrays = None
    assert fast.arrays is not None
    snap = trace(read_bytes=MiB, shmem_write=2 * MiB)
    for top in (1, 5, 39, 40, 100):
        assert scrape(fast, snap, top)[0] == scrape(slow, snap, top)[0]
    # the udmabuf (4 MiB, inode 493: sixth of the 4 MiB ones by inode) through its memfd: its own series in a
    # top 10 of sizes, aggregated under "other" in a top 5
    assert 'dmabuf_buffer_io_bytes_total{inode="493",path="write"} 2.097152e+06' in scrape(fast, snap, 10)[0]
    assert 'dmabuf_buffer_io_bytes_total{inode="other",path="write"} 2.097152e+06' in scrape(fast, snap, 5)[0]

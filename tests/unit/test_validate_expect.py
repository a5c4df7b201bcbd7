"""--expect zero-copy|copies=N, --size, and the method list as data."""
import pytest

from dmabuf_top.commands.validate import parse_size
from dmabuf_top.validate import methods
from dmabuf_top.validate.verdict import Verdict, parse_expectation


@pytest.mark.parametrize("text, zero, copies", [("zero-copy", True, None), ("copies=0", False, 0),
                                                ("copies=2", False, 2), (" Zero-Copy ", True, None)])
def test_expectations_parse(text, zero, copies):
    expectation = parse_expectation(text)
    assert (expectation.zero_copy, expectation.copies) == (zero, copies)


@pytest.mark.parametrize("text", ["", "zerocopy", "copies", "copies=-1", "copies=1.5", "copies=one", "fast"])
def test_bad_expectations_are_refused_with_what_is_accepted(text):
    with pytest.raises(ValueError, match="zero-copy' or 'copies=N'"):
        parse_expectation(text)


ZERO = Verdict("zero-copy", "zero-copy", 0.0)
ONE = Verdict("copies", "1 copy, via page cache", 1.0)
ZERO_WITH_CACHE = Verdict("copies", "0 copies, via page cache", 0.0)
UNMEASURED = Verdict("unmeasured", "unmeasured", None, ("read() from a memfd",))
FAILED = Verdict("failed", "failed (EFAULT)")


@pytest.mark.parametrize("text, result, held", [
    ("zero-copy", ZERO, True), ("zero-copy", ONE, False), ("zero-copy", ZERO_WITH_CACHE, False),
    ("copies=1", ONE, True), ("copies=2", ONE, False), ("copies=0", ZERO, True), ("copies=0", ZERO_WITH_CACHE, True),
    ("zero-copy", UNMEASURED, False), ("copies=1", UNMEASURED, False), ("zero-copy", FAILED, False),
])
def test_expectation_against_verdicts(text, result, held):
    assert parse_expectation(text).holds(result)[0] is held


def test_an_unmeasured_claim_says_it_cannot_be_checked():
    _, why = parse_expectation("zero-copy").holds(UNMEASURED)
    assert "cannot be checked" in why and "memfd" in why


@pytest.mark.parametrize("text, size", [("64M", 64 << 20), ("256MiB", 256 << 20), ("1g", 1 << 30), ("4096", 4096),
                                        ("8k", 8192)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1", "1.5G", "lots", "64MB!"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_the_matrix_covers_the_issue_and_names_are_unique():
    names = [m.name for m in methods.METHODS]
    assert len(names) == len(set(names))
    for name in ("heap-read", "heap-read-direct", "heap-sendfile", "heap-splice", "heap-cfr", "heap-cfr-direct",
                 "udmabuf-read", "udmabuf-read-direct", "udmabuf-sendfile", "udmabuf-splice", "udmabuf-cfr",
                 "memfd-rw", "memfd-rw-direct", "memfd-read", "memfd-read-direct", "memfd-sendfile",
                 "memfd-splice", "memfd-cfr", "heap-cfr-rwfile-direct", "udmabuf-cfr-rwfile-direct",
                 "heap-rwfile-ioctl", "heap-rwfile-ioctl-direct", "udmabuf-rwfile-ioctl",
                 "udmabuf-rwfile-ioctl-direct"):
        assert name in methods.BY_NAME
    assert all(m.buffer in methods.BUFFERS for m in methods.METHODS)
    assert all(m.direct == m.name.endswith("-direct") for m in methods.METHODS)


def test_select_keeps_matrix_order_and_refuses_unknown_names():
    assert [m.name for m in methods.select(["memfd-read", "heap-read"])] == ["heap-read", "memfd-read"]
    with pytest.raises(ValueError, match="unknown method.*nope"):
        methods.select(["nope"])


class Report:
    def __init__(self, available):
        self._available = available

    def available(self, name):
        return name in self._available


def test_patched_methods_are_detected_never_assumed():
    offer = methods.KernelOffer(Report({"heaps", "udmabuf"}), symbols=set(), ioctl_answer="absent on this kernel "
                                "(DMA_BUF_IOCTL_RW_FILE answers ENOTTY)", cfr_answer="absent on this kernel "
                                "(copy_file_range into a dma-buf answers EINVAL: no exporter rw_file behind it)")
    assert offer.missing(methods.BY_NAME["heap-read"]) is None
    assert "EINVAL" in offer.missing(methods.BY_NAME["heap-cfr-rwfile"])
    assert "ENOTTY" in offer.missing(methods.BY_NAME["heap-rwfile-ioctl-direct"])
    assert "ENOTTY" in offer.missing(methods.BY_NAME["udmabuf-rwfile-ioctl"])
    patched = methods.KernelOffer(Report({"heaps", "udmabuf"}), symbols={"udmabuf_rw_file"}, ioctl_answer="",
                                  cfr_answer="")
    assert patched.missing(methods.BY_NAME["udmabuf-cfr-rwfile"]) is None
    assert patched.missing(methods.BY_NAME["heap-rwfile-ioctl"]) is None
    assert patched.missing(methods.BY_NAME["udmabuf-rwfile-ioctl-direct"]) is None
    # Our kernel/series: the ioctl and the exporter symbols, but copy_file_range into a dma-buf still refused.
    ioctl_only = methods.KernelOffer(Report({"heaps", "udmabuf"}), symbols={"system_heap_rw_file"}, ioctl_answer="",
                                     cfr_answer="absent on this kernel (copy_file_range into a dma-buf answers EINVAL)")
    assert ioctl_only.missing(methods.BY_NAME["heap-rwfile-ioctl"]) is None
    assert "copy_file_range" in ioctl_only.missing(methods.BY_NAME["heap-cfr-rwfile"])
    assert "udmabuf_rw_file" in ioctl_only.missing(methods.BY_NAME["udmabuf-rwfile-ioctl"])


def test_rw_file_request_is_the_patch_uapi():
    # kernel/series/rw-file/README: _IOW('b', 4, struct dma_buf_rw_file) with {__s32 fd; __u32 flags; __u64 x3}.
    assert methods.RW_FILE_STRUCT.size == 32
    assert methods.DMA_BUF_IOCTL_RW_FILE == 0x40206204
    assert methods.RW_FILE_STRUCT.pack(-1, methods.RW_FILE_READ | methods.RW_FILE_DIRECT, 1, 2, 3)[:8] == \
        b"\xff\xff\xff\xff\x05\x00\x00\x00"


class _Spans:
    def __init__(self, fds, span):
        self.fd, self.dmabuf_fds, self.dmabuf_span = 9, fds, span


def test_dmabuf_spans_split_a_udmabuf_buffer_at_the_size_limit_known_at_creation(monkeypatch):
    # The limit is read when the buffer is made: a sysfs read() inside a load would be counted as the method's.
    monkeypatch.setattr(methods.alloc, "udmabuf_size_limit", lambda: pytest.fail("read during the load"))
    assert methods.dmabuf_spans(_Spans([5, 6], 64 << 20), 100 << 20) == [(5, 0, 64 << 20), (6, 64 << 20, 36 << 20)]
    assert methods.dmabuf_spans(_Spans(None, None), 100 << 20) == [(9, 0, 100 << 20)]


def test_a_kernel_without_heaps_has_no_heap_methods():
    offer = methods.KernelOffer(Report({"udmabuf"}), symbols=set(), ioctl_answer="")
    assert "no /dev/dma_heap/system" in offer.missing(methods.BY_NAME["heap-read"])
    assert offer.missing(methods.BY_NAME["memfd-read"]) is None


def test_async_interfaces_are_tried_once_and_absent_with_the_kernels_answer(monkeypatch):
    tried = []

    def refused():
        tried.append("uring")
        return "absent on this kernel (io_uring_setup answers EPERM)"

    monkeypatch.setitem(methods.KernelOffer.TRIALS, "uring:fixed", refused)
    monkeypatch.setitem(methods.KernelOffer.TRIALS, "aio:pread", lambda: None)
    offer = methods.KernelOffer(Report({"heaps", "udmabuf"}), symbols=set())
    for name in ("udmabuf-uring-fixed", "udmabuf-uring-fixed-direct", "heap-uring-fixed"):
        assert "io_uring_setup answers EPERM" in offer.missing(methods.BY_NAME[name])
    assert tried == ["uring"]
    assert offer.missing(methods.BY_NAME["udmabuf-aio-direct"]) is None
    assert all(methods.BY_NAME[name].async_io for name in ("udmabuf-aio", "heap-uring-fixed-direct"))
    assert not methods.BY_NAME["udmabuf-read-direct"].async_io

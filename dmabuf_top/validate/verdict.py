"""What a load method cost, judged from kernel counters: pure functions, tested without a kernel.

Byte conservation decides (DESIGN.md, "Verdicts rest on evidence"): every payload byte in the
buffer arrived either by the device writing it into the buffer's own page frames (DMA evidence
from the block layer, probes/dma_evidence) or by a CPU copy. `zero-copy` is a positive finding:
the device's writes into the buffer's frames cover the payload, the checksum holds, no copy was
seen. Any payload not covered that way was copied, whether a hook saw the copy or not; the verdict
says how many bytes the hooks saw copied and how many arrived where no hook sees.

Without DMA evidence (no block device under the file, the block hooks missing, bytes lost), the
hooks below still show copies they saw, but never make a method `zero-copy`.

A verdict is only as strong as the hooks behind it. CPU copies are measured where the
I/O path tracer can see them (fexit filemap_read: page cache -> memory; fexit
generic_perform_write: memory -> page cache or shmem). A copy made anywhere else
(shmem_file_read_iter, pipe_read/pipe_write, a socket, an exporter's own callback, a
filesystem whose buffered write does not go through generic_perform_write) is invisible,
so a method whose bytes crossed such a place is "unmeasured", never "zero-copy". A
zero-copy verdict also needs the GUP and page-cache hooks live: "no pins, no page cache"
is only known when they were counting.
"""
import errno as errno_module
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Tuple

from ..text import human_size

# Buffered reads from these filesystems copy in filemap_read (ext4_file_read_iter ->
# generic_file_read_iter, xfs_file_buffered_read and btrfs_file_read_iter -> filemap_read).
READ_COPY_MEASURED_FS = frozenset({"ext4", "xfs", "btrfs"})
# Buffered writes into these copy in generic_perform_write (shmem_file_write_iter,
# ext4_buffered_write_iter). xfs/btrfs have their own write loops (iomap, btrfs_buffered_write).
WRITE_COPY_MEASURED_FS = frozenset({"tmpfs", "ext4"})
MEMORY_KINDS = ("dmabuf", "shmem")  # where a load method's payload must land
FD_TO_FD_PATHS = ("sendfile", "splice", "copy_file_range")

# The concerns a verdict rests on (probes/hooks.missing_concerns names them).
COPY_CONCERN, GUP_CONCERN, PAGE_CACHE_CONCERN = "cpu_copy", "gup", "page_cache"

ZERO_COPY, COPIES, FAILED, WRONG_DATA, INCOMPLETE, UNMEASURED, ABSENT = (
    "zero-copy", "copies", "failed", "wrong-data", "incomplete", "unmeasured", "absent")


@dataclass(frozen=True)
class Flow:
    """One kind of traced call (an outcome of the I/O path tracer: path, both ends, error) and the bytes it moved."""

    path: str
    src_kind: str
    dst_kind: str
    src_fs: str
    dst_fs: str
    bytes: int
    calls: int = 1
    error: int = 0  # 0 or a negative errno


@dataclass(frozen=True)
class Measurement:
    payload: int  # bytes that must reach the buffer (the file's size)
    moved: int  # bytes the method's own calls said they moved into the buffer
    reached: int  # bytes the kernel events saw land in a dma-buf or memfd
    cpu_copied: int
    page_cache_pages: int
    pinned_pages: int
    got_pages: int = 0
    calls: int = 0
    errors: int = 0
    errno: Optional[int] = None  # the method's failure (positive errno)
    checksum_ok: Optional[bool] = None  # None: not checked
    missing: Dict[str, str] = field(default_factory=dict)  # concern -> why its hooks are not live
    unmeasured: Tuple[str, ...] = ()  # copy sites the hooks cannot see, each with why
    # DMA evidence (None: not taken). device_bytes: what the storage device wrote for the method's reads;
    # device_to_buffer: of those, the bytes written into the buffer's own page frames.
    device_bytes: Optional[int] = None
    device_to_buffer: Optional[int] = None
    undecided: Tuple[str, ...] = ()  # why the DMA evidence cannot decide (no block device, hooks missing, lost)
    from_file_mapping: bool = False  # page cache was filled by faults on a file mapping: a user-space copy source


@dataclass(frozen=True)
class Verdict:
    kind: str  # ZERO_COPY, COPIES, FAILED, WRONG_DATA, INCOMPLETE, UNMEASURED, ABSENT
    label: str  # what the table shows
    copies: Optional[float] = None  # CPU-copied bytes / payload, when measured
    reasons: Tuple[str, ...] = ()

    def to_dict(self):
        return {"kind": self.kind, "label": self.label, "copies": self.copies, "reasons": list(self.reasons)}


def errno_name(number):
    return errno_module.errorcode.get(abs(number), f"errno {abs(number)}")


def unmeasured_copy_sites(flows: Iterable[Flow]):
    """Why some bytes crossed a place where a CPU copy would not be counted (empty: every copy is seen)."""
    sites = []

    def add(why):
        if why not in sites:
            sites.append(why)

    for flow in flows:
        if flow.bytes <= 0:
            continue
        if flow.path == "read":
            if flow.src_kind == "file" and flow.src_fs in READ_COPY_MEASURED_FS:
                continue
            if flow.src_kind == "shmem":
                add("read() from a memfd/tmpfs copies in shmem_file_read_iter, which is not hooked")
            else:
                add(f"read() from a {flow.src_kind} on {flow.src_fs} copies outside filemap_read, which is not hooked")
        elif flow.path == "write":
            if flow.dst_kind == "shmem" or (flow.dst_kind == "file" and flow.dst_fs in WRITE_COPY_MEASURED_FS):
                continue
            add(f"write() into a {flow.dst_kind} on {flow.dst_fs} copies outside generic_perform_write")
        elif flow.path == "rw_file":
            # Patched kernels: the exporter hands its pages to the file's read_iter (kernel/series). Buffered,
            # the copy is filemap_read's on these filesystems; direct, the device DMAs into the pages.
            if flow.src_kind == "file" and flow.src_fs not in READ_COPY_MEASURED_FS:
                add(f"rw_file from a file on {flow.src_fs}: its read_iter may copy outside filemap_read")
        elif flow.path in FD_TO_FD_PATHS:
            # The source side hands pages over by reference (filemap_splice_read, shmem_file_splice_read, pipe
            # buffers) or, opened O_DIRECT, DMAs into kernel pages (copy_splice_read): no CPU copy to miss.
            if flow.src_kind == "file" and flow.src_fs not in READ_COPY_MEASURED_FS:
                add(f"{flow.path} from a file on {flow.src_fs}: its splice read is not known to be copy-free")
            elif flow.src_kind not in ("file", "shmem", "pipe"):
                add(f"{flow.path} from a {flow.src_kind}: its splice read is not hooked")
            if flow.dst_kind == "pipe" or flow.dst_kind == "shmem" or (
                    flow.dst_kind == "file" and flow.dst_fs in WRITE_COPY_MEASURED_FS):
                continue  # a pipe takes page references; iter_file_splice_write -> generic_perform_write is hooked
            if flow.dst_kind == "dmabuf":
                add(f"{flow.path} into a dma-buf went through the exporter's own callback, which is not hooked yet")
            else:
                add(f"{flow.path} into a {flow.dst_kind} on {flow.dst_fs} copies outside generic_perform_write")
    return tuple(sites)


def _copies_label(ratio):
    rounded = round(ratio)
    if abs(ratio - rounded) > 0.05 or (rounded == 0 and ratio > 0):
        return f"{ratio:.2f} copies"
    return f"{rounded} cop{'y' if rounded == 1 else 'ies'}"


def _evidence_decides(m: Measurement):
    return m.device_to_buffer is not None and m.device_bytes is not None and not m.undecided


def verdict(m: Measurement) -> Verdict:
    """The method's verdict from what the kernel counted, in order of precedence:
    failed > wrong data > incomplete > (DMA evidence decides) zero-copy / N copies > (else, hooks only)
    unmeasured > N copies seen; zero-copy never without DMA evidence."""
    if m.errno:
        return Verdict(FAILED, f"failed ({errno_name(m.errno)})",
                       reasons=(f"the kernel answered {errno_name(m.errno)}",))
    if m.checksum_ok is False:
        return Verdict(WRONG_DATA, "WRONG DATA (checksum)",
                       reasons=("the buffer's bytes differ from the file's: a fast wrong method does not win",))
    if m.moved < m.payload:
        return Verdict(INCOMPLETE, f"incomplete ({m.moved} of {m.payload} B)",
                       reasons=(f"only {m.moved} of {m.payload} bytes were moved",))
    if _evidence_decides(m):
        return _by_conservation(m)
    return _by_hooks(m)


def unseen_copied(payload: int, device_to_buffer: int, seen: int) -> int:
    """Bytes that reached the buffer by a copy no hook saw, at least: every payload byte the device did not write
    into the buffer's own pages was copied, and the `seen` copies may be those."""
    return max(0, payload - min(device_to_buffer, payload) - seen)


def _by_conservation(m: Measurement) -> Verdict:
    """Every payload byte came by DMA into the buffer's frames or by a CPU copy: the uncovered bytes were copied."""
    into = min(m.device_to_buffer, m.payload)
    uncovered = m.payload - into
    seen = m.cpu_copied if COPY_CONCERN not in m.missing else 0
    if uncovered == 0 and seen == 0:
        checked = "checksum holds" if m.checksum_ok else "content not checked (a command's buffer)"
        pinned = "" if GUP_CONCERN in m.missing else f"; {m.pinned_pages} pages pinned for DMA"
        return Verdict(ZERO_COPY, "zero-copy", 0.0,
                       (f"the device wrote {human_size(m.device_to_buffer)} into the buffer's own pages: it covers "
                        f"the {human_size(m.payload)} payload; {checked}; no CPU copy seen{pinned}",))
    # A byte not written by the device into the buffer was copied at least once; copies the hooks saw may be
    # those (or copies into a bounce buffer before them): at least uncovered - seen bytes were copied unseen.
    unseen = unseen_copied(m.payload, m.device_to_buffer, seen)
    ratio = max(seen, uncovered) / m.payload if m.payload else 0.0
    reasons = [f"the device wrote {human_size(into)} of the {human_size(m.payload)} payload into the buffer's own "
               f"pages: {human_size(uncovered)} arrived by a CPU copy"]
    if COPY_CONCERN in m.missing:
        reasons.append(f"CPU copies are not traced here: {m.missing[COPY_CONCERN]}")
    else:
        reasons.append(f"the hooks saw {m.cpu_copied} bytes copied by the CPU ({_copies_label(seen / m.payload)} "
                       f"seen)" if m.payload else f"the hooks saw {m.cpu_copied} bytes copied by the CPU")
    if unseen:
        elsewhere = m.device_bytes - m.device_to_buffer
        if m.from_file_mapping:
            reasons.append("the buffer's bytes came from a file mapping: a user-space copy")
        if elsewhere > 0:
            reasons.append(f"device wrote {human_size(elsewhere)} into pages that are not the buffer's: "
                           "copied where no hook sees")
        if elsewhere < unseen:
            reasons.append(f"{human_size(unseen - max(elsewhere, 0))} reached the buffer without the device "
                           "writing them for this load (page cache already warm?): copied where no hook sees")
        reasons += list(m.unmeasured)
    if PAGE_CACHE_CONCERN in m.missing:
        cache_note = "page cache not traced"
    else:
        cache_note = "via page cache" if m.page_cache_pages > 0 or m.from_file_mapping else "no page cache"
    label = f"{_copies_label(ratio)}, {cache_note}"
    if COPY_CONCERN in m.missing:
        label = f">= {label}, copies not traced"  # a copy the missing hooks would have seen may be one more
    elif unseen:
        label += f", {human_size(unseen)} unseen"
    return Verdict(COPIES, label, ratio, tuple(reasons))


def _by_hooks(m: Measurement) -> Verdict:
    """No DMA evidence: the copies the hooks saw are facts, their absence proves nothing."""
    reasons = []
    if COPY_CONCERN in m.missing:
        reasons.append(f"CPU copies are not traced here: {m.missing[COPY_CONCERN]}")
    reasons += list(m.unmeasured)
    if m.reached < m.payload:
        reasons.append(f"the kernel events saw {m.reached} of {m.payload} bytes reach the buffer")
    ratio = m.cpu_copied / m.payload if m.payload else 0.0
    if reasons:
        seen = f", >= {_copies_label(ratio)} seen" if m.cpu_copied and COPY_CONCERN not in m.missing else ""
        return Verdict(UNMEASURED, f"unmeasured{seen}", None, tuple(reasons) + _no_evidence(m))
    page_cache = m.page_cache_pages > 0
    if m.cpu_copied == 0 and not page_cache:
        lacking = [f"zero-copy needs these hooks live: {concern}: {m.missing[concern]}"
                   for concern in (GUP_CONCERN, PAGE_CACHE_CONCERN) if concern in m.missing]
        return Verdict(UNMEASURED, "unmeasured (0 copies seen)", 0.0, tuple(lacking) + _no_evidence(m))
    if PAGE_CACHE_CONCERN in m.missing:
        cache_note = "page cache not traced"
    else:
        cache_note = "via page cache" if page_cache else "no page cache"
    return Verdict(COPIES, f"{_copies_label(ratio)}, {cache_note}", ratio,
                   (f"{m.cpu_copied} bytes copied by the CPU for {m.payload} bytes of payload",) + _no_evidence(m))


def _no_evidence(m: Measurement):
    if m.undecided:
        return tuple(f"no DMA evidence: {why}" for why in m.undecided)
    return ("no DMA evidence was taken: where the device wrote is not known, so no copy-free path is proven",)


def absent(why):
    return Verdict(ABSENT, "absent on this kernel", reasons=(why,))


# ---------------------------------------------------------------------------------------------
# Expectations: `--expect zero-copy|copies=N`


@dataclass(frozen=True)
class Expectation:
    text: str
    zero_copy: bool = False
    copies: Optional[int] = None

    def holds(self, result_verdict: Verdict):
        """(held?, why) for one verdict."""
        if result_verdict.kind in (FAILED, WRONG_DATA, INCOMPLETE, ABSENT):
            return False, f"expected {self.text}, but the method {result_verdict.label}"
        if result_verdict.kind == UNMEASURED:
            return False, f"expected {self.text}, but it cannot be checked: {'; '.join(result_verdict.reasons)}"
        if self.zero_copy:
            held = result_verdict.kind == ZERO_COPY
        else:
            held = result_verdict.copies is not None and round(result_verdict.copies) == self.copies
        return held, f"{'held' if held else 'did not hold'}: expected {self.text}, measured {result_verdict.label}"


EXPECTATION = re.compile(r"^(?:(?P<zero>zero-copy)|copies=(?P<copies>\d+))$")


def parse_expectation(text):
    """'zero-copy' or 'copies=N' (N a whole number) -> Expectation; ValueError with what is accepted."""
    match = EXPECTATION.match((text or "").strip().lower())
    if not match:
        raise ValueError(f"cannot read the expectation {text!r}: write 'zero-copy' or 'copies=N' (e.g. copies=1)")
    if match.group("zero"):
        return Expectation("zero-copy", zero_copy=True)
    return Expectation(f"copies={int(match.group('copies'))}", copies=int(match.group("copies")))

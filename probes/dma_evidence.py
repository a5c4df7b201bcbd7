"""Positive DMA evidence: which page frames the storage device wrote into, from dma_evidence.bpf.c.

`DmaEvidence` loads and attaches the block-layer programs (tp_btf, else raw_tp) and reads what the
device wrote for reads queued by the traced processes (or by anyone, with record_all): bytes per page
frame, bytes per submitting process, and counters of everything it could not place. `pagemap_pfns`
gives the page frames behind a mapping of this (or another) process; `buffer_pages` a dma-buf's pages from
its exporter; `intersect` says how many of the device's bytes landed in a buffer (its pages named as the probe
names them: by their place in a file, else by their frame) and how many elsewhere. See docs/dma-evidence.md.
"""
import ctypes
import mmap
import os
import platform
import struct
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ..bpf import BpfLoadError, BpfObject
from ..errors import BpfError, KernelLacks, NeedsPrivilege
from ..kernelfs import kallsyms_address, kernel_config_option, tracefs_root, tracepoint_exists
from . import object_path

PAGE_SIZE = 4096  # DMA_EVIDENCE_PAGE_SIZE: the walk splits bio_vecs into 4 KiB pages (x86_64)

# (hook name, program per tracepoint) in order of preference: BTF-typed tracepoints, else raw tracepoints.
PROGRAM_SETS = (
    ("tp_btf", ("bio_queue_btf", "bio_split_btf", "rq_complete_btf", "page_removed_btf", "removal_call_btf",
                "uring_request_btf")),
    ("raw_tp", ("bio_queue_raw", "bio_split_raw", "rq_complete_raw", "page_removed_raw", "removal_call_raw",
                "uring_request_raw")),
)
TRACEPOINTS = ("block_bio_queue", "block_split", "block_rq_complete", "mm_filemap_delete_from_page_cache", "sys_exit",
               "io_uring_submit_req")
URING_TRACEPOINT = "io_uring:io_uring_submit_req"  # a kernel without io_uring has none, and no io_uring fallocate


class DmaEvidenceTgid(ctypes.Structure):
    """Mirror of struct dma_evidence_tgid (dma_evidence.h): the value of tgid_writes."""

    _fields_ = [("bytes", ctypes.c_uint64), ("bios", ctypes.c_uint64)]


class DmaEvidenceStats(ctypes.Structure):
    """Mirror of struct dma_evidence_stats (dma_evidence.h): one per CPU in the stats map."""

    _fields_ = [
        ("read_requests", ctypes.c_uint64),
        ("read_bytes", ctypes.c_uint64),
        ("recorded_bytes", ctypes.c_uint64),
        ("untraced_bytes", ctypes.c_uint64),
        ("error_bytes", ctypes.c_uint64),
        ("map_full_bytes", ctypes.c_uint64),
        ("tgid_map_full", ctypes.c_uint64),
        ("loop_bound_bytes", ctypes.c_uint64),
        ("unplaced_bytes", ctypes.c_uint64),
        ("bios_tagged", ctypes.c_uint64),
        ("vmemmap_base", ctypes.c_uint64),
        ("page_struct_size", ctypes.c_uint64),
        ("file_places", ctypes.c_uint64),
        ("headless_bytes", ctypes.c_uint64),
        ("left_bytes", ctypes.c_uint64),
        ("unfollowed_removals", ctypes.c_uint64),
    ]


class DmaEvidenceFilePage(ctypes.Structure):
    """Mirror of struct dma_evidence_file_page (dma_evidence.h): the key of file_writes."""

    _fields_ = [("ino", ctypes.c_uint64), ("index", ctypes.c_uint64), ("dev", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class DmaEvidenceFileWrite(ctypes.Structure):
    """Mirror of struct dma_evidence_file_write (dma_evidence.h): the value of file_writes."""

    _fields_ = [("bytes", ctypes.c_uint64), ("pfn", ctypes.c_uint64)]


class DmaEvidenceFile(ctypes.Structure):
    """Mirror of struct dma_evidence_file (dma_evidence.h): the key of written_files."""

    _fields_ = [("ino", ctypes.c_uint64), ("dev", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class DmaEvidenceFrames(ctypes.Structure):
    """Mirror of struct dma_evidence_frames (dma_evidence.h): a run of a buffer's pages, consecutive in frame (and
    in place, for pages named by place), with the ledger a device write into them goes to (named_by)."""

    _fields_ = [("pfn", ctypes.c_uint64), ("pages", ctypes.c_uint64), ("ino", ctypes.c_uint64),
                ("index", ctypes.c_uint64), ("dev", ctypes.c_uint32), ("named_by", ctypes.c_uint32)]


BY_FRAME, BY_PLACE, UNNAMED = 0, 1, 2  # DMA_EVIDENCE_BY_FRAME, _BY_PLACE, DMA_EVIDENCE_UNNAMED (dma_evidence.h)


FRAMES_PROGRAM = "dump_buffer_frames"


def page_arithmetic() -> dict:
    """The read-only globals the programs need to turn a struct page into its frame on this machine: on arm64
    the kernel's VA size (CONFIG_ARM64_VA_BITS, from its config: 0 when not found, and frames stay unknown)."""
    if platform.machine() not in ("aarch64", "arm64"):
        return {}
    try:
        return {"arm64_va_bits": int(kernel_config_option("ARM64_VA_BITS") or 0)}
    except ValueError:
        return {"arm64_va_bits": 0}


def cma_heap_ops() -> int:
    """Where the CMA heap's dma_buf_ops are (kallsyms, CONFIG_KALLSYMS_ALL): a dma-buf with them is a CMA-heap
    buffer, whatever its heap is named; 0 when the kernel has no CMA heap (or hides addresses)."""
    return kallsyms_address("cma_heap_buf_ops") or 0
_RUN = struct.Struct("<QQQQII")  # struct dma_evidence_frames
_LAST_SET = ("vmemmap_base", "page_struct_size", "file_places")  # facts about the kernel, not counts
_SUMMED = tuple(name for name, _ in DmaEvidenceStats._fields_ if name not in _LAST_SET)
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Stats:
    """The counters of all CPUs, summed. Bytes the walk could not place are never silently lost:
    map_full_bytes, loop_bound_bytes and unplaced_bytes say how many, error_bytes how many failed."""

    read_requests: int = 0
    read_bytes: int = 0
    recorded_bytes: int = 0
    untraced_bytes: int = 0
    error_bytes: int = 0
    map_full_bytes: int = 0
    tgid_map_full: int = 0
    loop_bound_bytes: int = 0
    unplaced_bytes: int = 0
    bios_tagged: int = 0
    vmemmap_base: int = 0
    page_struct_size: int = 0
    file_places: int = 0  # 1: the walk named the pages of files by their place (file_writes) on this kernel
    headless_bytes: int = 0  # bytes in pages whose folio was not found (a memfd's page there has no place)
    left_bytes: int = 0  # bytes in places whose page left its file: device writes, in neither ledger
    unfollowed_removals: int = 0  # calls that may have removed pages from some file unseen (truncate(2) ...)
    # Runs the kernel skipped because a program was already running on that CPU (a completion in an interrupt
    # nested in another's): requests and tags nobody counted, so their bytes are unknown (None: not reported).
    skipped_runs: Optional[int] = 0

    @property
    def lost_bytes(self):
        """Bytes the device wrote for traced tasks that are in no page frame's count."""
        return self.map_full_bytes + self.loop_bound_bytes + self.unplaced_bytes + self.headless_bytes


PLACES_UNKNOWN = 1 << 63  # DMA_EVIDENCE_PLACES_UNKNOWN: in a written_files count, a folio of unknown size left
Place = Tuple[int, int, int]  # a page of a file: (dev as the kernel encodes it, inode, offset in pages)
FileId = Tuple[int, int]  # (dev as the kernel encodes it, inode)
# A page of a buffer as the probe's ledgers name it, by the rule the completion walk uses for what the device
# writes (dma_evidence.bpf.c page_in_file): its place in a file (a key of `DeviceWrites.places`) where it has one,
# else its frame (a key of `DeviceWrites.pages`); None where neither is known.
PageKey = Union[int, Place, None]


@dataclass(frozen=True)
class BufferPages:
    """A dma-buf's pages as its exporter holds them, in buffer order: each page's frame, and its name in the
    probe's ledgers (`keys`): a udmabuf's memfd pages by their place, a heap's pages by their frame."""

    frames: List[int]
    keys: List[PageKey]


@dataclass(frozen=True)
class DeviceWrites:
    """What the device wrote, and for which submitting process (tgid 0: not known).

    Each page it wrote is in one of two ledgers: a page that belongs to a file (a memfd's, a file's page cache)
    by its place in it (`places`: place -> (bytes, the frame written)); any other page by its frame (`pages`).
    `written_files`: each file with places, and the count of its pages that left it since (a hole punched, a
    truncation; pages the kernel moves stay): a place whose page left is forgotten, its bytes in `left_bytes`.
    PLACES_UNKNOWN in a count: which left is not known (a truncation, a punch that may have missed pages)."""

    pages: Dict[int, int]
    by_tgid: Dict[int, int] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    hook: str = ""
    places: Dict[Place, Tuple[int, int]] = field(default_factory=dict)
    written_files: Dict[FileId, int] = field(default_factory=dict)
    left_bytes: int = 0  # since the last drain

    @property
    def total(self):
        return sum(self.pages.values()) + sum(written for written, _ in self.places.values()) + self.left_bytes


@dataclass(frozen=True)
class Intersection:
    """The device's bytes split by where they landed: into the buffer's own pages, or elsewhere."""

    into_buffer: int  # bytes written into the buffer's pages (a page written twice counts twice)
    elsewhere: int  # bytes written into pages that are not the buffer's (the page cache, a bounce buffer ...)
    buffer_pages: int  # distinct pages of the buffer (by frame or by place)
    buffer_pages_written: int  # of those, how many the device wrote into
    unmapped_pages: int = 0  # pages of the buffer named neither way (no frame present in the mapping, no place)
    # bytes of the buffer the device wrote, a page at most per page: what can cover a payload (two writes into one
    # page cover one page, however many bytes they moved)
    covered: int = 0


@dataclass(frozen=True)
class FilePages:
    """A memfd's pages by their place: its file (dev as the kernel encodes it, inode) and its size in pages."""

    dev: int
    ino: int
    pages: int

    @property
    def file(self) -> FileId:
        return self.dev, self.ino


def kernel_dev(st_dev: int) -> int:
    """stat()'s st_dev as the kernel encodes a dev_t inside (MKDEV: major << 20 | minor), as the probe reads it."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def file_pages_of(fd: int) -> FilePages:
    """The pages of the file open at `fd` (a memfd), by place."""
    status = os.fstat(fd)
    return FilePages(kernel_dev(status.st_dev), status.st_ino, (status.st_size + PAGE_SIZE - 1) // PAGE_SIZE)


def decode_stats(per_cpu_values) -> Stats:
    """[raw struct dma_evidence_stats bytes per CPU] -> Stats (counts summed; facts about the kernel: the last set)."""
    size = ctypes.sizeof(DmaEvidenceStats)
    totals = dict.fromkeys(_SUMMED, 0)
    facts = dict.fromkeys(_LAST_SET, 0)
    for raw in per_cpu_values:
        if len(raw) < size:
            raise BpfError(f"a dma_evidence stats value is {len(raw)} bytes, not {size}: rebuild with 'make bpf'")
        value = DmaEvidenceStats.from_buffer_copy(raw[:size])
        for name in _SUMMED:
            totals[name] += getattr(value, name)
        for name in _LAST_SET:
            facts[name] = getattr(value, name) or facts[name]
    return Stats(**totals, **facts)


def decode_pages(pairs) -> Dict[int, int]:
    """[(8-byte pfn key, 8-byte bytes value)] from device_writes -> {pfn: bytes}."""
    pages = {}
    for key, value in pairs:
        if len(key) != 8 or len(value) < 8:
            raise BpfError("device_writes holds entries of another layout: rebuild with 'make bpf'")
        pages[_U64.unpack(key)[0]] = _U64.unpack_from(value)[0]
    return pages


def decode_places(pairs) -> Dict[Place, Tuple[int, int]]:
    """[(struct dma_evidence_file_page key, struct dma_evidence_file_write value)] from file_writes ->
    {(dev, inode, index): (bytes, pfn)}."""
    key_size, value_size = ctypes.sizeof(DmaEvidenceFilePage), ctypes.sizeof(DmaEvidenceFileWrite)
    places = {}
    for key, value in pairs:
        if len(key) != key_size or len(value) < value_size:
            raise BpfError("file_writes holds entries of another layout: rebuild with 'make bpf'")
        page = DmaEvidenceFilePage.from_buffer_copy(key)
        written = DmaEvidenceFileWrite.from_buffer_copy(value[:value_size])
        places[(page.dev, page.ino, page.index)] = (written.bytes, written.pfn)
    return places


def decode_written_files(pairs) -> Dict[FileId, int]:
    """[(struct dma_evidence_file key, 8-byte count)] from written_files -> {(dev, inode): pages that left it}."""
    key_size = ctypes.sizeof(DmaEvidenceFile)
    files = {}
    for key, value in pairs:
        if len(key) != key_size or len(value) < 8:
            raise BpfError("written_files holds entries of another layout: rebuild with 'make bpf'")
        file = DmaEvidenceFile.from_buffer_copy(key)
        files[(file.dev, file.ino)] = _U64.unpack_from(value)[0]
    return files


def decode_tgids(pairs) -> Dict[int, int]:
    """[(4-byte tgid key, struct dma_evidence_tgid value)] from tgid_writes -> {tgid: bytes}."""
    size = ctypes.sizeof(DmaEvidenceTgid)
    by_tgid = {}
    for key, value in pairs:
        if len(key) != 4 or len(value) < size:
            raise BpfError("tgid_writes holds entries of another layout: rebuild with 'make bpf'")
        by_tgid[_U32.unpack(key)[0]] = DmaEvidenceTgid.from_buffer_copy(value[:size]).bytes
    return by_tgid


def intersect(writes: "DeviceWrites", buffer_pages: Iterable[PageKey], files: Iterable[FilePages] = ()
              ) -> Intersection:
    """Split the device's bytes into those written into the buffer and the rest.

    The buffer is `buffer_pages`, each page named as the probe names the page a device write lands in (PageKey:
    its frame, or its place in a file; None where neither is known), and `files`, memfds whose pages are matched
    by their place in the file: where the kernel moved them since does not matter. A frame is matched against the
    pages the device wrote by frame only, a place against places only: the frame a place was written in may hold
    another page now (the kernel moved the page the device wrote, and the frame went to another buffer).

    A page counts once however often it is named: a frame mapped twice, a udmabuf's page that is also a page of
    a memfd in `files` (this is the one place that rule lives).
    """
    frames, places, unmapped = set(), set(), 0
    for page in buffer_pages:
        if page is None:
            unmapped += 1
        elif isinstance(page, tuple):
            places.add(page)
        else:
            frames.add(page)
    sizes = {pages.file: pages.pages for pages in files}

    def in_files(place):
        return place[2] < sizes.get(place[:2], 0)

    places = {place for place in places if not in_files(place)}  # a memfd in `files` holds it already
    into = written = covered = 0
    for pfn in frames:
        got = writes.pages.get(pfn, 0)
        if got:
            into += got
            covered += min(got, PAGE_SIZE)
            written += 1
    for place, (got, _) in writes.places.items():
        if got and (place in places or in_files(place)):
            into += got
            covered += min(got, PAGE_SIZE)
            written += 1
    return Intersection(into, writes.total - into, len(frames) + len(places) + sum(sizes.values()), written,
                        unmapped, covered)


def decode_frame_runs(pairs, runs) -> BufferPages:
    """[(4-byte index, struct dma_evidence_frames)] from frame_runs and the count written -> the buffer's pages in
    buffer order: their frames, and their names in the probe's ledgers."""
    ordered = {}
    for key, value in pairs:
        if len(key) != 4 or len(value) < _RUN.size:
            raise BpfError("frame_runs holds entries of another layout: rebuild with 'make bpf'")
        index = _U32.unpack(key)[0]
        if index < runs:
            ordered[index] = _RUN.unpack_from(value)
    if len(ordered) != runs:
        raise BpfError(f"the frames walk wrote {runs} runs but {len(ordered)} were read back")
    frames: List[int] = []
    keys: List[PageKey] = []
    for index in range(runs):
        pfn, pages, ino, first, dev, named_by = ordered[index]
        frames.extend(range(pfn, pfn + pages))
        if named_by == BY_PLACE:
            keys.extend((dev, ino, offset) for offset in range(first, first + pages))
        elif named_by == BY_FRAME:
            keys.extend(range(pfn, pfn + pages))
        else:  # its folio's head was not found: the completion walk cannot name such a page either
            keys.extend([None] * pages)
    return BufferPages(frames, keys)


def buffer_pages(inode: int, max_pages: int = 1 << 16) -> Optional[BufferPages]:
    """The pages of dma-buf `inode`, in buffer order, from its exporter's own records (iter/dmabuf, 6.16+): a
    system-heap buffer's sg_table, a udmabuf's pages, a CMA-heap buffer's one contiguous run; each page's frame and
    its name in the probe's ledgers (a udmabuf's memfd pages by their place). None when no such buffer exists or
    its exporter is none of those. max_pages: the buffer's size in pages at most (it sizes the map the runs go to).

    The mmap of each is VM_PFNMAP, which pagemap cannot see; this reads what the exporter holds.
    """
    obj = BpfObject(object_path("dma_evidence"))
    try:
        obj.only(FRAMES_PROGRAM)
        obj.set_rodata(frames_of_inode=inode, cma_heap_ops=cma_heap_ops(), **page_arithmetic())
        obj.map("frame_runs").max_entries = max(1, int(max_pages))
        try:
            obj.load()
        except BpfLoadError as error:
            raise KernelLacks(f"the dma-buf iterator (iter/dmabuf, Linux 6.16+) cannot run here: {error}") from None
        obj.program(FRAMES_PROGRAM).read_iter()
        raw = obj.map("frame_count").lookup(_U32.pack(0))
        runs, cut_pages, found = struct.unpack_from("<QQQ", raw)
        if not found:
            return None
        if cut_pages:
            raise BpfError(f"dma-buf {inode} has more than {max_pages} pages ({cut_pages} not read): "
                           "pass its size in pages as max_pages")
        return decode_frame_runs(obj.map("frame_runs").lookup_all(), runs)
    finally:
        obj.close()


def buffer_frames(inode: int, max_pages: int = 1 << 16) -> Optional[List[int]]:
    """The page frames of dma-buf `inode`, page by page (buffer_pages' frames); None as buffer_pages."""
    pages = buffer_pages(inode, max_pages)
    return None if pages is None else pages.frames


# ---- page frames behind a mapping, from /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst)

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1


def decode_pagemap(raw) -> List[Optional[int]]:
    """pagemap entries (8 bytes each) -> the frame of each page, None where no page is present."""
    if len(raw) % 8:
        raise ValueError(f"pagemap returned {len(raw)} bytes, not whole 8-byte entries")
    return [entry & PAGEMAP_PFN_MASK if entry & PAGEMAP_PRESENT else None
            for (entry,) in _U64.iter_unpack(raw)]


def pagemap_pfns(address: int, length: int, pid="self") -> List[Optional[int]]:
    """The page frame of every page of [address, address + length) in process `pid`, None where absent.

    Pages must be present to have a frame: touch (populate) a memfd or udmabuf-backed mapping first.
    Mappings the kernel made with VM_PFNMAP (the mmap of a system-heap dma-buf or of a udmabuf) are
    reported absent: the page walk skips them (mm/pagewalk.c, walk_page_test). Needs CAP_SYS_ADMIN:
    others read zeros for every frame.
    """
    first = address // PAGE_SIZE
    count = (address + length + PAGE_SIZE - 1) // PAGE_SIZE - first
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        raw = pagemap.read(count * 8)
    if len(raw) != count * 8:
        raise BpfError(f"/proc/{pid}/pagemap gave {len(raw)} bytes for {count} pages")
    frames = decode_pagemap(raw)
    if any(pfn == 0 for pfn in frames):
        raise NeedsPrivilege("/proc/PID/pagemap hides page frames from this user: run as root (CAP_SYS_ADMIN)")
    return frames


def mapping_address(mapping: mmap.mmap) -> int:
    """Where a Python mmap object sits in this process."""
    return ctypes.addressof(ctypes.c_char.from_buffer(mapping))


def mapping_pfns(mapping: mmap.mmap, populate: bool = True) -> List[Optional[int]]:
    """The frames behind a Python mmap of this process; `populate` touches every page (a read) first."""
    if populate:
        for offset in range(0, len(mapping), PAGE_SIZE):
            mapping[offset]
    return pagemap_pfns(mapping_address(mapping), len(mapping))


# ---- the probe


class DmaEvidence:
    """The block-layer programs loaded and attached; read() returns what the device wrote so far.

    tgids: processes whose reads are recorded (more can be added while running); record_all records
    every read on the machine (bios queued before attach too, as tgid 0). max_pages bounds the
    pfn map (entries; bytes past it are counted in stats.map_full_bytes). hooks: the program sets
    to try, in order ("tp_btf", "raw_tp"); tests pass one to prove the fallback works.
    """

    def __init__(self, tgids: Iterable[int] = (), record_all: bool = False, max_pages: Optional[int] = None,
                 hooks: Iterable[str] = ("tp_btf", "raw_tp")):
        self.hook = ""
        self._obj = None
        self._programs: Tuple[str, ...] = ()
        self._left_at_drain = 0
        failures = []
        wanted = tuple(hooks)
        programs_of = dict(PROGRAM_SETS)
        uring = tracepoint_exists(tracefs_root(), URING_TRACEPOINT)
        for hook, programs in ((name, programs_of[name]) for name in wanted if name in programs_of):
            if not uring:
                programs = tuple(name for name in programs if not name.startswith("uring_"))
            obj = BpfObject(object_path("dma_evidence"))
            try:
                obj.only(*programs)
                obj.set_rodata(record_all=bool(record_all), **page_arithmetic())
                if max_pages:
                    for name in ("device_writes", "file_writes", "written_files"):
                        obj.map(name).max_entries = int(max_pages)
                obj.load()
                for name in programs:
                    program = obj.program(name)
                    if hook == "tp_btf":
                        program.attach_trace()
                    else:
                        program.attach_raw_tracepoint(TRACEPOINTS[programs_of[hook].index(name)])
            except (BpfLoadError, BpfError) as error:
                obj.close()
                failures.append(f"{hook}: {error}")
                continue
            self._obj, self.hook, self._programs = obj, hook, programs
            break
        if self._obj is None:
            raise KernelLacks("the block-layer tracepoints (block_bio_queue, block_split, block_rq_complete) "
                              "cannot be traced here, so no DMA evidence: " + "; ".join(failures))
        for tgid in tgids:
            self.add_tgid(tgid)

    def add_tgid(self, tgid: int):
        """Record the reads this process queues from now on."""
        self._obj.map("traced_tgids").update(_U32.pack(tgid), b"\1")

    def stats(self) -> Stats:
        stats_map = self._obj.map("stats")
        raw = stats_map.lookup(_U32.pack(0))
        return replace(decode_stats(stats_map.split_percpu(raw) if raw else []), skipped_runs=self.skipped_runs())

    def program_counters(self) -> Dict[str, dict]:
        """Each attached program's run statistics (bpf.Program.info_counters), by program name."""
        return {name: self._obj.program(name).info_counters() for name in self._programs}

    def skipped_runs(self) -> Optional[int]:
        """The attached programs' recursion misses, summed (None when the kernel does not count them)."""
        total = 0
        for name in self._programs:
            misses = self._obj.program(name).recursion_misses
            if misses is None:
                return None
            total += misses
        return total

    def read(self) -> DeviceWrites:
        """Everything recorded since attach (or the last drain), left in place."""
        return self._writes(lambda name: self._obj.map(name).lookup_all(), drained=False)

    def drain(self) -> DeviceWrites:
        """Everything recorded, removed from the maps in the same pass (the counters stay cumulative). The files
        written stay (`written_files`): a page that leaves one later still counts against it (files_now)."""
        return self._writes(lambda name: self._obj.map(name).pop_all(), drained=True)

    def files_now(self) -> Dict[FileId, int]:
        """The files the device wrote since forget_files, with their counts of pages that left them, as now."""
        return decode_written_files(self._obj.map("written_files").lookup_all())

    def forget_files(self):
        """Start a new window's list of files written (what was written before is no buffer of it)."""
        self._obj.map("written_files").pop_all()

    def _writes(self, entries, drained) -> DeviceWrites:
        stats = self.stats()
        left = stats.left_bytes - self._left_at_drain  # the bytes of places forgotten since the last drain
        if drained:
            self._left_at_drain = stats.left_bytes
        return DeviceWrites(decode_pages(entries("device_writes")), decode_tgids(entries("tgid_writes")), stats,
                            self.hook, decode_places(entries("file_writes")), self.files_now(), left)

    def close(self):
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""DMA evidence for validate: where the storage device wrote for a load, and whether that is the buffer.

A method's (or a command's) reads are recorded at the block layer (probes/dma_evidence, see
docs/dma-evidence.md) between two drains of the probe's maps, and intersected with the buffer's own
page frames:

- a system-heap dma-buf: its exporter's sg_table, read by `iter/dmabuf` (`buffer_pages`); its mmap
  is VM_PFNMAP, which pagemap cannot see;
- a udmabuf validate made: its memfd's pages by place, as a memfd (loads go into the memfd); a
  command's udmabuf: its pages from the exporter (`buffer_pages`), each named by its place in its memfd
  as the probe names the pages the device writes (by frame only where it has no place: a hugetlbfs page).
  Not by frame: a page the kernel moved after the device wrote it leaves its frame free, and a udmabuf
  made later may get it, filled by a copy;
- a memfd: its pages by their place in it, (file, offset), which the probe records for every page
  of a file it sees the device write: the kernel moves a memfd's pages to other frames whenever it
  likes (compaction, THP collapse, swap), so frames read after the load can miss pages the device
  did write into. A page that leaves the memfd (a hole punched, a truncation) takes its place's
  credit with it: a page a copy fills later takes the same place (and often the same frame, so
  frames alone cannot tell either). Where the probe cannot name places (its kernel's struct page
  unknown), the memfd's frames from /proc/self/pagemap are used;
- a user's command (`validate -- CMD`): the dma-bufs and memfds its processes hold. While it runs,
  /proc/PID/fd of the command and its descendants is polled (POLL_S) and every dma-buf or memfd fd
  is duplicated into this process with pidfd_getfd(2), and memfd mappings without an fd are opened
  through /proc/PID/map_files; holding them keeps their pages after the command closes them or exits.
  At its end: dma-bufs (heap, udmabuf) give their pages through `buffer_pages`, plain memfds their
  places (or, failing those, their frames through a mapping of our own); a plain memfd counts as a
  buffer only when the device wrote into it, a traced call moved bytes into it, or it holds at least
  PLAIN_MEMFD_MIN bytes (a memfd the runtime made for itself, e.g. libffi's trampolines, a few pages,
  is no payload).
  A buffer made and dropped between two polls is not seen (then nothing decides, and the verdict
  says so).

The evidence cannot decide when the file has no block device under it (tmpfs, network and FUSE file
systems; btrfs, whose st_dev is an anonymous device, is not yet resolved to its disks), when the block
hooks cannot be attached, or when the probe counted bytes it could not place (its maps full, its loop
bound reached). Each is said as a sentence in `undecided`.
"""
import ctypes
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..errors import DmabufTopError
from ..probes.dma_evidence import (
    PAGE_SIZE,
    PLACES_UNKNOWN,
    DeviceWrites,
    DmaEvidence,
    FileId,
    FilePages,
    PageKey,
    Stats,
    buffer_pages,
    file_pages_of,
    intersect,
    pagemap_pfns,
)
from .methods import DMABUF_KINDS, MAP_FAILED, MAP_SHARED, PROT_READ, libc

POLL_S = 0.001  # how often a command's fds are looked at: a buffer made and closed between two looks is missed
PLAIN_MEMFD_MIN = 1 << 20  # a plain memfd this large is taken as a buffer even if nothing is known to fill it
MAPS_EVERY = 10  # polls between two reads of the tree's /proc/PID/maps (longer: an interpreter maps hundreds)
DEVICE_MAP_PAGES = 1 << 18  # the probe's default: 1 GiB of frames


def block_device_missing(path) -> Optional[str]:
    """None when a block device is under `path`'s file system (/sys/dev/block/MAJ:MIN), else why not."""
    device = os.stat(path).st_dev
    major, minor = os.major(device), os.minor(device)
    if os.path.exists(f"/sys/dev/block/{major}:{minor}"):
        return None
    return (f"{path} is on device {major}:{minor}, which is no block device (tmpfs, a network or FUSE file "
            "system, or btrfs's anonymous device): the device's writes cannot be placed")


@dataclass(frozen=True)
class Evidence:
    """What one load's window showed: None figures when the evidence was not taken."""

    device_bytes: Optional[int] = None
    device_to_buffer: Optional[int] = None  # bytes of the buffer the device wrote, a page at most per page
    buffer_pages: int = 0
    undecided: Tuple[str, ...] = ()


def skipped_runs(before: Stats, after: Stats) -> Optional[int]:
    """Runs of the probe's programs the kernel skipped between two reads (one was already running on that CPU),
    or None where the kernel does not count them."""
    if after.skipped_runs is None:
        return None
    return after.skipped_runs - (before.skipped_runs or 0)


def lost(before: Stats, after: Stats) -> Optional[str]:
    """Why the window's figures are not whole (bytes the probe could not place), or None."""
    parts = []
    for name, why in (("map_full_bytes", "its frame map was full"), ("loop_bound_bytes", "its walk bound was hit"),
                      ("unplaced_bytes", "they were in no bio vector"),
                      ("headless_bytes", "their pages' folios were not found, so a memfd's among them has no place"),
                      ("error_bytes", "the device failed them")):
        amount = getattr(after, name) - getattr(before, name)
        if amount:
            parts.append(f"{amount} bytes ({why})")
    if after.tgid_map_full - before.tgid_map_full:
        parts.append("per-process counts (their map was full)")
    skipped = skipped_runs(before, after)
    if skipped is None:
        parts.append("an unknown number of requests (this kernel does not count the probe's skipped runs)")
    elif skipped:
        parts.append(f"{skipped} runs of its programs (the kernel skipped "
                     "them: one was already running on that CPU, as when a completion interrupts another's)")
    return "the block-layer evidence lost " + ", ".join(parts) if parts else None


class Window:
    """The block-layer probe for one process tree, drained at the start and the end of each load."""

    def __init__(self, tgids, max_pages=DEVICE_MAP_PAGES):
        self.missing = None
        self.probe = None
        try:
            self.probe = DmaEvidence(tgids=tgids, max_pages=max_pages)
        except DmabufTopError as error:
            self.missing = f"the block-layer hooks cannot be attached: {error}"
        self._stats = None
        self.skipped_runs = 0

    def add_tgid(self, tgid):
        if self.probe is not None:
            self.probe.add_tgid(tgid)

    def start(self):
        self.skipped_runs = 0  # of the last window: runs of the probe the kernel skipped (nested on a CPU)
        if self.probe is not None:
            self.probe.drain()
            self.probe.forget_files()
            self._stats = self.probe.stats()

    def stop(self) -> Tuple[DeviceWrites, Optional[str]]:
        """(what the device wrote, why the window is not whole or None); nothing written, and why, without a probe."""
        if self.probe is None:
            return DeviceWrites({}), self.missing
        writes = self.probe.drain()
        before = self._stats or Stats()
        self.skipped_runs = skipped_runs(before, writes.stats) or 0
        return writes, lost(before, writes.stats)

    def since(self) -> Optional["Since"]:
        """What happened to the files written after stop(), read after the buffers' pages (None without a probe)."""
        if self.probe is None:
            return None
        before = self._stats or Stats()
        return Since(self.probe.files_now(), self.probe.stats().unfollowed_removals - before.unfollowed_removals)

    def close(self):
        if self.probe is not None:
            self.probe.close()
            self.probe = None


@dataclass(frozen=True)
class Memfd:
    """A memfd that is (part of) the buffer: its pages by place, and a way to read its frames now (the fallback).
    by_frame: a hugetlbfs memfd (MFD_HUGETLB), whose pages the probe names by frame, never by place."""

    pages: FilePages
    frames: Callable[[], List[Optional[int]]]
    by_frame: bool = False


HUGETLBFS_MAGIC = 0x958458F6  # include/uapi/linux/magic.h


def _fs_magic(fd) -> int:
    """The f_type of the filesystem `fd` is on (fstatfs: struct statfs opens with it, a long)."""
    buffer = ctypes.create_string_buffer(256)
    if libc.fstatfs(fd, buffer) != 0:
        raise OSError(ctypes.get_errno(), "fstatfs")
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def memfd_of(fd, address=None) -> Memfd:
    """The memfd open at `fd`; its frames through `address` (a mapping of it in this process) or our own."""
    by_frame = _fs_magic(fd) == HUGETLBFS_MAGIC
    if address:
        def frames():
            size = os.fstat(fd).st_size
            _touch(address, size)
            return pagemap_pfns(address, size)
        return Memfd(file_pages_of(fd), frames, by_frame)
    return Memfd(file_pages_of(fd), lambda: _memfd_frames(fd), by_frame)


@dataclass(frozen=True)
class Since:
    """What the probe saw after the window's drain, read once the buffers' pages are (Window.since): the files'
    counts of pages that left them now, and the calls that may have removed pages unseen since the window began."""

    files: Dict[FileId, int]
    removals_unfollowed: int


def why_not_by_place(writes: DeviceWrites, file: FileId, since: Optional[Since]) -> Optional[str]:
    """Why the places of this file (a memfd, or the memfd under a udmabuf) cannot decide (None: they can). A page
    left it and which one is not known (a truncation, a punch), a page left it after the window's drain (its place
    was already read), or a call that removes pages ran where the probe cannot see which file (then no memfd's
    places are trusted)."""
    at_stop = writes.written_files.get(file, 0)
    if at_stop & PLACES_UNKNOWN:
        return (f"pages of memfd inode {file[1]} left it after the device wrote into it (a truncation, a "
                "hole punched), and which ones is not known")
    if since is None:
        return None
    if since.files.get(file, at_stop) != at_stop:
        return f"pages of memfd inode {file[1]} left it after the load, while it was judged"
    if since.removals_unfollowed:
        return ("truncate(2), madvise(MADV_REMOVE) or an io_uring fallocate/ftruncate ran during the load: pages "
                "may have left a memfd where the probe cannot see which")
    return None


def judge(writes: DeviceWrites, pages: Optional[List[PageKey]], why_not=(), memfds=(), since: Optional[Since] = None
          ) -> Evidence:
    """The window's device writes against the buffer: `pages` (its dma-bufs' pages as the probe names them, by
    place or by frame: PageKey; None: not known) and `memfds`, each matched by place where the probe names places
    (else by its frames now). Places are trusted only in files no page left unseen (why_not_by_place)."""
    why_not = tuple(why for why in why_not if why)
    total = writes.total
    if pages is None and not memfds:
        return Evidence(None if why_not else total, None, 0, why_not or ("the buffer's page frames are not known",))
    pages, files = list(pages or ()), []
    doubted: Dict[FileId, Optional[str]] = {}

    def doubt(file):
        if file not in doubted:
            doubted[file] = why_not_by_place(writes, file, since)
        return doubted[file]

    # Whether this kernel names a file's pages by place: the window's walk says so, and so does a dma-buf's page
    # named by place (a window without a read completion ran no walk to say it).
    by_place = writes.stats.file_places or any(isinstance(page, tuple) for page in pages)
    for memfd in memfds:
        if not by_place or memfd.by_frame:  # its pages cannot be named by place: their frames now
            pages += memfd.frames()
        elif not doubt(memfd.pages.file):
            files.append(memfd.pages)
    # A udmabuf's pages named by place are its memfd's: trusted as far as that memfd's places are.
    pages = [page for page in pages if not isinstance(page, tuple) or not doubt(page[:2])]
    for why in doubted.values():
        if why and why not in why_not:
            why_not += (why,)
    split = intersect(writes, pages, files)
    if split.unmapped_pages:  # the device may have written those: what went into the buffer is not known whole
        why_not += (f"{split.unmapped_pages} pages of the buffer had no known page frame or place",)
    return Evidence(total, split.covered, split.buffer_pages, why_not)  # covered: what a payload can rest on


# ---------------------------------------------------------------------------------------------
# The frames of validate's own buffers


def _touch(address, size):
    """Fault every page of a mapping in (a read each), so pagemap knows its frame."""
    for offset in range(0, size, PAGE_SIZE):
        ctypes.string_at(address + offset, 1)


def method_pages(buffer) -> Tuple[List[PageKey], List[Memfd]]:
    """The pages of a validate Buffer (methods.Buffer), after its load, before its close: (dma-buf pages, memfds)."""
    if buffer.kind in DMABUF_KINDS:
        found = buffer_pages(buffer.inode, max_pages=buffer.size // PAGE_SIZE + 1)
        if found is None:
            raise DmabufTopError(f"iter/dmabuf lists no system-heap, CMA-heap or udmabuf dma-buf {buffer.inode}")
        return found.keys, []
    return [], [memfd_of(buffer.fd, buffer.address)]


# ---------------------------------------------------------------------------------------------
# A command's buffers


SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _take_fd(pid, fd) -> Optional[int]:
    """A duplicate, in this process, of process pid's fd (pidfd_getfd, Linux 5.6+); None if it is gone."""
    pidfd = _libc.syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
    if pidfd < 0:
        return None
    try:
        got = _libc.syscall(SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
        return got if got >= 0 else None
    finally:
        os.close(pidfd)


def _kind(link: str) -> Optional[str]:
    if link.startswith("/memfd:"):
        return "memfd"
    if link.startswith("/dmabuf:") or link == "anon_inode:dmabuf":
        return "dmabuf"
    return None


@dataclass
class CommandBuffers:
    """The dma-bufs and memfds a command tree held, each kept open here (inode -> (kind, our fd))."""

    root: int
    held: Dict[int, Tuple[str, int]] = field(default_factory=dict)
    tgids: Set[int] = field(default_factory=set)
    refused: List[str] = field(default_factory=list)
    polls: int = 0
    async_io: bool = False  # an io_uring fd or an AIO ring was seen: their reads are no syscall the tracer follows

    def tree(self) -> List[int]:
        found, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as children:
                        todo += [int(child) for child in children.read().split()]
            except OSError:
                continue
        return found

    def poll(self) -> List[int]:
        """Takes every new buffer of the tree; returns the tree's processes not seen before."""
        new = []
        self.polls += 1
        for pid in self.tree():
            if pid not in self.tgids:
                self.tgids.add(pid)
                new.append(pid)
            self._take_fds(pid)
            if self.polls % MAPS_EVERY == 1:
                self._take_mappings(pid)
        return new

    def _take_fds(self, pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return
        for name in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
                if link == "anon_inode:[io_uring]":
                    self.async_io = True
                kind = _kind(link)
                if kind is None:
                    continue
                inode = os.stat(f"/proc/{pid}/fd/{name}").st_ino
            except OSError:
                continue
            if inode not in self.held:
                taken = _take_fd(pid, int(name))
                if taken is None:
                    self.refused.append(f"pid {pid} fd {name}: {os.strerror(ctypes.get_errno())}")
                else:
                    self.held[inode] = (kind, taken)

    def _take_mappings(self, pid):
        try:
            with open(f"/proc/{pid}/maps", "rb") as maps:
                lines = maps.read().splitlines()
        except OSError:
            return
        for line in lines:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith(b"/[aio]"):
                self.async_io = True  # io_setup's ring, mapped into the process
            if len(parts) < 6 or not parts[5].startswith(b"/memfd:"):
                continue  # a dma-buf mapped without an fd cannot be reopened safely: seen only through its fd
            inode = int(parts[4])
            if inode in self.held:
                continue
            try:
                self.held[inode] = ("memfd", os.open(f"/proc/{pid}/map_files/{parts[0].decode()}", os.O_RDONLY))
            except OSError:
                continue

    def pages(self, writes: DeviceWrites, reached: Set[int] = frozenset()
              ) -> Tuple[Optional[List[PageKey]], List[Memfd], List[str]]:
        """The held buffers' pages: (dma-bufs' pages as the probe names them, memfds, why some are not known);
        (None, [], []) when no buffer was held. Plain memfds only if the device wrote into them or a traced call
        moved bytes into them (`reached`: their inodes), or they are large (PLAIN_MEMFD_MIN). A dma-buf whose
        pages cannot be read whole (an exporter the walk does not know: a GPU's, a camera's) is a reason: a copy
        into it would otherwise go unseen and leave the rest of the buffers looking whole."""
        if not self.held:
            return None, [], []
        keys: List[PageKey] = []
        memfds: List[Memfd] = []
        unknown: List[str] = []
        for inode, (kind, fd) in self.held.items():
            if kind == "dmabuf":
                size_pages = os.fstat(fd).st_size // PAGE_SIZE
                found = buffer_pages(inode, max_pages=size_pages + 1)
                if found is None:
                    unknown.append(f"the pages of dma-buf {inode} cannot be read (an exporter the evidence does not "
                                   "know): what reached it is not known")
                    continue
                if len(found.keys) < size_pages:
                    unknown.append(f"only {len(found.keys)} of the {size_pages} pages of dma-buf {inode} could be "
                                   "read")
                keys += found.keys
                continue
            memfd = memfd_of(fd)
            large = os.fstat(fd).st_size >= PLAIN_MEMFD_MIN
            if large or inode in reached or self._device_wrote(writes, memfd):
                memfds.append(memfd)
        return keys, memfds, unknown

    @staticmethod
    def _device_wrote(writes: DeviceWrites, memfd: Memfd) -> bool:
        if writes.stats.file_places and not memfd.by_frame:
            return memfd.pages.file in writes.written_files
        return any(writes.pages.get(pfn) for pfn in memfd.frames())

    def close(self):
        for _, fd in self.held.values():
            os.close(fd)
        self.held = {}


def _memfd_frames(fd) -> List[int]:
    """A memfd's frames through a read-only shared mapping of our own (touched, so every page has one)."""
    size = os.fstat(fd).st_size
    if not size:
        return []
    address = libc.mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
    if address in (None, MAP_FAILED):
        return []
    try:
        _touch(address, size)
        return [pfn for pfn in pagemap_pfns(address, size) if pfn is not None]
    finally:
        libc.munmap(address, size)


def watch(command, window: Window, buffers: CommandBuffers):
    """Waits for the command, taking its buffers and tracing its new processes as they appear."""
    while command.poll() is None:
        for tgid in buffers.poll():
            window.add_tgid(tgid)
        time.sleep(POLL_S)
    return command.returncode

"""Parse debugfs `dma_buf/bufinfo`: every dma-buf the kernel knows, with its name.

The text comes from dma_buf_debug_show() in drivers/dma-buf/dma-buf.c. Since
5.3 (and unchanged through 6.x and 7.x) it is:

    <blank>
    Dma-buf Objects:
    size    \tflags   \tmode    \tcount   \texp_name\tino     \tname
    %08zu\t%08x\t%08x\t%08ld\t%s\t%08lu\t%s          one line per buffer; name or "<none>"
    \t<usage> fence:<driver> <timeline> seq N [un]signalled     zero or more (dma_resv_describe)
    \tAttached Devices:
    \t<dev_name>                                               zero or more
    Total %d devices attached
    <blank>
    ...
    <blank>
    Total %d objects, %zu bytes

Kernels before 5.3 print no ino and no name column, and describe fences as
"\tExclusive fence: ..." / "\tShared fence: ..."; both are accepted.

The name is set by any process that holds the buffer (DMA_BUF_SET_NAME) and is
printed raw: up to 31 arbitrary bytes except NUL, so it may hold tabs,
newlines, terminal escapes or invalid UTF-8. The parser therefore works on
bytes, splits only on b"\\n", and never lets a name move a record boundary: a
buffer line cannot be forged in 31 bytes (its zero-padded numbers alone take
46), the devices are located by counting back from the record's last
"Total N devices attached" line, and the totals are the file's last totals
line. A name with newlines is put back together from the lines that follow
its buffer line, as long as they fit in 31 bytes and do not look like fence
lines; that is a best effort, exact for every name without a newline.
"""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from ..errors import DmabufTopError, KernelLacks, NeedsPrivilege
from ..kernelfs import BUFINFO, DEBUGFS

DEBUGFS_MOUNTPOINT = str(DEBUGFS)
BUFINFO_PATH = str(BUFINFO)

MAX_NAME_BYTES = 31  # DMA_BUF_NAME_LEN - 1
UNNAMED_MARKER = b"<none>"

# Zero-padded widths (%08zu etc.) are what make a buffer line unforgeable by a
# 31-byte name, so they are required here, not just allowed.
_BUFFER_LINE = re.compile(
    rb"(?P<size>\d{8,})\t(?P<flags>[0-9a-fA-F]{8,})\t(?P<mode>[0-9a-fA-F]{8,})\t"
    rb"(?P<count>-?\d{8,})\t(?P<exporter>[^\t]*)"
    rb"(?:\t(?P<inode>\d{8,})(?:\t(?P<name>.*))?)?"
)
_FENCE_LINE = re.compile(rb"\t(?:\w+ fence:|Exclusive fence:|Shared fence:)")
_ATTACHED_HEADER = (b"\tAttached Devices:", b"Attached Devices:")
_DEVICES_TOTAL = re.compile(rb"Total (\d+) devices attached")
_OBJECTS_TOTAL = re.compile(rb"Total (\d+) objects, (\d+) bytes")
_OBJECTS_HEADER = b"Dma-buf Objects:"


class BufinfoFormatError(DmabufTopError):
    """The text is not in any bufinfo format we know."""


@dataclass(frozen=True)
class BufinfoBuffer:
    """One dma-buf as debugfs shows it.

    name is None when the kernel printed "<none>" (never named), b"" when a
    process set an empty name, and the raw bytes otherwise; on pre-5.3 kernels
    (no name column) it is None and inode is None. A buffer someone literally
    named "<none>" reads as unnamed here: fdinfo tells the two apart.
    """

    size: int
    flags: int  # the dma-buf file's f_flags (O_RDWR, O_NONBLOCK ...)
    mode: int  # the file's f_mode (FMODE_* bits)
    count: int  # file refcount: fds, mmaps and kernel references together
    exporter: str
    inode: Optional[int]
    name: Optional[bytes]
    devices: Tuple[str, ...] = ()
    fences: Tuple[bytes, ...] = ()

    @property
    def display_name(self) -> str:
        """The name made safe to print on a terminal or in a report."""
        return "" if self.name is None else printable(self.name)


@dataclass(frozen=True)
class Bufinfo:
    buffers: Tuple[BufinfoBuffer, ...]
    total_objects: Optional[int]  # None if the totals line was missing (cut-off read)
    total_bytes: Optional[int]

    def by_inode(self) -> dict:
        return {buffer.inode: buffer for buffer in self.buffers if buffer.inode is not None}


def printable(raw: bytes) -> str:
    """Decode hostile bytes for display: invalid UTF-8 and control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _decode_kernel_string(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def parse_bufinfo(text: Union[bytes, str]) -> Bufinfo:
    """Parse the whole text of a bufinfo file; raises BufinfoFormatError if it is not one."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    lines = text.split(b"\n")  # not splitlines(): names may contain \r, \v, \f, \x1c...

    header_index = _find_objects_header(lines)
    if header_index is None:
        if text.strip():
            raise BufinfoFormatError("this is not a dma-buf bufinfo text "
                                     "(no 'Dma-buf Objects:' header)")
        return Bufinfo((), None, None)

    total_objects = total_bytes = None
    end = len(lines)
    for index in range(len(lines) - 1, header_index, -1):
        match = _OBJECTS_TOTAL.fullmatch(lines[index])
        if match:
            total_objects, total_bytes = int(match.group(1)), int(match.group(2))
            end = index
            break

    starts = [
        index for index in range(header_index + 2, end)
        if _BUFFER_LINE.fullmatch(lines[index])
    ]
    buffers = []
    for position, start in enumerate(starts):
        stop = starts[position + 1] if position + 1 < len(starts) else end
        buffers.append(_parse_record(lines[start:stop]))
    return Bufinfo(tuple(buffers), total_objects, total_bytes)


def _find_objects_header(lines: List[bytes]) -> Optional[int]:
    for index, line in enumerate(lines):
        if line == _OBJECTS_HEADER:
            return index
    return None


def _parse_record(record: List[bytes]) -> BufinfoBuffer:
    match = _BUFFER_LINE.fullmatch(record[0])
    assert match is not None
    body = record[1:]

    # The real trailer is the last one: a name may carry a fake earlier one.
    trailer = device_count = None
    for index in range(len(body) - 1, -1, -1):
        found = _DEVICES_TOTAL.fullmatch(body[index])
        if found:
            trailer, device_count = index, int(found.group(1))
            break

    attached_header = None
    devices: List[bytes] = []
    if trailer is not None:
        header_guess = trailer - device_count - 1
        if header_guess >= 0 and body[header_guess] in _ATTACHED_HEADER:
            attached_header = header_guess
            devices = body[header_guess + 1:trailer]
    if attached_header is None:
        # Malformed or cut short: fall back to the first header and tab lines after it.
        limit = trailer if trailer is not None else len(body)
        for index in range(limit):
            if body[index] in _ATTACHED_HEADER:
                attached_header = index
                devices = [line for line in body[index + 1:limit] if line.startswith(b"\t")]
                break
    before_devices = body[:attached_header] if attached_header is not None else body

    name = match.group("name")
    has_name_column = name is not None
    continuation = 0
    if has_name_column:
        length = len(name)
        for line in before_devices:
            if _FENCE_LINE.match(line) or length + 1 + len(line) > MAX_NAME_BYTES:
                break
            length += 1 + len(line)
            continuation += 1
        name = b"\n".join([name] + before_devices[:continuation])
    fences = tuple(line.strip(b"\t") for line in before_devices[continuation:]
                   if _FENCE_LINE.match(line))

    inode = match.group("inode")
    return BufinfoBuffer(
        size=int(match.group("size")),
        flags=int(match.group("flags"), 16),
        mode=int(match.group("mode"), 16),
        count=int(match.group("count")),
        exporter=_decode_kernel_string(match.group("exporter")),
        inode=int(inode) if inode is not None else None,
        name=None if not has_name_column or name == UNNAMED_MARKER else name,
        devices=tuple(_decode_kernel_string(line.strip(b"\t")) for line in devices),
        fences=fences,
    )


def _debugfs_mounted(mountpoint: str = DEBUGFS_MOUNTPOINT) -> bool:
    try:
        with open("/proc/self/mounts", "rb") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[1] == mountpoint.encode() and fields[2] == b"debugfs":
                    return True
    except OSError:
        pass
    return False


def read_bufinfo(path: str = BUFINFO_PATH) -> Bufinfo:
    """Read and parse bufinfo; KernelLacks if it is absent, NeedsPrivilege if unreadable."""
    try:
        with open(path, "rb") as bufinfo:
            text = bufinfo.read()
    except (FileNotFoundError, NotADirectoryError):
        if path == BUFINFO_PATH and not _debugfs_mounted():
            raise KernelLacks(f"debugfs is not mounted at {DEBUGFS_MOUNTPOINT}, so {path} "
                              f"cannot be read; mount it with "
                              f"`mount -t debugfs debugfs {DEBUGFS_MOUNTPOINT}`") from None
        raise KernelLacks(f"{path} does not exist: this kernel has no dma-buf debugfs "
                          "(it needs CONFIG_DMA_SHARED_BUFFER and CONFIG_DEBUG_FS)") from None
    except PermissionError:
        raise NeedsPrivilege(f"cannot read {path}: debugfs is readable by root only; "
                             "run as root") from None
    except OSError as error:
        if error.errno == errno.EINTR:
            raise DmabufTopError(f"reading {path} was interrupted; try again") from None
        raise
    return parse_bufinfo(text)

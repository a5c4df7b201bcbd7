"""A ctypes client of the io_uring dma-buf uAPI proposed by "Add dmabuf read/write via io_uring" (v5, not merged).

It registers a dma-buf with a ring for one O_DIRECT block device and reads the device into the buffer with
IORING_OP_READ_FIXED, step by step, so that a kernel without the series answers with the step that refused and
its errno (issue 19: "absent with the reason"). Raw syscalls only: no liburing on these machines.

The uAPI, as the series' uapi diff and its liburing test use it (docs/research/io_uring-dmabuf-port.md):

    struct io_uring_rsrc_update2 { u32 offset; u32 flags /* was resv */; u64 data; u64 tags; u32 nr; u32 resv2; }
    IORING_RSRC_UPDATE_EXTENDED = 1 << 1 in flags: data points at io_uring_regbuf_desc[nr], not at iovec[nr]
    struct io_uring_regbuf_desc { u32 type; u32 flags; u64 size; u64 uaddr; s32 dmabuf_fd; s32 target_fd;
                                  u64 __resv[6]; }                         /* 80 bytes */
    type: IO_REGBUF_TYPE_EMPTY 0, IO_REGBUF_TYPE_UADDR 1, IO_REGBUF_TYPE_DMABUF 2

A READ_FIXED on the registered slot names the device as fd, the device offset as off and the offset *inside the
dma-buf* as addr (the buffer's base address is 0). The first I/O builds the device mapping and may answer
-EAGAIN: resubmit it unchanged.

A stock kernel (7.2 and every earlier one back to 5.13) refuses a non-zero resv in io_uring_rsrc_update2 with
EINVAL, so the EMPTY descriptor below tells the two apart without touching any buffer. Never send a DMABUF
descriptor without the EXTENDED flag: an old kernel would read it as an iovec.
"""
import argparse
import ctypes
import errno
import hashlib
import json
import mmap
import os
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script: find uring_read beside it
from uring_read import Ring  # noqa: E402  (tests/ is no package)

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf  # noqa: E402
from dmabuf_top.validate.uring import SYS_IO_URING_REGISTER  # noqa: E402

IORING_REGISTER_BUFFERS2 = 15
IORING_REGISTER_BUFFERS_UPDATE = 16
IORING_RSRC_REGISTER_SPARSE = 1 << 0
IORING_RSRC_UPDATE_EXTENDED = 1 << 1
IO_REGBUF_TYPE_EMPTY = 0
IO_REGBUF_TYPE_DMABUF = 2
IORING_OP_READ_FIXED = 4

RSRC_REGISTER = struct.Struct("<IIQQQ")   # nr, flags, resv2, data, tags
RSRC_UPDATE2 = struct.Struct("<IIQQII")   # offset, flags, data, tags, nr, resv2
REGBUF_DESC = struct.Struct("<IIQQii6Q")  # type, flags, size, uaddr, dmabuf_fd, target_fd, __resv[6]
assert (RSRC_REGISTER.size, RSRC_UPDATE2.size, REGBUF_DESC.size) == (32, 32, 80)

SLOT = 0
EAGAIN_RETRIES = 16
FILL = 0xA5  # the buffer's bytes before the read: a read that moved nothing cannot pass the checksum

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Why a step refused, by errno; anything else is reported with its strerror.
REASONS = {
    ("extended-update", errno.EINVAL): "io_uring refuses IORING_RSRC_UPDATE_EXTENDED (a non-zero resv in "
                                       "io_uring_rsrc_update2): this kernel lacks the io_uring dma-buf uAPI",
    ("register-dmabuf", errno.EOPNOTSUPP): "the target file has no dma-buf I/O support (no init_dma_buf_io_ctx "
                                           "file operation: not a raw block device)",
    ("register-dmabuf", errno.EINVAL): "the target refused the dma-buf: not opened O_DIRECT, its driver has no "
                                       "dma-buf support, or the buffer is over the series' size limit",
    ("register-dmabuf", errno.EBADF): "the dma-buf or the target descriptor is not usable",
}


@dataclass
class Answer:
    """What the kernel said: `present` only when a READ_FIXED landed the device's bytes in the dma-buf."""
    present: bool
    step: str
    errno: Optional[int] = None
    reason: str = ""
    bytes_read: int = 0
    sha256: Optional[str] = None

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)


def _refusal(step, code):
    reason = REASONS.get((step, code), os.strerror(code))
    return Answer(False, step, code, f"{step}: {errno.errorcode.get(code, code)}: {reason}")


def _register(ring, opcode, payload: bytes, nr_args):
    """io_uring_register(ring, opcode, payload, nr_args): the kernel's non-negative result, or -errno."""
    arg = ctypes.create_string_buffer(payload, len(payload))
    done = _libc.syscall(SYS_IO_URING_REGISTER, ring.fd, opcode, arg, nr_args)
    return done if done >= 0 else -ctypes.get_errno()


def register_sparse_table(ring, slots=1):
    return _register(ring, IORING_REGISTER_BUFFERS2,
                     RSRC_REGISTER.pack(slots, IORING_RSRC_REGISTER_SPARSE, 0, 0, 0), RSRC_REGISTER.size)


def update_extended(ring, slot, desc: bytes):
    """One descriptor into `slot` through the extended update: 1 when taken, else -errno."""
    holder = ctypes.create_string_buffer(desc, len(desc))  # alive until the syscall returns
    update = RSRC_UPDATE2.pack(slot, IORING_RSRC_UPDATE_EXTENDED, ctypes.addressof(holder), 0, 1, 0)
    return _register(ring, IORING_REGISTER_BUFFERS_UPDATE, update, RSRC_UPDATE2.size)


def empty_desc():
    return REGBUF_DESC.pack(IO_REGBUF_TYPE_EMPTY, 0, 0, 0, 0, 0, *([0] * 6))


def dmabuf_desc(dmabuf_fd, target_fd):
    return REGBUF_DESC.pack(IO_REGBUF_TYPE_DMABUF, 0, 0, 0, dmabuf_fd, target_fd, *([0] * 6))


def update_iovec(ring, slot, address, length):
    """The stock form of the same update: one iovec into `slot` (registers, or with a zero iovec empties, plain
    user memory). 1 when taken, else -errno."""
    holder = ctypes.create_string_buffer(struct.pack("<QQ", address, length), 16)
    update = RSRC_UPDATE2.pack(slot, 0, ctypes.addressof(holder), 0, 1, 0)
    return _register(ring, IORING_REGISTER_BUFFERS_UPDATE, update, RSRC_UPDATE2.size)


def uapi_answer(ring) -> Optional[Answer]:
    """None when the ring takes extended buffer updates (the series' uAPI), else why not."""
    done = register_sparse_table(ring)
    if done < 0:
        return _refusal("sparse-table", -done)
    done = update_extended(ring, SLOT, empty_desc())
    if done < 0:
        return _refusal("extended-update", -done)
    return None


def read_fixed(ring, target_fd, buffer_offset, length, device_offset):
    """One READ_FIXED from the device into the registered dma-buf, resubmitted while the kernel answers -EAGAIN
    (the first I/O builds the device mapping; an invalidation asks for the same)."""
    for _ in range(EAGAIN_RETRIES):
        res = ring.submit_and_wait(IORING_OP_READ_FIXED, target_fd, buffer_offset, length, device_offset, SLOT)
        if res != -errno.EAGAIN:
            return res
    return res


def direct_reference(target_fd, length, device_offset):
    """The same device range read with O_DIRECT pread into page-aligned anonymous memory: the expected bytes."""
    with mmap.mmap(-1, length) as aligned:
        got = os.preadv(target_fd, [aligned], device_offset)
        return bytes(aligned[:got])


def buffer_bytes(buffer, length):
    buffer.sync(start=True, read=True, write=False)
    try:
        with buffer.mmap(length, access=mmap.ACCESS_READ) as view:
            return bytes(view[:length])
    finally:
        buffer.sync(start=False, read=True, write=False)


def fill(buffer, length, value=FILL):
    buffer.sync(start=True, read=False, write=True)
    try:
        with buffer.mmap(length) as view:
            view[:length] = bytes([value]) * length
    finally:
        buffer.sync(start=False, read=False, write=True)


def probe(device, buffer, length=64 << 10, device_offset=0) -> Answer:
    """Register `buffer` (a dmabuf_top.alloc.DmaBuf) for `device` (a raw NVMe block device) and READ_FIXED
    `length` bytes at `device_offset` into its start. The device is opened read-only: nothing is written to it."""
    if length <= 0 or length > buffer.size or length % 4096 or device_offset % 4096:
        raise ValueError("length and device offset must be multiples of 4096, and the length fit the buffer")
    with Ring(4) as ring:
        refused = uapi_answer(ring)
        if refused:
            return refused
        target_fd = os.open(device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            done = update_extended(ring, SLOT, dmabuf_desc(buffer.fileno(), target_fd))
            if done < 0:
                return _refusal("register-dmabuf", -done)
            fill(buffer, length)
            res = read_fixed(ring, target_fd, 0, length, device_offset)
            if res < 0:
                return _refusal("read-fixed", -res)
            expected = direct_reference(target_fd, res, device_offset)
        finally:
            os.close(target_fd)
    landed = buffer_bytes(buffer, res)
    digest = hashlib.sha256(landed).hexdigest()
    if landed != expected:
        return Answer(False, "checksum", None, "the dma-buf does not hold the device's bytes after READ_FIXED",
                      res, digest)
    return Answer(True, "checksum", None, "", res, digest)


def probe_user_memory(device, length=64 << 10, device_offset=0) -> Answer:
    """The comparison row and the control: READ_FIXED from `device` into ordinary registered (pinned) memory,
    through the same ring code and slot. Works on any kernel since 5.1; when it fails, the client is at fault."""
    with Ring(4) as ring, mmap.mmap(-1, length) as memory:
        memory[:length] = bytes([FILL]) * length
        address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        target_fd = os.open(device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            done = register_sparse_table(ring)
            if done < 0:
                return _refusal("sparse-table", -done)
            done = update_iovec(ring, SLOT, address, length)
            if done < 0:
                return _refusal("register-memory", -done)
            res = read_fixed(ring, target_fd, address, length, device_offset)
            if res < 0:
                return _refusal("read-fixed", -res)
            expected = direct_reference(target_fd, res, device_offset)
            update_iovec(ring, SLOT, 0, 0)  # unpin before the mapping goes
        finally:
            os.close(target_fd)
        landed = bytes(memory[:res])
    digest = hashlib.sha256(landed).hexdigest()
    if landed != expected:
        return Answer(False, "checksum", None, "registered memory does not hold the device's bytes", res, digest)
    return Answer(True, "checksum", None, "", res, digest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device", help="a raw NVMe block device, e.g. /dev/nvme0n1 (only read)")
    parser.add_argument("--exporter", choices=("heap", "udmabuf"), default="udmabuf")
    parser.add_argument("--length", type=int, default=64 << 10)
    args = parser.parse_args(argv)
    allocate = alloc_heap if args.exporter == "heap" else alloc_udmabuf
    with allocate(max(args.length, 1 << 20)) as buffer:
        answer = probe(args.device, buffer, args.length)
    print(answer.to_json())
    return 0 if answer.present else 1


if __name__ == "__main__":
    sys.exit(main())

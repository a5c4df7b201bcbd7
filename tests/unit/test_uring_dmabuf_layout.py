"""The io_uring dma-buf client's structures, byte for byte against the series' uapi layout (no kernel needed)."""
import struct

import uring_dmabuf as client  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)
from uring_read import SQE_HEAD


def test_update2_puts_the_extended_flag_where_stock_kernels_keep_resv():
    packed = client.RSRC_UPDATE2.pack(7, client.IORING_RSRC_UPDATE_EXTENDED, 0x1122, 0, 1, 0)
    assert len(packed) == 32
    assert struct.unpack_from("<I", packed, 4)[0] == 2  # resv on 7.2, flags with the series
    assert struct.unpack_from("<Q", packed, 8)[0] == 0x1122
    assert struct.unpack_from("<I", packed, 24)[0] == 1


def test_dmabuf_descriptor_layout():
    packed = client.dmabuf_desc(5, 9)
    assert len(packed) == 80
    assert struct.unpack_from("<I", packed, 0)[0] == client.IO_REGBUF_TYPE_DMABUF == 2
    assert struct.unpack_from("<QQ", packed, 8) == (0, 0)  # size and uaddr must be 0 for a dma-buf
    assert struct.unpack_from("<ii", packed, 24) == (5, 9)
    assert packed[32:] == bytes(48)
    assert client.empty_desc() == bytes(80)


def test_read_fixed_sqe_carries_the_slot_at_byte_40():
    sqe = SQE_HEAD.pack(client.IORING_OP_READ_FIXED, 0, 0, 3, 4096, 8192, 65536, 0, 1, 0x0102)
    assert sqe[0] == 4
    assert struct.unpack_from("<iQQI", sqe, 4) == (3, 4096, 8192, 65536)  # fd, device offset, buffer offset, len
    assert struct.unpack_from("<H", sqe, 40)[0] == 0x0102


def test_refusals_name_the_step_and_the_errno():
    answer = client._refusal("extended-update", 22)
    assert not answer.present and answer.errno == 22
    assert answer.reason.startswith("extended-update: EINVAL: ")
    assert "lacks the io_uring dma-buf uAPI" in answer.reason
    assert client._refusal("read-fixed", 5).reason == "read-fixed: EIO: Input/output error"

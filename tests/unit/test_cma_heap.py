"""The CMA heap as an exporter of its own, without a kernel: its names, doctor's two heap lines, validate's CMA
methods and when they are absent, and what the DMA evidence needs to place frames on arm64."""
import gzip

from dmabuf_top import alloc, features, kernelfs
from dmabuf_top.probes import dma_evidence
from dmabuf_top.validate import methods


def test_the_cma_heap_is_found_by_its_names_old_and_new():
    assert alloc.cma_heap_name(["default_cma_region", "system"]) == "default_cma_region"  # 6.17+
    assert alloc.cma_heap_name(["reserved", "system"]) == "reserved"  # cma= before 6.17
    assert alloc.cma_heap_name(["linux,cma"]) == "linux,cma"  # a device tree's default pool
    assert alloc.cma_heap_name(["system"]) is None and alloc.cma_heap_name([]) is None


def test_doctor_says_the_system_and_cma_heaps_apart():
    both = features.heap_features(["default_cma_region", "system"])
    assert both["system_heap"].available and both["system_heap"].via == "/dev/dma_heap/system"
    assert both["cma_heap"].available and both["cma_heap"].via == "/dev/dma_heap/default_cma_region"
    x86_lab = features.heap_features(["system"])  # the x86 lab kernel: no CMA heap, said with the reason
    assert x86_lab["system_heap"].available and not x86_lab["cma_heap"].available
    assert "CONFIG_DMABUF_HEAPS_CMA" in x86_lab["cma_heap"].detail and "cma=" in x86_lab["cma_heap"].detail
    assert not any(f.available for f in features.heap_features([]).values())


class Report:
    def __init__(self, available):
        self._available = set(available)

    def available(self, name):
        return name in self._available


def test_cma_methods_exist_only_where_the_heap_does():
    cma = [m for m in methods.METHODS if m.buffer == "cma"]
    assert [m.name for m in cma] == ["cma-read", "cma-read-direct", "cma-bounce-memcpy-direct"]
    assert [m.direct for m in cma] == [False, True, True]
    no_cma = methods.KernelOffer(Report({"heaps", "system_heap", "udmabuf"}), symbols=set())
    assert "no CMA heap" in no_cma.missing(methods.BY_NAME["cma-read"])
    assert no_cma.missing(methods.BY_NAME["heap-read"]) is None
    with_cma = methods.KernelOffer(Report({"heaps", "cma_heap", "udmabuf"}), symbols=set())
    assert all(with_cma.missing(m) is None for m in cma)
    assert methods.BUFFERS["cma"] is methods.cma_buffer and "cma" in methods.DMABUF_KINDS


def test_kallsyms_address_finds_data_symbols_and_hidden_ones_are_none(tmp_path):
    table = tmp_path / "kallsyms"
    table.write_text("ffff800080010000 T _text\nffff8000812a3b40 r cma_heap_buf_ops\n0000000000000000 D hidden\n")
    assert kernelfs.kallsyms_address("cma_heap_buf_ops", table) == 0xFFFF8000812A3B40
    assert kernelfs.kallsyms_address("hidden", table) is None
    assert kernelfs.kallsyms_address("absent", table) is None
    assert kernelfs.kallsyms_address("x", tmp_path / "none") is None


def test_kernel_config_is_read_from_boot_or_proc_config_gz(tmp_path):
    boot = tmp_path / "config-7.2.13"
    packed = tmp_path / "config.gz"
    with gzip.open(packed, "wt") as out:
        out.write("CONFIG_ARM64_VA_BITS_48=y\nCONFIG_ARM64_VA_BITS=48\n")
    assert kernelfs.kernel_config_option("ARM64_VA_BITS", (boot, packed)) == "48"
    boot.write_text("CONFIG_ARM64_VA_BITS=39\n")  # a distribution's /boot/config-* comes first
    assert kernelfs.kernel_config_option("ARM64_VA_BITS", (tmp_path / "config-x", boot, packed)) == "39"
    assert kernelfs.kernel_config_option("UDMABUF", (boot,)) is None


def test_arm64_hands_the_evidence_its_va_size_and_x86_nothing(monkeypatch):
    monkeypatch.setattr(dma_evidence.platform, "machine", lambda: "x86_64")
    assert dma_evidence.page_arithmetic() == {}
    monkeypatch.setattr(dma_evidence.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(dma_evidence, "kernel_config_option", lambda name: {"ARM64_VA_BITS": "48"}.get(name))
    assert dma_evidence.page_arithmetic() == {"arm64_va_bits": 48}
    monkeypatch.setattr(dma_evidence, "kernel_config_option", lambda name: None)
    assert dma_evidence.page_arithmetic() == {"arm64_va_bits": 0}  # not known: frames stay unknown, bytes unplaced


def test_both_evidence_objects_carry_the_globals_set_from_python():
    for machine in ("x86_64", "aarch64"):
        data = dma_evidence.object_path("dma_evidence", machine).read_bytes()
        for name in (b"arm64_va_bits", b"cma_heap_ops", b"frames_of_inode", b"cma_heap_buffer___dma_evidence"):
            assert name in data, (machine, name)

"""Binding behaviour that needs no privileges: library and object errors are one clear sentence."""
import pytest

from dmabuf_top import bpf
from dmabuf_top.errors import BpfError, MissingDependency


def test_missing_libbpf_says_what_to_install():
    with pytest.raises(MissingDependency, match="apt-get install libbpf1"):
        bpf.libbpf("libbpf-that-does-not-exist.so.9")


def test_library_is_libbpf_1_or_newer():
    major, _minor = bpf.libbpf_version().split(".")
    assert int(major) >= 1


def test_missing_object_file_says_how_to_build(tmp_path):
    with pytest.raises(BpfError, match="make bpf"):
        bpf.BpfObject(tmp_path / "nothing.bpf.o")


def test_garbage_object_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.bpf.o"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(BpfError, match="could not open"):
        bpf.BpfObject(bogus)


def test_open_lists_programs_and_maps_without_privileges():
    from dmabuf_top.probes import object_path

    with bpf.BpfObject(object_path("feature_probe")) as obj:
        assert "trial_round_trip" in obj.programs
        assert "trial_counts" in obj.maps
        with pytest.raises(BpfError, match="has no program 'nope'"):
            obj.program("nope")
        with pytest.raises(BpfError, match="has no read-only global 'nope'"):
            obj.set_rodata(nope=1)


def test_rodata_layout_comes_from_the_objects_btf():
    from dmabuf_top.probes import object_path

    with bpf.BpfObject(object_path("feature_probe")) as obj:
        offset, size = obj._rodata_layout()["trial_target_tgid"]
        assert size == 4

"""Kernel-filesystem facts without a kernel: kallsyms parsing and lookup, magics, device numbers."""
import os

from dmabuf_top import kernelfs


def test_kallsyms_names_every_symbol_and_resolves_text_addresses(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text("ffffffff81001000 T vfs_read\nffffffff81002000 t filemap_read\n"
                    "ffffffff82000000 D some_data\nffffffff81003000 T ksys_read\tsomemodule\n")
    syms = kernelfs.Kallsyms.from_file(path)
    assert {"vfs_read", "filemap_read", "some_data", "ksys_read"} <= syms.names and "some_data" in syms
    assert syms.name(0xffffffff81002010) == "filemap_read" and syms.name(0xfff) == "0xfff"
    assert syms.name(0xffffffff82000010) == "ksys_read"  # data symbols are names, not functions to resolve to


def test_hidden_addresses_resolve_to_nothing_and_a_missing_file_to_an_empty_table(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text("0000000000000000 T vfs_read\n")
    assert kernelfs.Kallsyms.from_file(path).name(0x1234) == "0x1234"
    empty = kernelfs.Kallsyms.from_file(tmp_path / "absent")
    assert not empty.names and empty.name(0x10) == "0x10"


def test_magics_and_device_numbers():
    assert kernelfs.filesystem_name(0xEF53) == "ext4" and kernelfs.filesystem_name(0x01021994) == "tmpfs"
    assert kernelfs.filesystem_name(0x1234) == "0x1234"
    assert kernelfs.kernel_dev_to_user((259 << 20) | 1) == os.makedev(259, 1)


def test_cgroups_are_known_by_proc_self_cgroup(tmp_path):
    """Without CONFIG_CGROUPS (the patched lab kernel) /proc/PID/cgroup is absent, and so is the BPF helper
    bpf_get_current_cgroup_id for tracing programs: the lifecycle probe must not call it there."""
    assert not kernelfs.has_cgroups(tmp_path)
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text("0::/\n")
    assert kernelfs.has_cgroups(tmp_path)

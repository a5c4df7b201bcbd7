"""The BPF object loaded is the one built for the machine's architecture."""
import pytest

from dmabuf_top.errors import BpfError
from dmabuf_top.probes import bpf_arch, object_path


@pytest.mark.parametrize("machine, arch", [("x86_64", "x86"), ("aarch64", "arm64"), ("arm64", "arm64")])
def test_machine_names_map_to_the_kernel_arch_names(machine, arch):
    assert bpf_arch(machine) == arch


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_object_path_picks_the_machine_object(machine):
    assert object_path("iopaths", machine).name == f"iopaths.{bpf_arch(machine)}.bpf.o"


def test_an_unknown_machine_says_which_are_built():
    with pytest.raises(BpfError, match="no BPF objects for riscv64"):
        bpf_arch("riscv64")


def test_arm64_objects_carry_the_arm64_syscall_numbers():
    """The arm64 build took the arm64 branch of iopaths.bpf.c (a sign the -D reached it): its BTF names
    the arm64 register flavour, the x86 build's the x86 one."""
    arm64 = object_path("iopaths", "aarch64").read_bytes()
    x86 = object_path("iopaths", "x86_64").read_bytes()
    assert b"pt_regs___dmabuf_top_arm64" in arm64 and b"pt_regs___dmabuf_top_x86" not in arm64
    assert b"pt_regs___dmabuf_top_x86" in x86 and b"pt_regs___dmabuf_top_arm64" not in x86

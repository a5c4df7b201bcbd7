"""The lab's qemu and virtiofsd command lines, kernel feature reports and the vm command's environment."""
import time
from pathlib import Path

import pytest

from dmabuf_top.commands.vm import guest_environment
from dmabuf_top.errors import DmabufTopError, KernelLacks, MissingDependency
from dmabuf_top.kernel import kconfig, lab


def plan(tmp_path, **overrides):
    values = dict(kernel=Path("/k/vmlinuz"), initrd=tmp_path / "initrd", workdir=tmp_path,
                  root_socket=tmp_path / "root.sock")
    values.update(overrides)
    return lab.QemuPlan(**values)


def option_values(args, option):
    return [args[i + 1] for i, arg in enumerate(args) if arg == option]


def test_tcg_boot_shares_memory_and_never_reboots(tmp_path):
    args = lab.qemu_args("qemu", plan(tmp_path, memory_mb=512, cpus=3))
    assert option_values(args, "-accel") == ["tcg,thread=single"]  # multi-threaded TCG crashed on text patching
    assert option_values(args, "-cpu") == ["max"]
    assert option_values(args, "-smp") == ["3"] and option_values(args, "-m") == ["512M"]
    assert "memory-backend-memfd,id=mem,size=512M,share=on" in option_values(args, "-object")
    assert "pc,memory-backend=mem" in option_values(args, "-machine")
    assert "-no-reboot" in args
    assert option_values(args, "-kernel") == ["/k/vmlinuz"]
    append = option_values(args, "-append")[0]
    assert "console=ttyS0" in append and "panic=-1" in append
    # A starved TCG vCPU must not fail the boot-time timer check (kernel panic "IO-APIC + timer doesn't work!").
    assert "no_timer_check" in append.split()


def test_kvm_uses_host_cpu(tmp_path):
    args = lab.qemu_args("qemu", plan(tmp_path, accel="kvm"))
    assert option_values(args, "-accel") == ["kvm"] and option_values(args, "-cpu") == ["host"]


def test_icount_counts_instructions_on_single_threaded_tcg(tmp_path):
    assert "-icount" not in lab.qemu_args("qemu", plan(tmp_path))
    args = lab.qemu_args("qemu", plan(tmp_path, icount=True, cpus=1))
    assert option_values(args, "-icount") == ["shift=0,align=off,sleep=on"]
    assert option_values(args, "-accel") == ["tcg,thread=single"] and option_values(args, "-smp") == ["1"]
    with pytest.raises(DmabufTopError, match="needs TCG"):
        lab.qemu_args("qemu", plan(tmp_path, icount=True, accel="kvm"))


def test_icount_means_one_vcpu_unless_asked():
    assert lab.guest_cpus(None, icount=True) == 1
    assert lab.guest_cpus(3, icount=True) == 3
    assert lab.guest_cpus(None, icount=False) == lab.DEFAULT_CPUS


def test_output_and_status_ports_are_apart_from_the_console(tmp_path):
    args = lab.qemu_args("qemu", plan(tmp_path))
    chardevs = option_values(args, "-chardev")
    assert f"file,id=console,path={tmp_path / 'console.log'}" in chardevs
    assert f"file,id=output,path={tmp_path / 'output.log'}" in chardevs
    assert f"file,id=status,path={tmp_path / 'status'}" in chardevs
    devices = option_values(args, "-device")
    assert any("name=dmabuf-top.output" in d for d in devices)
    assert any("name=dmabuf-top.status" in d for d in devices)


def test_shares_and_scratch_disk_appear_only_when_asked(tmp_path):
    bare = lab.qemu_args("qemu", plan(tmp_path))
    assert sum("vhost-user-fs-pci" in d for d in option_values(bare, "-device")) == 1
    assert "-drive" not in bare
    full = lab.qemu_args("qemu", plan(tmp_path, results_socket=tmp_path / "r.sock",
                                       scratch_image=tmp_path / "s.img"))
    devices = option_values(full, "-device")
    assert any("tag=dmabuf-top-results" in d for d in devices)
    assert "nvme,serial=scratch0,drive=scratch" in devices
    assert option_values(full, "-drive") == [f"file={tmp_path / 's.img'},if=none,id=scratch,format=raw,cache=none"]
    buffered = lab.qemu_args("qemu", plan(tmp_path, scratch_image=tmp_path / "s.img", scratch_direct=False))
    assert option_values(buffered, "-drive")[0].endswith("cache=writeback")


@pytest.mark.parametrize("dialect,expected", [
    ("c", ["-o", "source=/srv", "-o", "cache=always", "-o", "sandbox=chroot"]),
    ("rust", ["--shared-dir=/srv", "--cache=always", "--sandbox=chroot"]),
])
def test_virtiofsd_dialects(dialect, expected):
    args = lab.virtiofsd_args("virtiofsd", Path("/run/s.sock"), Path("/srv"), dialect)
    assert args[1] == "--socket-path=/run/s.sock"
    for item in expected:
        assert item in args


def test_accel_can_be_forced(monkeypatch):
    monkeypatch.setenv("DMABUF_TOP_ACCEL", "tcg")
    assert lab.choose_accel() == "tcg"
    monkeypatch.setenv("DMABUF_TOP_ACCEL", "KVM")
    assert lab.choose_accel() == "kvm"
    monkeypatch.setenv("DMABUF_TOP_ACCEL", "hvf")
    with pytest.raises(DmabufTopError, match="kvm or tcg"):
        lab.choose_accel()


def test_missing_qemu_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependency, match=r"apt-get install qemu-system-x86"):
        lab.run_in_guest(["true"])


def test_status_parsing_and_failure_messages():
    assert lab._parse_status("exit=0\n") == 0
    assert lab._parse_status("exit=127\n") == 127
    assert lab._parse_status("") is None
    assert "could not set up: mount x failed" in lab._failure_message("init-error=mount x failed\n", "", "", 0)
    panic = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert "Kernel panic" in lab._failure_message("", panic, "", 0)


def test_kvm_failure_is_recognised():
    assert lab.looks_like_kvm_failure("qemu: error: failed to set MSR 0x10a to 0x0")
    assert not lab.looks_like_kvm_failure("")


# What qemu printed on a paravirtual (PVM) /dev/kvm that cannot emulate an instruction of the guest's
# boot: it then pauses the guest and stays alive, so nothing but the log says KVM failed.
KVM_STALL_LOG = """KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000001
emulation failure
RAX=000000000c692990 RBX=0000000004bdbb64 RCX=000000000c692990 RDX=0000000000000005
"""


@pytest.fixture
def stalled_qemu(tmp_path):
    """A 'qemu' that stays alive with KVM_STALL_LOG in its log: (plan for an accel, the process, Daemons)."""
    started = []

    def start(accel):
        lab_plan = plan(tmp_path, accel=accel)
        for log in (lab_plan.console_log, lab_plan.output_log, lab_plan.status_file):
            log.touch()
        (tmp_path / "qemu.log").write_text(KVM_STALL_LOG)
        daemons = lab.Daemons()
        started.append(daemons)
        return lab_plan, daemons.start(["sleep", "60"], tmp_path / "sleep.log"), daemons

    yield start
    for daemons in started:
        daemons.stop()


def test_a_kvm_guest_that_stalls_alive_is_given_up_at_once(stalled_qemu):
    lab_plan, alive, daemons = stalled_qemu("kvm")
    started = time.monotonic()
    with pytest.raises(lab.KvmUnusable, match="KVM internal error"):
        lab._wait(alive, lab_plan, 30.0, None, started, daemons)
    assert time.monotonic() - started < 10  # not the 30 s timeout
    assert alive.poll() is not None  # qemu was stopped


def test_a_tcg_guest_is_not_judged_by_kvm_words_in_its_log(stalled_qemu):
    lab_plan, alive, daemons = stalled_qemu("tcg")
    with pytest.raises(lab.GuestTimeout):
        lab._wait(alive, lab_plan, 1.0, None, time.monotonic(), daemons)


def test_kvm_found_unusable_is_remembered_for_this_boot_of_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "KVM_UNUSABLE_MARK", tmp_path / "kvm-unusable")
    monkeypatch.setattr(lab, "_KVM_BROKEN_THIS_PROCESS", False)
    monkeypatch.delenv("DMABUF_TOP_ACCEL", raising=False)
    monkeypatch.setattr(lab, "kvm_usable", lambda: True)
    assert lab.choose_accel() == "kvm"
    lab._mark_kvm_broken("KVM internal error. Suberror: 1")
    monkeypatch.setattr(lab, "_KVM_BROKEN_THIS_PROCESS", False)  # a later process
    assert lab.choose_accel() == "tcg"
    (tmp_path / "kvm-unusable").write_text("another-boot-id\nKVM internal error\n")  # after a reboot: try again
    assert lab.choose_accel() == "kvm"


CONFIG_TEXT = """\
CONFIG_DMABUF_HEAPS=y
CONFIG_DMABUF_HEAPS_SYSTEM=y
CONFIG_UDMABUF=m
# CONFIG_KPROBES is not set
CONFIG_LOCALVERSION="-lab"
"""


def test_kconfig_report_names_what_is_missing_and_why(tmp_path):
    config = tmp_path / "config"
    config.write_text(CONFIG_TEXT)
    assert kconfig.read_kconfig(config)["LOCALVERSION"] == "-lab"
    report = kconfig.check_features(config, ["DMABUF_HEAPS_SYSTEM", "CONFIG_UDMABUF", "KPROBES"])
    assert report.present == ["DMABUF_HEAPS_SYSTEM"] and not report.ok
    text = report.describe()
    assert "CONFIG_UDMABUF" in text and "module" in text and "CONFIG_KPROBES" in text and "not set" in text
    with pytest.raises(KernelLacks, match="CONFIG_KPROBES"):
        kconfig.require_features(config, ["KPROBES"])
    assert kconfig.require_features(config, ["DMABUF_HEAPS"]).ok


def test_kconfig_unknown_without_config():
    report = kconfig.check_features(None)
    assert not report.ok and "unknown" in report.describe()


def test_kernel_config_found_beside_image_and_in_build_tree(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vmlinuz").write_bytes(b"")
    (tmp_path / "cache" / "config").write_text("")
    assert kconfig.find_kernel_config(tmp_path / "cache" / "vmlinuz") == tmp_path / "cache" / "config"
    boot = tmp_path / "linux" / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    (boot / "bzImage").write_bytes(b"")
    (tmp_path / "linux" / ".config").write_text("")
    assert kconfig.find_kernel_config(boot / "bzImage") == tmp_path / "linux" / ".config"


def test_vm_command_environment():
    host = {"PATH": "/venv/bin:/usr/bin", "SECRET": "s", "FOO": "bar"}
    env = guest_environment(host, ["FOO", "X=1=2"])
    assert env == {"PATH": "/venv/bin:/usr/bin", "FOO": "bar", "X": "1=2"}
    with pytest.raises(DmabufTopError, match="-e NOPE"):
        guest_environment(host, ["NOPE"])


def test_cwd_the_guest_cannot_see_is_refused_early():
    lab._check_cwd_visible(Path("/work/main"), None)
    lab._check_cwd_visible(Path("/tmp/results/sub"), "/tmp/results")
    lab._check_cwd_visible(Path("/tmp/project"), "/tmp/results")  # carried through the guest's /tmp
    with pytest.raises(DmabufTopError, match="/proc is the guest's own"):
        lab._check_cwd_visible(Path("/proc/self"), None)
    with pytest.raises(DmabufTopError, match="/sys is the guest's own"):
        lab._check_cwd_visible(Path("/sys/kernel"), None)


def test_working_directory_under_a_guest_tmpfs_is_kept():
    from dmabuf_top.kernel.initramfs import GuestJob

    assert GuestJob(["true"], cwd="/tmp/ci").kept_path == "/tmp/ci"
    assert GuestJob(["true"], cwd="/run/user/0/x").kept_path == "/run/user/0/x"
    assert GuestJob(["true"], cwd="/root/.cache/x", home="/root").kept_path == "/root/.cache/x"
    assert GuestJob(["true"], cwd="/work/main").kept_path == ""
    assert GuestJob(["true"], cwd="/tmp").kept_path == ""  # /tmp itself: nothing of the host's to keep
    assert "LAB_KEEP_PATH=/tmp/ci" in GuestJob(["true"], cwd="/tmp/ci").lab_env()


def test_a_panic_before_the_command_started_is_told_apart():
    from dmabuf_top.kernel.lab import panicked_before_command

    panic = "[    1.095121] Kernel panic - not syncing: Fatal exception in interrupt\n"
    # Booting: init never reported "started", so none of the command ran and booting again is safe.
    assert panicked_before_command("", panic)
    # The command was running: its side effects may have happened, so this is reported, never retried.
    assert not panicked_before_command("started\n", panic)
    assert not panicked_before_command("started\nexit=0\n", "")
    # No oops at all (init's own error, a timeout): not a kernel failure.
    assert not panicked_before_command("init-error=scratch disk did not appear\n", "[ 0.5] ok\n")


def test_init_reports_started_right_before_the_command():
    init = (Path(__file__).resolve().parents[2] / "kernel" / "init.sh").read_text()
    started, command = init.index('report "started"'), init.index("/run/dmabuf-top/command.sh \\")
    assert started < command
    between = init[started:command]
    assert "need_mount" not in between and "fail " not in between and "wait_for" not in between

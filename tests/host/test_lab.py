"""The kernel lab for real: boots of Debian's cloud kernel under QEMU on this machine's root.

Boots are slow (3-5 s each under TCG), so one boot checks everything a
successful run promises and the others each test one way of ending.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmabuf_top.errors import DmabufTopError, MissingDependency
from dmabuf_top.kernel import fetch, lab
from dmabuf_top.kernel.arch import host_arch

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab_kernel():
    qemu = host_arch().qemu
    if shutil.which(qemu) is None:
        pytest.skip(f"{qemu} is not installed (apt-get install {host_arch().qemu_package})")
    try:
        return fetch.fetch_kernel()
    except DmabufTopError as error:
        pytest.skip(f"no lab kernel: {error}")


GUEST_CHECKS = textwrap.dedent("""\
    echo "release $(uname -r)"
    echo "cwd $PWD"
    echo "passed $LAB_TEST_VALUE"
    echo "to stderr" >&2
    echo "written in the guest" > "$RESULTS/from-guest.txt"
    echo "scratch $(awk '$2 == "/mnt/scratch" {print $3}' /proc/mounts)"
    dd if=/dev/zero of=/mnt/scratch/direct bs=1M count=8 oflag=direct status=none && echo "odirect-write ok"
    dd if=/mnt/scratch/direct of=/dev/null bs=1M iflag=direct status=none && echo "odirect-read ok"
    touch /usr/lab-must-not-write 2>/dev/null || echo "root read-only"
    for path in /dev/dma_heap/system /dev/udmabuf /sys/kernel/btf/vmlinux \\
                /sys/kernel/debug/dma_buf/bufinfo /sys/kernel/tracing/events/dma_buf /sys/fs/bpf; do
        [ -e "$path" ] && echo "present $path"
    done
    python3 -c 'import sys; print("python", sys.dont_write_bytecode)'
    exit 3
""")


@pytest.fixture(scope="module")
def full_run(lab_kernel, tmp_path_factory):
    # Under /tmp, which is a tmpfs in the guest: the share's mount point must be made there.
    results = Path(tmp_path_factory.mktemp("lab-results"))
    result = lab.run_in_guest(
        ["sh", "-c", GUEST_CHECKS],
        kernel=lab_kernel.vmlinuz,
        timeout=120,
        results_dir=results,
        scratch_mb=256,
        env={"LAB_TEST_VALUE": "it's here", "RESULTS": str(results)},
        cwd=REPO,
    )
    return result, results


def test_exit_code_comes_back_exactly(full_run):
    result, _ = full_run
    assert result.exit_code == 3, result.output + result.console


def test_output_is_the_commands_own(full_run, lab_kernel):
    result, _ = full_run
    lines = result.output.splitlines()
    assert f"release {lab_kernel.release}" in lines
    assert f"cwd {REPO}" in lines
    assert "passed it's here" in lines
    assert "to stderr" in lines
    assert "python True" in lines
    # Kernel messages stay in the console log.
    assert "reboot" not in result.output.lower()
    assert result.kernel_release == lab_kernel.release and result.duration > 0


def test_results_written_in_guest_are_on_host(full_run):
    _, results = full_run
    assert (results / "from-guest.txt").read_text() == "written in the guest\n"


def test_scratch_disk_is_ext4_and_takes_o_direct(full_run):
    lines = full_run[0].output.splitlines()
    assert "scratch ext4" in lines
    assert "odirect-write ok" in lines and "odirect-read ok" in lines


def test_host_root_is_read_only(full_run):
    assert "root read-only" in full_run[0].output.splitlines()
    assert not Path("/usr/lab-must-not-write").exists()


@pytest.mark.parametrize("path", [
    "/dev/dma_heap/system", "/dev/udmabuf", "/sys/kernel/btf/vmlinux",
    "/sys/kernel/debug/dma_buf/bufinfo", "/sys/kernel/tracing/events/dma_buf", "/sys/fs/bpf",
])
def test_guest_has_dma_buf_devices_and_tracing(full_run, path):
    assert f"present {path}" in full_run[0].output.splitlines()


def test_cli_runs_true_and_exits_zero(lab_kernel):
    # The whole path a user takes: console script module, default kernel, exit code.
    done = subprocess.run(
        [sys.executable, "-m", "dmabuf_top", "vm", "--kernel", str(lab_kernel.vmlinuz), "--scratch", "0",
         "--timeout", "120", "--", "true"],
        capture_output=True, text=True, cwd=REPO, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_missing_command_is_127(lab_kernel):
    result = lab.run_in_guest(["no-such-command-for-the-lab"], kernel=lab_kernel.vmlinuz, scratch_mb=0, timeout=120)
    assert result.exit_code == 127
    assert "no-such-command-for-the-lab: command not found" in result.output


def test_timeout_stops_qemu_and_virtiofsd(lab_kernel, monkeypatch):
    started = []
    original_start = lab.Daemons.start

    def recording_start(self, args, log):
        process = original_start(self, args, log)
        started.append(process)
        return process

    monkeypatch.setattr(lab.Daemons, "start", recording_start)
    with pytest.raises(lab.GuestTimeout, match="did not finish within 8 s"):
        lab.run_in_guest(["sleep", "600"], kernel=lab_kernel.vmlinuz, scratch_mb=0, timeout=8)
    names = {Path(p.args[0]).name for p in started}
    assert host_arch().qemu in names and "virtiofsd" in names
    for process in started:
        assert process.returncode is not None, f"{process.args[0]} still running"
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)


def test_missing_qemu_is_one_clear_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "dmabuf_top", "vm", "--", "true"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == MissingDependency.exit_code
    assert done.stderr.strip().count("\n") == 0
    assert "apt-get install qemu-system-x86" in done.stderr
    assert "Traceback" not in done.stderr


def test_working_directory_under_tmp_is_visible(lab_kernel, tmp_path):
    # CI checkouts may live under /tmp, which the guest covers with its own tmpfs.
    (tmp_path / "marker.txt").write_text("seen from the guest\n")
    script = "cat marker.txt && touch /tmp/guest-scratch && echo tmp-writable && pwd"
    result = lab.run_in_guest(["sh", "-c", script], kernel=lab_kernel.vmlinuz, scratch_mb=0, cwd=tmp_path, timeout=120)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["seen from the guest", "tmp-writable", str(tmp_path)]


def test_a_kernel_panic_while_booting_boots_once_more_then_says_so(lab_kernel, capfd):
    # rdinit pointing nowhere makes the kernel panic before init, so before the command: the lab boots a
    # second time (nothing of the command ran), and when that fails too it reports the panic as it is.
    with pytest.raises(lab.GuestFailed) as failed:
        lab.run_in_guest(["true"], kernel=lab_kernel.vmlinuz, scratch_mb=0, timeout=120, append="rdinit=/no-such-init")
    assert "Kernel panic" in str(failed.value)
    said = [line for line in capfd.readouterr().err.splitlines() if "booting once more" in line]
    assert len(said) == 1 and "before the command started" in said[0], said
    kept = Path(said[0].split("console kept in ")[1].split(")")[0])
    assert "Kernel panic" in kept.read_text()


def test_icount_gives_the_same_instruction_count_in_two_boots(lab_kernel, tmp_path):
    # Under the instruction-counting clock one guest ns is one guest instruction, whatever this host's
    # load: a getppid loop timing itself by its thread's CPU clock must give the same per-call figure in
    # two separate boots (minimum of several rounds: the first ones after a boot can be disturbed).
    compiler = shutil.which("gcc") or pytest.skip("gcc is not installed")
    program = tmp_path / "syscall_cost"  # the results share: the guest sees it at the same path
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(program), str(REPO / "benchmarks" / "syscall_cost.c")],
                   check=True)
    figures = []
    for _ in range(2):
        result = lab.run_in_guest([str(program), "7", "100000"], kernel=lab_kernel.vmlinuz, scratch_mb=0,
                                  results_dir=tmp_path, timeout=600, icount=True)
        assert result.exit_code == 0 and result.accel == "tcg", result.output
        minimum = [line for line in result.output.splitlines() if line.startswith("min ")]
        assert len(minimum) == 1, result.output
        figures.append(float(minimum[0].split()[1]))
    print(f"icount getppid, ns (= guest instructions) per call, two boots: {figures[0]:.1f} / {figures[1]:.1f}")
    assert 100 < figures[0] < 10_000  # instructions per syscall, not host nanoseconds or zero
    assert abs(figures[0] - figures[1]) <= 0.005 * min(figures), figures

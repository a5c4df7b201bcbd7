"""The lab's initramfs, built without root and read back with the cpio format's own rules."""
import gzip
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dmabuf_top.errors import DmabufTopError
from dmabuf_top.kernel import initramfs


def parse_newc(data):
    """{name: (mode, body, (rdevmajor, rdevminor))} of an uncompressed newc archive."""
    entries = {}
    offset = 0
    while True:
        assert data[offset:offset + 6] == b"070701", f"bad magic at {offset}"
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdevmajor, rdevminor, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body_start = (name_start + namesize + 3) & ~3
        body = data[body_start:body_start + filesize]
        offset = (body_start + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return entries, offset
        entries[name] = (mode, body, (rdevmajor, rdevminor))


@pytest.fixture
def fake_busybox(tmp_path):
    path = tmp_path / "busybox"
    path.write_bytes(b"\x7fELF-not-really")
    return path


def test_base_archive_has_init_busybox_and_console(fake_busybox):
    entries, _ = parse_newc(initramfs.base_archive(fake_busybox, b"#!/bin/busybox sh\n"))
    init_mode, init_body, _ = entries["init"]
    assert stat.S_ISREG(init_mode) and init_mode & 0o111
    assert init_body == b"#!/bin/busybox sh\n"
    assert entries["bin/busybox"][1] == fake_busybox.read_bytes()
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    console_mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(console_mode) and rdev == (5, 1)
    for directory in ("proc", "sys", "dev", "newroot"):
        assert stat.S_ISDIR(entries[directory][0])


def test_archive_is_readable_by_cpio_tool(tmp_path, fake_busybox):
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed")
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=initramfs.base_archive(fake_busybox, b"x"),
                             capture_output=True, check=True).stdout.decode().split()
    assert {"init", "bin/busybox", "dev/console"} <= set(listing)


def test_shipped_init_script_does_what_the_lab_promises():
    script = initramfs.init_script().decode()
    assert script.startswith("#!/bin/busybox sh")
    assert "-o ro" in script and "virtiofs" in script
    for mount in ("debugfs", "tracefs", "bpf", "/mnt/scratch", "/tmp", "/run"):
        assert mount in script
    assert "chroot" in script and "poweroff -f" in script


def test_base_image_is_cached_by_content(tmp_path, fake_busybox):
    first = initramfs.build_base_initramfs(cache_dir=tmp_path, busybox=fake_busybox)
    again = initramfs.build_base_initramfs(cache_dir=tmp_path, busybox=fake_busybox)
    assert first == again and first.parent == tmp_path / "initramfs"
    entries, _ = parse_newc(gzip.decompress(first.read_bytes()))
    assert "init" in entries
    fake_busybox.write_bytes(b"\x7fELF-another-build")
    assert initramfs.build_base_initramfs(cache_dir=tmp_path, busybox=fake_busybox) != first


def test_initrd_is_base_then_aligned_job_archive(tmp_path, fake_busybox):
    base = initramfs.build_base_initramfs(cache_dir=tmp_path, busybox=fake_busybox)
    job = initramfs.GuestJob(argv=["true"])
    initrd = initramfs.write_initrd(base, job, tmp_path / "initrd").read_bytes()
    base_size = base.stat().st_size
    assert initrd[:base_size] == base.read_bytes()
    job_start = initrd.index(b"070701", base_size)
    assert job_start % 4 == 0 and set(initrd[base_size:job_start]) <= {0}
    entries, _ = parse_newc(initrd[job_start:])
    assert set(entries) == {"job", "job/lab.env", "job/command.sh"}


def run_script(script, tmp_path):
    path = tmp_path / "command.sh"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


def test_command_script_quotes_arguments_and_environment(tmp_path):
    job = initramfs.GuestJob(
        argv=["sh", "-c", 'printf "%s|%s|%s" "$1" "$WEIRD" "$PWD"', "arg0", "two words; $(rm -rf /)"],
        cwd=str(tmp_path),
        env={"WEIRD": "it's \"quoted\"\nand multi-line"},
    )
    result = run_script(job.command_script(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"two words; $(rm -rf /)|it's \"quoted\"\nand multi-line|{tmp_path}"


def test_command_script_exit_codes(tmp_path):
    assert run_script(initramfs.GuestJob(argv=["sh", "-c", "exit 3"]).command_script(), tmp_path).returncode == 3
    missing = run_script(initramfs.GuestJob(argv=["no-such-program-xyz"]).command_script(), tmp_path)
    assert missing.returncode == 127
    assert "no-such-program-xyz: command not found" in missing.stderr
    no_dir = run_script(initramfs.GuestJob(argv=["true"], cwd=str(tmp_path / "absent")).command_script(), tmp_path)
    assert no_dir.returncode == 126 and "cannot enter" in no_dir.stderr


def test_lab_env_names_shares_and_scratch():
    with_results = initramfs.GuestJob(argv=["true"], results_path="/work/out dir", scratch=True).lab_env()
    assert "LAB_RESULTS_TAG=dmabuf-top-results" in with_results
    assert "LAB_RESULTS_PATH='/work/out dir'" in with_results
    assert "LAB_SCRATCH=1" in with_results
    without = initramfs.GuestJob(argv=["true"]).lab_env()
    assert "LAB_RESULTS_TAG=''" in without and "LAB_SCRATCH=0" in without


def test_bad_environment_name_and_empty_command_are_user_errors():
    with pytest.raises(DmabufTopError, match="not a valid environment variable"):
        initramfs.GuestJob(argv=["true"], env={"A-B": "1"}).command_script()
    with pytest.raises(DmabufTopError, match="no command"):
        initramfs.GuestJob(argv=[]).command_script()


def test_static_elf_detection(tmp_path):
    # The interpreter running this test is dynamically linked on every distro we know.
    assert initramfs.is_static_elf(Path(sys.executable).resolve()) is False
    text = tmp_path / "script"
    text.write_text("#!/bin/sh\n")
    assert initramfs.is_static_elf(text) is False
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    if shutil.which("file") and "static" in subprocess.run(["file", "-L", busybox], capture_output=True,
                                                           text=True).stdout:
        assert initramfs.is_static_elf(Path(busybox).resolve()) is True

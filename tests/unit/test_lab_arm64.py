"""The arm64 lab without booting: sources and apt for arm64, the kernel image, qemu's command line, the guest
root's dependency resolution, pip's cross install and the import hook that runs the host's checkout."""
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmabuf_top.commands.vm import guest_environment
from dmabuf_top.errors import DmabufTopError
from dmabuf_top.kernel import arch, fetch, lab, userland

# The shape of Debian's /etc/apt/sources.list.d/debian.sources (host name made up).
SAMPLE_SOURCES = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_arm64_source_stanza_asks_for_arm64_packages():
    stanza = fetch.derive_apt_source(SAMPLE_SOURCES, architecture="arm64")
    assert "Architectures: arm64\n" in stanza and "URIs: http://mirror.example/debian\n" in stanza
    assert "Architectures" not in fetch.derive_apt_source(SAMPLE_SOURCES)


def test_private_apt_for_arm64_resolves_arm64_only(tmp_path):
    apt = fetch.PrivateApt(tmp_path, "Types: deb\n", "arm64")
    assert "APT::Architecture=arm64" in apt.options and "APT::Architectures=arm64" in apt.options
    assert not any("Architecture" in option for option in fetch.PrivateApt(tmp_path / "n", "Types: deb\n").options)


def test_arm64_kernels_have_their_own_cache(tmp_path):
    assert fetch.kernels_dir(tmp_path) == tmp_path / "kernels"
    assert fetch.kernels_dir(tmp_path, arch.ARM64) == tmp_path / "kernels-arm64"
    assert arch.ARM64.flavour == "cloud-arm64" and arch.X86_64.flavour == "cloud-amd64"


def test_arch_names_and_aliases():
    assert arch.guest_arch("aarch64") is arch.ARM64 and arch.guest_arch("amd64") is arch.X86_64
    with pytest.raises(DmabufTopError, match="choose one of x86_64, arm64"):
        arch.guest_arch("riscv64")


def test_release_is_read_from_an_arm64_image_banner(tmp_path):
    image = tmp_path / "Image"
    image.write_bytes(b"MZ" + b"\0" * 100 + b"Linux version %s (%s)\0" + b"\0" * 50
                      + b"Linux version 7.2.13+deb14-cloud-arm64 (debian-kernel@lists) #1 SMP\0")
    assert fetch.image_release(image) == "7.2.13+deb14-cloud-arm64"


def test_arm64_image_is_unpacked_from_gzip_and_efi_zboot():
    plain = b"MZ" + b"\x00" * 62 + b"ARMd" + b"kernel"
    assert fetch.uncompressed_arm64_image(plain) == plain
    assert fetch.uncompressed_arm64_image(gzip.compress(plain)) == plain
    payload = gzip.compress(plain)
    header = bytearray(64)
    header[0:2] = b"MZ"
    header[4:8] = b"zimg"
    header[8:12] = (64).to_bytes(4, "little")
    header[12:16] = len(payload).to_bytes(4, "little")
    header[24:28] = b"gzip"
    assert fetch.uncompressed_arm64_image(bytes(header) + payload) == plain
    header[24:28] = b"zstd"
    with pytest.raises(DmabufTopError, match="compressed with zstd"):
        fetch.uncompressed_arm64_image(bytes(header) + payload)


def arm64_plan(tmp_path, **overrides):
    values = dict(kernel=Path("/k/Image"), initrd=tmp_path / "initrd", workdir=tmp_path,
                  root_socket=tmp_path / "root.sock", arch=arch.ARM64, source_socket=tmp_path / "source.sock")
    values.update(overrides)
    return lab.QemuPlan(**values)


def test_arm64_qemu_command_line(tmp_path):
    args = lab.qemu_args("qemu-system-aarch64", arm64_plan(tmp_path))
    assert "virt,memory-backend=mem" in args and "-vga" not in args
    assert args[args.index("-cpu") + 1] == "max,pauth-impdef=on"
    append = args[args.index("-append") + 1]
    assert "console=ttyAMA0" in append and "cma=64M" in append and "i8042" not in append
    assert "vhost-user-fs-pci,chardev=sourcefs,tag=dmabuf-top-source" in args


def test_x86_command_line_is_unchanged_by_arm64():
    line = lab.kernel_command_line()
    assert line.startswith("console=ttyS0 ") and "cma=" not in line and "no_timer_check" in line


# What `apt-cache depends` prints (shape of apt 3.x): alternatives marked "|", a virtual package's providers
# listed under it.
DEPENDS = """\
python3
  PreDepends: python3-minimal
  Depends: python3.14
  Depends: libpython3-stdlib
tzdata
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
mawk
  Depends: <awk-virtual>
    mawk
libc6
  Depends: libgcc-s1
"""


def test_parse_depends_takes_the_first_real_alternative():
    assert userland.parse_depends(DEPENDS) == {
        "python3": ["python3-minimal", "python3.14", "libpython3-stdlib"],
        "tzdata": ["debconf"],
        "mawk": ["mawk"],
        "libc6": ["libgcc-s1"],
    }


def test_dependency_closure_walks_levels():
    graph = {"a": ["b", "c"], "b": ["c"], "c": ["d"], "d": []}

    class FakeApt:
        calls = 0

        def run(self, tool, *args):
            FakeApt.calls += 1
            names = [a for a in args if not a.startswith("-")][1:]
            return "".join(f"{n}\n" + "".join(f"  Depends: {d}\n" for d in graph[n]) for n in names)

    assert userland.dependency_closure(FakeApt(), ["a"]) == ["a", "b", "c", "d"]
    assert FakeApt.calls == 3


def test_pip_installs_aarch64_wheels_for_the_guest_python(tmp_path):
    args = userland.pip_install_args(arch.ARM64, "3.14", tmp_path, ["click >= 8.0"])
    assert args[-1] == "click >= 8.0" and "--only-binary=:all:" in args
    assert args[args.index("--python-version") + 1] == "3.14" and "cp314" in args
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert "manylinux2014_aarch64" in platforms and all(p.endswith("_aarch64") for p in platforms)


def test_guest_python_version_is_read_from_the_tree(tmp_path):
    for version in ("3.9", "3.14"):
        (tmp_path / "usr" / "lib" / f"python{version}").mkdir(parents=True)
        (tmp_path / "usr" / "lib" / f"python{version}" / "os.py").touch()
    (tmp_path / "usr" / "lib" / "python3").mkdir()
    assert userland.python_version_in(tmp_path) == "3.14"


def test_project_requirements_exclude_extras():
    requirements = userland.project_requirements()
    assert any(r.startswith("click") for r in requirements)
    assert not any(r.startswith(("pytest", "ruff")) for r in requirements)


def test_the_guest_finder_imports_the_host_packages_from_their_directories(tmp_path):
    """The hook the guest's site.py loads maps dmabuf_top and its rooms to the host's directories."""
    mapping = userland.package_mapping()
    assert mapping["dmabuf_top.probes"].endswith(("/probes", "/dmabuf_top/probes"))
    site = tmp_path / "site"
    site.mkdir()
    userland._install_project_hooks(tmp_path, site)
    code = ("import dmabuf_top.probes, dmabuf_top.kernel.arch, sys; "
            "print(dmabuf_top.probes.__file__); print(type(sys.meta_path[0]).__name__)")
    env = {"PATH": os.environ["PATH"], userland.PACKAGES_VARIABLE: userland.encode_mapping(mapping)}
    # -S: no site of the venv (that would find dmabuf_top itself); the hook is imported by hand as site.py would.
    result = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
                             f"import {userland.FINDER_MODULE}; {code}"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(Path(mapping["dmabuf_top.probes"]) / "__init__.py"), "LabFinder"]
    assert (site / "dmabuf_top_lab.pth").read_text() == f"import {userland.FINDER_MODULE}\n"
    assert (tmp_path / "usr" / "local" / "bin" / "dmabuf-top").stat().st_mode & 0o111


def test_the_shared_directory_holds_every_package():
    mapping = userland.package_mapping()
    root = userland.shared_source_root(mapping)
    assert all(Path(path).is_relative_to(root) for path in mapping.values())
    with pytest.raises(DmabufTopError, match="':' or '='"):
        userland.encode_mapping({"dmabuf_top": "/a:b"})


def test_a_foreign_guest_gets_no_host_paths():
    host = {"PATH": "/venv/bin:/usr/bin", "VIRTUAL_ENV": "/venv", "LANG": "C.UTF-8", "PYTHONPATH": "/x"}
    assert guest_environment(host, [], native=False) == {"LANG": "C.UTF-8"}
    assert guest_environment(host, ["A=1"], native=False) == {"LANG": "C.UTF-8", "A": "1"}
    assert "PATH" in guest_environment(host, [])


def test_cwd_must_be_inside_what_the_foreign_guest_sees(tmp_path):
    lab._check_cwd_in_shares(tmp_path / "src" / "tests", tmp_path / "src", None)
    lab._check_cwd_in_shares(tmp_path / "out", tmp_path / "src", str(tmp_path / "out"))
    with pytest.raises(DmabufTopError, match="run from inside the project"):
        lab._check_cwd_in_shares(Path("/etc"), tmp_path / "src", None)


def test_mount_points_are_made_in_the_tree(tmp_path):
    userland.make_mount_points(tmp_path, ["/work/checkout", "/tmp/results"], ["/tmp"])
    assert (tmp_path / "work" / "checkout").is_dir()
    assert not (tmp_path / "tmp").exists()  # init makes it on the guest's tmpfs


def test_guest_busybox_is_the_trees_own(tmp_path):
    with pytest.raises(DmabufTopError, match="no busybox"):
        userland.guest_busybox(tmp_path)
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "busybox").write_bytes(b"\x7fELF")
    assert userland.guest_busybox(tmp_path) == tmp_path / "usr" / "bin" / "busybox"


def test_lab_env_names_the_source_share():
    from dmabuf_top.kernel.initramfs import GuestJob

    env = GuestJob(["true"], source_path="/work/checkout").lab_env()
    assert "LAB_SOURCE_TAG=dmabuf-top-source" in env and "LAB_SOURCE_PATH=/work/checkout" in env
    assert "LAB_SOURCE_TAG=''" in GuestJob(["true"]).lab_env()



@pytest.mark.parametrize("machine, wanted", [("x86_64", {"amd64": None, "arm64": "arm64"}),
                                             ("aarch64", {"amd64": "amd64", "arm64": None})])
def test_apt_overrides_the_architecture_only_for_a_foreign_guest(tmp_path, monkeypatch, machine, wanted):
    monkeypatch.setattr(arch.platform, "machine", lambda: machine)
    sources = tmp_path / "debian.sources"
    sources.write_text(SAMPLE_SOURCES)
    for guest in (arch.X86_64, arch.ARM64):
        apt = fetch._private_apt(tmp_path, "sid", sources, guest)
        overridden = next((o.split("=", 1)[1] for o in apt.options if o.startswith("APT::Architecture=")), None)
        assert overridden == wanted[guest.debian]

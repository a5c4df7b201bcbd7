"""The arm64 lab kernel's build plan without building: cross flags, a key that covers the architecture, the
merged fragment and what it must hold, a source tree of its own, and the x86 plan left exactly as it was."""
import json
from pathlib import Path

import pytest

from dmabuf_top.kernel import arch, build, kconfig

ROOT = Path(__file__).resolve().parents[2]


def _fragments(tmp_path):
    base = tmp_path / "lab.config"
    base.write_text("CONFIG_64BIT=y\nCONFIG_ACPI=y\nCONFIG_SERIAL_8250=y\n")
    overlay = tmp_path / "lab-arm64.config"
    overlay.write_text("# CONFIG_ACPI is not set\nCONFIG_SERIAL_AMBA_PL011=y\n")
    return base, overlay


def test_arm64_cross_compiles_an_image_and_x86_builds_a_bzimage_as_before():
    arm64 = build.target_of(arch.ARM64)
    assert arm64.make_variables == ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
    assert (arm64.image, arm64.image_path) == ("Image", "arch/arm64/boot/Image")
    assert build.make_command(["Image"], 2, arm64) == [
        "nice", "-n", "19", "make", "-j2", "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "Image"]
    x86 = build.target_of("x86_64")
    assert build.make_command(["bzImage"], 2, x86) == ["nice", "-n", "19", "make", "-j2", "ARCH=x86_64", "bzImage"]
    assert build.make_command(["bzImage"], 2) == build.make_command(["bzImage"], 2, x86)
    assert (x86.image_path, x86.fragments, x86.recipe) == ("arch/x86/boot/bzImage", (build.CONFIG_FRAGMENT,),
                                                           build.RECIPE)
    assert build.target_of("aarch64") is arm64


def test_one_fragment_hashes_as_before_the_arm64_target(tmp_path):
    """The x86 kernel's cache key is what it was (a pinned value from the code before arm64), so CI rebuilds
    nothing for x86."""
    fragment = tmp_path / "lab.config"
    fragment.write_text("CONFIG_64BIT=y\n")
    patch = tmp_path / "s" / "0001-a.patch"
    patch.parent.mkdir()
    patch.write_text("a\n")
    assert build.build_key("7.2.13-1", [patch], fragment) == "c4f87232a939608f"
    assert build.build_key("7.2.13-1", [patch], [fragment]) == "c4f87232a939608f"


def test_the_key_covers_the_architecture_and_every_fragment(tmp_path):
    base, overlay = _fragments(tmp_path)
    x86 = build.build_key("7.2.13-1", [], base)
    arm64 = build.build_key("7.2.13-1", [], [base, overlay], build.ARM64_RECIPE)
    assert len({x86, arm64, build.build_key("7.2.13-1", [], [base, overlay]),
                build.build_key("7.2.13-1", [], [base], build.ARM64_RECIPE)}) == 4
    overlay.write_text("CONFIG_SERIAL_AMBA_PL011=y\n")
    assert build.build_key("7.2.13-1", [], [base, overlay], build.ARM64_RECIPE) != arm64
    assert "arm64" in build.ARM64_RECIPE and "aarch64-linux-gnu-" in build.ARM64_RECIPE


def test_a_later_fragment_wins_and_the_merged_file_keeps_both(tmp_path):
    base, overlay = _fragments(tmp_path)
    assert build.fragment_options([base, overlay]) == {
        "64BIT": "y", "ACPI": "n", "SERIAL_8250": "y", "SERIAL_AMBA_PL011": "y"}
    merged = build.merged_fragment([base, overlay], tmp_path / "allconfig")
    text = merged.read_text()
    assert text.index("CONFIG_ACPI=y") < text.index("# CONFIG_ACPI is not set")  # Kconfig: the later one wins
    assert kconfig.read_kconfig(merged) == build.fragment_options([base, overlay])
    assert build.merged_fragment([base], tmp_path / "unused") == base  # one fragment is passed as it is
    # What the check reports when the kernel did not take an option of the overlay.
    assert build.unmet_options(build.fragment_options([base, overlay]), {"64BIT": "y", "ACPI": "n",
                                                                         "SERIAL_8250": "y"}) == [
        "CONFIG_SERIAL_AMBA_PL011=y (got nothing)"]


def test_the_arm64_fragments_hold_the_virt_machine_the_cma_heap_and_what_the_lab_checks():
    options = build.fragment_options(build.target_of(arch.ARM64).fragments)
    for name in {**kconfig.boot_needs(arch.ARM64), **kconfig.dmabuf_needs(arch.ARM64)}:
        assert options.get(name) == "y", name
    for name in ("DMABUF_HEAPS_CMA", "DMA_CMA", "CMA", "UDMABUF", "DMABUF_HEAPS_SYSTEM", "PCI_HOST_GENERIC",
                 "SERIAL_AMBA_PL011_CONSOLE", "ARM_PSCI_FW", "DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "DEBUG_INFO_BTF",
                 "FPROBE", "KPROBES", "FTRACE_SYSCALLS", "VIRTIO_FS", "BLK_DEV_NVME", "EXT4_FS"):
        assert options.get(name) == "y", name
    # The x86 machine is switched off, never left asked for (the check would fail on arm64).
    assert options["ACPI"] == options["SERIAL_8250"] == options["SERIAL_8250_CONSOLE"] == "n"
    # The overlay does not restate what lab.config already gives both architectures.
    overlay = kconfig.read_kconfig(build.ARM64_FRAGMENT)
    assert not {name for name, value in overlay.items() if value == "y"} & set(
        kconfig.read_kconfig(build.CONFIG_FRAGMENT))


def test_each_architecture_has_a_source_tree_of_its_own(tmp_path):
    """x86 builds in its tree, and the kernel refuses O= beside an in-tree build: arm64 needs another tree."""
    assert build.source_work_dir("7.2.13-1", arch.X86_64, tmp_path) == tmp_path / "kernel-src" / "7.2.13-1"
    assert build.source_work_dir("7.2.13-1", arch.ARM64, tmp_path) == tmp_path / "kernel-src" / "7.2.13-1-arm64"


def _cached_entry(cache, name, series, fragments, recipe, manifest_arch=None):
    entry = cache / "patched" / name
    entry.mkdir(parents=True)
    (entry / "vmlinuz").write_bytes(b"image " + name.encode())
    (entry / "config").write_text("CONFIG_64BIT=y\n")
    manifest = {"key": name, "source_version": "7.2.13-1", "series": ["rw-file"],
                "patches": [build.patch_label(p) for p in series],
                "inputs": build.inputs_digest(series, fragments, recipe)}
    if manifest_arch:
        manifest["arch"] = manifest_arch
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return entry


def test_cached_build_never_returns_another_architectures_kernel(tmp_path):
    series = build.kernel_patches(["rw-file"])
    cache = tmp_path / "cache"
    x86 = build.target_of(arch.X86_64)
    arm64 = build.target_of(arch.ARM64)
    assert build.cached_build(cache, ["rw-file"], arch=arch.ARM64) is None
    _cached_entry(cache, "x86key", series, x86.fragments, x86.recipe)  # written before manifests named an arch
    assert build.cached_build(cache, ["rw-file"], arch=arch.ARM64) is None
    assert build.cached_build(cache, ["rw-file"]).arch == "x86_64"
    _cached_entry(cache, "armkey", series, arm64.fragments, arm64.recipe, "arm64")
    found = build.cached_build(cache, ["rw-file"], arch=arch.ARM64)
    assert (found.key, found.arch) == ("armkey", "arm64")
    assert build.cached_build(cache, ["rw-file"]).key == "x86key"


def test_the_cross_toolchain_is_named_with_its_packages_and_the_install_hint(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda tool: None if tool.startswith("aarch64") else "/usr/bin/" + tool)
    build.require_build_tools()  # x86 needs no cross compiler
    with pytest.raises(build.MissingDependency, match=r"arm64 lab kernel needs binutils-aarch64-linux-gnu, "
                                                      r"gcc-aarch64-linux-gnu.*install-deps kernel-arm64"):
        build.require_build_tools(build.target_of(arch.ARM64))


def test_cached_flag_for_arm64_names_its_make_target(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMABUF_TOP_CACHE", str(tmp_path))
    assert build.main(["--cached", "--arch", "arm64"]) == 1
    assert "no lab arm64 kernel" in capsys.readouterr().err
    assert build.main(["--cached", "--arch", "arm64"]) == 1
    assert "run 'make kernel-arm64'" in capsys.readouterr().err


def test_install_deps_knows_the_cross_toolchain():
    script = (ROOT / ".ci" / "install-deps").read_text()
    assert "kernel-arm64" in script
    assert "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu" in script
    assert "aarch64-linux-gnu-ld binutils-aarch64-linux-gnu" in script


def _debian_and_built(tmp_path, monkeypatch, built):
    from dmabuf_top.kernel import fetch, lab

    debian = fetch.Kernel("7.2.13+deb14", tmp_path / "debian-vmlinuz", None, "7.2.13+deb14-cloud-arm64")
    monkeypatch.setattr(lab, "fetch_kernel", lambda arch, cache_dir=None: debian)
    image = tmp_path / "patched" / "vmlinuz"
    image.parent.mkdir()
    image.write_bytes(b"\0" * 64 + b"Linux version 7.2.13 (lab@host) #1 SMP\0")
    (image.parent / "config").write_text("CONFIG_DMABUF_HEAPS_CMA=y\n")
    found = build.BuiltKernel(image, image.parent / "config", "k", "7.2.13-1", (), (), "arm64") if built else None
    monkeypatch.setattr(lab.build, "cached_build", lambda cache_dir=None, arch=None: found)
    return lab, debian, image


def test_arm64_boots_the_lab_kernel_once_built_and_debians_when_asked(tmp_path, monkeypatch, capsys):
    lab, debian, image = _debian_and_built(tmp_path, monkeypatch, built=True)
    chosen = lab.resolve_kernel(None, arch.ARM64)
    assert (chosen.vmlinuz, chosen.release, chosen.config) == (image, "7.2.13", image.parent / "config")
    assert lab.resolve_kernel(None, arch.ARM64, stock=True) is debian
    assert lab.resolve_kernel(None, arch.X86_64) is debian  # x86 keeps Debian's kernel: it has every heap
    assert capsys.readouterr().err == ""


def test_arm64_without_the_lab_kernel_boots_debians_and_says_what_it_lacks(tmp_path, monkeypatch, capsys):
    lab, debian, _ = _debian_and_built(tmp_path, monkeypatch, built=False)
    assert lab.resolve_kernel(None, arch.ARM64) is debian
    assert "no dma-buf heaps; 'make kernel-arm64' builds the lab's own" in capsys.readouterr().err

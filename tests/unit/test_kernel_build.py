"""The patched-kernel build without building: source resolution, the cache key, patch series, config checks."""
import json
import subprocess

import pytest

from dmabuf_top.errors import DmabufTopError
from dmabuf_top.kernel import build, kconfig


def test_source_package_is_named_by_major_and_minor():
    assert build.source_package("7.2.13+deb14") == "linux-source-7.2"
    assert build.source_package("6.12.9") == "linux-source-6.12"
    with pytest.raises(DmabufTopError):
        build.source_package("sid")


def test_package_version_reads_the_first_stanza():
    shown = "Package: linux-binary-7.2.13+deb14-cloud-amd64\nSource: linux-signed-amd64 (7.2.13+1)\n" \
            "Version: 7.2.13-1\n\nPackage: x\nVersion: 9\n"
    assert build.package_version(shown) == "7.2.13-1"
    assert build.package_version("") is None


def _inputs(tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0002-b.patch").write_text("b\n")
    (patches / "0001-a.patch").write_text("a\n")
    (patches / "README").write_text("not a patch\n")
    fragment = tmp_path / "lab.config"
    fragment.write_text("CONFIG_64BIT=y\n")
    return patches, fragment


def test_series_is_the_patches_in_name_order(tmp_path):
    patches, _ = _inputs(tmp_path)
    assert [p.name for p in build.patch_series(patches)] == ["0001-a.patch", "0002-b.patch"]


def test_key_changes_with_each_input_and_only_then(tmp_path):
    patches, fragment = _inputs(tmp_path)
    series = build.patch_series(patches)
    key = build.build_key("7.2.13-1", series, fragment)
    assert key == build.build_key("7.2.13-1", series, fragment)
    assert key != build.build_key("7.2.14-1", series, fragment)
    assert key != build.build_key("7.2.13-1", series[:1], fragment)
    (patches / "0001-a.patch").write_text("a changed\n")
    assert key != build.build_key("7.2.13-1", series, fragment)
    (patches / "0001-a.patch").write_text("a\n")
    fragment.write_text("CONFIG_64BIT=y\nCONFIG_SMP=y\n")
    assert key != build.build_key("7.2.13-1", series, fragment)


def test_unmet_options_name_what_the_kernel_did_not_take():
    wanted = {"SMP": "y", "UDMABUF": "y", "HZ": "250"}
    got = {"SMP": "y", "UDMABUF": "n", "HZ": "250"}
    assert build.unmet_options(wanted, got) == ["CONFIG_UDMABUF=y (got n)"]
    assert build.unmet_options({"KPROBES": "y"}, {}) == ["CONFIG_KPROBES=y (got nothing)"]


def test_lab_fragment_covers_what_the_lab_and_the_tool_need():
    options = build.fragment_options(build.CONFIG_FRAGMENT)
    for name in {**kconfig.BOOT_NEEDS, **kconfig.DMABUF_NEEDS}:
        assert options.get(name) == "y", name
    assert all(value == "y" for value in options.values())


def test_the_series_in_the_repo_touches_only_dma_buf():
    series = build.patch_series()
    assert [p.name for p in series] == ["0001-dma-buf-rw-file.patch"]
    touched = {line.split()[1] for p in series for line in p.read_text().splitlines() if line.startswith("+++ ")}
    assert touched == {"b/drivers/dma-buf/dma-buf.c", "b/drivers/dma-buf/heaps/system_heap.c",
                       "b/drivers/dma-buf/udmabuf.c", "b/include/linux/dma-buf.h", "b/include/uapi/linux/dma-buf.h"}


def _tree(tmp_path):
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "file.c").write_text("one\ntwo\nthree\n")
    return tree


def _diff(tmp_path, name, old, new):
    a, b = tmp_path / "a", tmp_path / "b"
    for side, text in ((a, old), (b, new)):
        side.mkdir(exist_ok=True)
        (side / "file.c").write_text(text)
    out = subprocess.run(["diff", "-u", "a/file.c", "b/file.c"], cwd=tmp_path, capture_output=True, text=True).stdout
    path = tmp_path / name
    path.write_text(out)
    return path


def test_apply_series_applies_then_swaps_a_changed_series(tmp_path):
    tree = _tree(tmp_path)
    first = _diff(tmp_path, "p1.patch", "one\ntwo\nthree\n", "one\nTWO\nthree\n")
    assert build.apply_series(tree, [first]) == ["p1.patch"]
    assert (tree / "file.c").read_text() == "one\nTWO\nthree\n"
    assert build.apply_series(tree, [first]) == []  # already there: nothing touched
    second = _diff(tmp_path, "p1b.patch", "one\ntwo\nthree\n", "one\ntwo\nTHREE\n")
    assert build.apply_series(tree, [second]) == ["p1b.patch"]
    assert (tree / "file.c").read_text() == "one\ntwo\nTHREE\n"  # the first was reversed
    assert build.apply_series(tree, []) == []
    assert (tree / "file.c").read_text() == "one\ntwo\nthree\n"


def test_a_patch_that_does_not_apply_is_one_error_naming_it(tmp_path):
    tree = _tree(tmp_path)
    bad = _diff(tmp_path, "bad.patch", "x\ny\nz\n", "x\nY\nz\n")
    with pytest.raises(DmabufTopError, match="cannot apply bad.patch"):
        build.apply_series(tree, [bad])


def test_cached_build_matches_current_inputs_only(tmp_path):
    patches, fragment = _inputs(tmp_path)
    cache = tmp_path / "cache"
    assert build.cached_build(cache, patches, fragment) is None
    series = build.patch_series(patches)
    entry = cache / "patched" / "k1"
    entry.mkdir(parents=True)
    (entry / "vmlinuz").write_bytes(b"image")
    (entry / "config").write_text("CONFIG_64BIT=y\n")
    (entry / "manifest.json").write_text(json.dumps({
        "key": "k1", "source_version": "7.2.13-1", "patches": [p.name for p in series],
        "inputs": build.inputs_digest(series, fragment)}))
    found = build.cached_build(cache, patches, fragment)
    assert (found.vmlinuz, found.source_version, found.patches) == (entry / "vmlinuz", "7.2.13-1",
                                                                    ("0001-a.patch", "0002-b.patch"))
    (patches / "0002-b.patch").write_text("b changed\n")
    assert build.cached_build(cache, patches, fragment) is None


def test_missing_build_tools_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda tool: None if tool in ("pahole", "flex") else "/usr/bin/" + tool)
    with pytest.raises(build.MissingDependency, match=r"apt-get install dwarves flex"):
        build.require_build_tools()


def test_cached_flag_says_when_nothing_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMABUF_TOP_CACHE", str(tmp_path))
    assert build.main(["--cached"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "run 'make kernel'" in captured.err

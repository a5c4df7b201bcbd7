"""The patched-kernel build without building: source resolution, the cache key, patch series, config checks."""
import json
import os
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


def _touched(patches):
    return {line.split()[1] for p in patches for line in p.read_text().splitlines() if line.startswith("+++ ")}


def test_the_series_in_the_repo_touch_only_dma_buf():
    rw_file = build.kernel_patches(["rw-file"])
    assert [build.patch_label(p) for p in rw_file] == ["rw-file/0001-dma-buf-rw-file.patch"]
    assert _touched(rw_file) == {"b/drivers/dma-buf/dma-buf.c", "b/drivers/dma-buf/heaps/system_heap.c",
                                 "b/drivers/dma-buf/udmabuf.c", "b/include/linux/dma-buf.h",
                                 "b/include/uapi/linux/dma-buf.h"}
    hidden = build.kernel_patches(["rw-file-hidden-copy"])
    assert _touched(hidden) == {"b/drivers/dma-buf/dma-buf.c", "b/drivers/dma-buf/heaps/system_heap.c",
                                "b/drivers/dma-buf/udmabuf.c", "b/include/linux/dma-buf.h"}
    # The instrument is off unless a test switches it on: a module parameter defaulting to false, per exporter.
    text = hidden[0].read_text()
    assert text.count("+static bool rw_file_hidden_copy;") == 2
    assert text.count("+module_param(rw_file_hidden_copy, bool, 0644);") == 2


def test_every_kernel_names_series_that_exist_with_a_readme():
    assert build.KERNELS[build.DEFAULT_KERNEL][0] == "rw-file"
    for name, series in build.KERNELS.items():
        assert build.kernel_patches(series), name
        for one in series:
            assert (build.SERIES_DIR / one / "README").is_file(), one
    # Every series directory is in some kernel: a series nothing builds would rot unseen.
    assert {d.name for d in build.SERIES_DIR.iterdir() if d.is_dir()} <= {s for k in build.KERNELS.values() for s in k}


def _series_root(tmp_path):
    root = tmp_path / "series"
    for name, files in {"one": {"0001-a.patch": "a\n", "0002-b.patch": "b\n", "README": "r\n"},
                        "two": {"0001-a.patch": "two a\n"}}.items():
        (root / name).mkdir(parents=True)
        for file_name, text in files.items():
            (root / name / file_name).write_text(text)
    return root


def test_a_kernel_is_its_series_in_order_and_the_key_covers_them(tmp_path):
    root = _series_root(tmp_path)
    fragment = tmp_path / "lab.config"
    fragment.write_text("CONFIG_64BIT=y\n")
    both = build.kernel_patches(["one", "two"], root)
    assert [build.patch_label(p) for p in both] == ["one/0001-a.patch", "one/0002-b.patch", "two/0001-a.patch"]
    assert [build.patch_label(p) for p in build.kernel_patches(["two", "one"], root)][0] == "two/0001-a.patch"
    keys = {build.build_key("7.2.13-1", build.kernel_patches(series, root), fragment)
            for series in (["one"], ["two"], ["one", "two"], ["two", "one"])}
    assert len(keys) == 4
    # The same bytes under another series' name are another kernel.
    (root / "three").mkdir()
    (root / "three" / "0001-a.patch").write_text("two a\n")
    assert build.build_key("v", build.kernel_patches(["two"], root), fragment) != \
        build.build_key("v", build.kernel_patches(["three"], root), fragment)
    with pytest.raises(DmabufTopError, match="no patch series 'four'"):
        build.kernel_patches(["one", "four"], root)
    with pytest.raises(DmabufTopError, match="no lab kernel named 'nope'"):
        build.series_of("nope")


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


def test_apply_series_keeps_a_shared_start_applied(tmp_path):
    """Adding a series on top of a built tree re-applies nothing under it: make recompiles only what it touches."""
    tree = _tree(tmp_path)
    (tree / "other.c").write_text("x\n")
    first = _diff(tmp_path, "p1.patch", "one\ntwo\nthree\n", "one\nTWO\nthree\n")
    build.apply_series(tree, [first])
    os.utime(tree / "file.c", (1, 1))
    (tmp_path / "a" / "file.c").unlink()
    (tmp_path / "b" / "file.c").unlink()
    (tmp_path / "a" / "other.c").write_text("x\n")
    (tmp_path / "b" / "other.c").write_text("y\n")
    on_top = tmp_path / "p2.patch"
    on_top.write_text(subprocess.run(["diff", "-u", "a/other.c", "b/other.c"], cwd=tmp_path, capture_output=True,
                                     text=True).stdout)
    assert build.apply_series(tree, [first, on_top]) == ["p2.patch"]
    assert (tree / "file.c").stat().st_mtime == 1 and (tree / "other.c").read_text() == "y\n"
    assert build.apply_series(tree, [first]) == []
    assert (tree / "other.c").read_text() == "x\n" and (tree / "file.c").stat().st_mtime == 1


def test_cached_build_matches_current_inputs_only(tmp_path):
    root = _series_root(tmp_path)
    patches = root / "one"
    fragment = tmp_path / "lab.config"
    fragment.write_text("CONFIG_64BIT=y\n")
    cache = tmp_path / "cache"
    assert build.cached_build(cache, ["one"], root, fragment) is None
    series = build.patch_series(patches)
    entry = cache / "patched" / "k1"
    entry.mkdir(parents=True)
    (entry / "vmlinuz").write_bytes(b"image")
    (entry / "config").write_text("CONFIG_64BIT=y\n")
    (entry / "manifest.json").write_text(json.dumps({
        "key": "k1", "source_version": "7.2.13-1", "series": ["one"],
        "patches": [build.patch_label(p) for p in series], "inputs": build.inputs_digest(series, fragment)}))
    found = build.cached_build(cache, ["one"], root, fragment)
    assert (found.vmlinuz, found.source_version, found.patches, found.series) == (
        entry / "vmlinuz", "7.2.13-1", ("one/0001-a.patch", "one/0002-b.patch"), ("one",))
    assert build.cached_build(cache, ["one", "two"], root, fragment) is None  # another kernel
    (patches / "0002-b.patch").write_text("b changed\n")
    assert build.cached_build(cache, ["one"], root, fragment) is None


def test_missing_build_tools_are_named_with_their_packages(monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda tool: None if tool in ("pahole", "flex") else "/usr/bin/" + tool)
    with pytest.raises(build.MissingDependency, match=r"apt-get install dwarves flex"):
        build.require_build_tools()


def test_cached_flag_says_when_nothing_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMABUF_TOP_CACHE", str(tmp_path))
    assert build.main(["--cached"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "run 'make kernel'" in captured.err

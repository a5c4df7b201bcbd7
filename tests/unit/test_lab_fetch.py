"""Kernel fetching without the network: source derivation, version order, the cache, clear errors."""
import pytest

from dmabuf_top.errors import DmabufTopError, MissingDependency
from dmabuf_top.kernel import fetch

# The shape of Debian 12's /etc/apt/sources.list.d/debian.sources (host name made up).
SAMPLE_SOURCES = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_source_stanza_keeps_uri_and_key_and_switches_suite():
    stanza = fetch.derive_apt_source(SAMPLE_SOURCES)
    fields = dict(line.split(": ", 1) for line in stanza.strip().splitlines())
    assert fields == {
        "Types": "deb",
        "URIs": "http://mirror.example/debian",
        "Suites": "sid",
        "Components": "main",
        "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg",
    }


def test_source_stanza_skips_security_source_and_deb_src():
    text = SAMPLE_SOURCES.split("\n\n")[1] + "\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n" \
        "Types: deb deb-src\nURIs: http://other.example/debian\nSuites: trixie\nComponents: main contrib\n"
    stanza = fetch.derive_apt_source(text, suite="trixie-backports")
    assert "URIs: http://other.example/debian" in stanza
    assert "Suites: trixie-backports" in stanza and "Types: deb\n" in stanza


def test_source_stanza_missing_is_a_user_error():
    with pytest.raises(DmabufTopError, match="--kernel"):
        fetch.derive_apt_source("Types: deb\nURIs: http://x.example/debian-security\nSuites: bookworm-security\n")


def test_newest_cloud_version_wins_and_other_packages_are_ignored():
    names = [
        "linux-binary-7.2.9+deb14-cloud-amd64",
        "linux-binary-7.2.13+deb14-cloud-amd64",
        "linux-binary-unsigned-7.3.1+deb14-cloud-amd64",
        "linux-binary-7.4+deb14-amd64",
        "linux-binary-7.3~rc2+deb14-cloud-amd64",
        "linux-binary-7.3~rc10+deb14-cloud-amd64",
    ]
    assert fetch.versions_from_names(names) == [
        "7.3~rc10+deb14", "7.3~rc2+deb14", "7.2.13+deb14", "7.2.9+deb14"]


@pytest.mark.parametrize("older,newer", [
    ("7.2.9", "7.2.13"), ("7.3~rc1", "7.3"), ("7.2.13+deb14", "7.2.13+deb15"), ("6.19", "7.0"), ("7.2", "7.2.1"),
])
def test_debian_version_order(older, newer):
    assert fetch.compare_versions(older, newer) == -1
    assert fetch.compare_versions(newer, older) == 1
    assert fetch.compare_versions(newer, newer) == 0


def make_cached_kernel(cache, version):
    directory = cache / "kernels" / version
    directory.mkdir(parents=True)
    (directory / "vmlinuz").write_bytes(b"not a bzImage")
    (directory / "config").write_text("CONFIG_UDMABUF=y\n")
    return directory


def test_cached_kernel_needs_no_apt_at_all(tmp_path, monkeypatch):
    make_cached_kernel(tmp_path, "7.2.9+deb14")
    make_cached_kernel(tmp_path, "7.2.13+deb14")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no apt-get, no dpkg-deb
    kernel = fetch.fetch_kernel(cache_dir=tmp_path)
    assert kernel.version == "7.2.13+deb14"
    assert kernel.vmlinuz == tmp_path / "kernels/7.2.13+deb14/vmlinuz"
    assert kernel.config.read_text() == "CONFIG_UDMABUF=y\n"
    assert fetch.fetch_kernel("7.2.9+deb14", cache_dir=tmp_path).version == "7.2.9+deb14"


def test_cache_location_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DMABUF_TOP_CACHE", str(tmp_path / "env"))
    assert fetch.kernels_dir() == tmp_path / "env" / "kernels"
    assert fetch.kernels_dir(tmp_path / "arg") == tmp_path / "arg" / "kernels"
    monkeypatch.delenv("DMABUF_TOP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.kernels_dir() == tmp_path / "xdg" / "dmabuf-top" / "kernels"


def test_missing_apt_is_one_clear_error(tmp_path, monkeypatch):
    sources = tmp_path / "debian.sources"
    sources.write_text(SAMPLE_SOURCES)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingDependency, match=r"apt-get not found.*--kernel"):
        fetch.fetch_kernel(cache_dir=tmp_path / "cache", sources_file=sources)


def test_missing_sources_file_is_one_clear_error(tmp_path):
    with pytest.raises(MissingDependency, match="--kernel"):
        fetch.fetch_kernel(cache_dir=tmp_path, sources_file=tmp_path / "absent.sources")


def test_release_is_read_from_a_bzimage_header(tmp_path):
    image = bytearray(0x1000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")
    text = b"7.2.13-test (builder@host) #1 SMP\0"
    image[0x500:0x500 + len(text)] = text
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(image))
    assert fetch.bzimage_release(path) == "7.2.13-test"
    path.write_bytes(b"garbage")
    assert fetch.bzimage_release(path) == ""

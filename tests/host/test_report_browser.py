"""Headless Chromium opens the HTML report: every section is there and every figure has a size."""
import json
import shutil
import struct
import subprocess

import pytest

from dmabuf_top.cli import main

pytestmark = pytest.mark.root

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

# Printed into the DOM by the page itself once loaded: each section and each image's rendered size.
PROBE = """
<script>
window.addEventListener('load', () => {
  const facts = {sections: [...document.querySelectorAll('section')].map(s => s.id),
                 images: [...document.querySelectorAll('img')].map(i => [i.id, i.naturalWidth, i.naturalHeight]),
                 svgs: [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width)};
  const out = document.createElement('pre'); out.id = 'facts'; out.textContent = JSON.stringify(facts);
  document.body.appendChild(out);
});
</script>
"""


def chromium():
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run 'make deps' (as root)")
    return binary


def png_size(path):
    with open(path, "rb") as file:
        head = file.read(24)
    assert head.startswith(b"\x89PNG")
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from tests.unit.test_analysis import build  # the hand-built session with known numbers

    directory = tmp_path_factory.mktemp("browser")
    build(directory / "known.session").close()
    out = directory / "report.html"
    assert main(["report", str(directory / "known.session"), "-o", str(out)]) == 0
    return out


def test_screenshot_shows_the_report(report, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1280,4000", f"file://{report}"],
                   check=True, capture_output=True, timeout=120)
    assert png_size(shot) == (1280, 4000)
    assert shot.stat().st_size > 100_000  # a blank page is a few KiB
    shutil.copy(shot, "/tmp/dmabuf-top-report-screenshot.png")


def test_dom_has_sections_and_sized_images(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", f"file://{probed}"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    facts = json.loads(dom.split('<pre id="facts">', 1)[1].split("</pre>", 1)[0])
    assert facts["sections"] == ["summary", "throughput", "latency", "zero-copy", "buffers-over-time",
                                 "top-buffers", "cgroups", "alloc-stacks", "leaks", "flame", "missing-hooks",
                                 "dropped-events"]
    assert [name for name, _, _ in facts["images"]] == [
        "fig-throughput_by_path", "fig-throughput_by_buffer", "fig-latency", "fig-zero_copy", "fig-buffers_over_time"]
    assert all(width == 800 and height == 360 for _, width, height in facts["images"])
    assert facts["svgs"] and all(width > 1000 for width in facts["svgs"])

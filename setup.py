"""Packaging that cannot miss a module: every package under the four rooms is found, not listed.

The tree shows the architecture (probes/, analysis/, kernel/ beside dmabuf_top/); the installed
package keeps everything under one name, dmabuf_top. `make bpf` builds the BPF objects before the
Python files are collected, so that both a wheel and an editable install carry probes/*.bpf.o.
"""
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

# Installed package -> directory of the source tree (a room).
ROOMS = {
    "dmabuf_top": "dmabuf_top",
    "dmabuf_top.probes": "probes",
    "dmabuf_top.analysis": "analysis",
    "dmabuf_top.kernel": "kernel",
}


def room_packages():
    """Every package of every room: the room itself and each directory under it with an __init__.py."""
    packages = []
    for package, directory in ROOMS.items():
        packages.append(package)
        packages += [f"{package}.{sub}" for sub in find_packages(where=str(HERE / directory))]
    return sorted(set(packages))


class BuildWithBpf(build_py):
    def run(self):
        result = subprocess.run(["make", "-C", str(HERE), "bpf"])
        if result.returncode != 0:
            sys.exit("dmabuf-top: building the BPF objects failed (see the line above)")
        super().run()


setup(
    packages=room_packages(),
    package_dir=ROOMS,
    cmdclass={"build_py": BuildWithBpf},
)

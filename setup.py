"""Builds the BPF objects with `make bpf` before the Python files are collected,
so that both a wheel and an editable install carry probes/*.bpf.o."""
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithBpf(build_py):
    def run(self):
        result = subprocess.run(["make", "-C", str(HERE), "bpf"])
        if result.returncode != 0:
            sys.exit("dmabuf-top: building the BPF objects failed (see the line above)")
        super().run()


setup(cmdclass={"build_py": BuildWithBpf})

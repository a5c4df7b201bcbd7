"""Kernel lab: fetch a test kernel, boot it in QEMU sharing the host root, run a command."""

"""Shared test setup: markers that skip with a reason instead of failing on the wrong machine."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    not_root = pytest.mark.skip(reason="needs root (BPF): run the suite with 'make test' as root")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(not_root)

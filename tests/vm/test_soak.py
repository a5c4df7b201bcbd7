"""The churn soak, bounded: two workers (system heap and udmabuf) churn one-page buffers for 15 s while
`dmabuf-top --json` and `dmabuf-top record` watch and this process snapshots in a loop (benchmarks/soak.py
says what each check means). Its figures are printed for the record (pytest -s shows them)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks/soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_churn_soak(heap_available, udmabuf_available, tmp_path):
    figures, failures = load_soak().run_soak(15, tmp_path, workers=2, keep=3, samples=2)
    print(json.dumps(figures, sort_keys=True))
    assert failures == []
    assert figures["cycle_failures"] == 0 and figures["kept"] == 6
    assert figures["cycles"]["heap"] > 0 and figures["cycles"]["udmabuf"] > 0
    assert figures["snapshot_passes"] > 0
    assert figures["record_exit"] == 0
    # The recorder's maps were found and counted (its tracer holds them); once the churn was over, the
    # buffers gone had left its io_by_target (run_soak fails otherwise, this says it was measured).
    recorder_maps = figures["bpf_map_entries_last"]["record"]
    assert {"io_by_target", "io_by_task", "lifecycle_count"} <= set(recorder_maps), recorder_maps
    assert figures["recorder_buffer_targets_after_churn"] <= figures["kept"]
    # The recorder reports what its ring buffer lost; with it, its exports account for every buffer.
    assert figures["session_exports"] + figures["session_dropped_events"] >= figures["buffers_made"]

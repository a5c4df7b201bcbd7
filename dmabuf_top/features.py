"""What this kernel lets dmabuf-top see, found out by trial, not assumed.

`detect()` returns a FeatureReport: one Feature per attach type, iterator,
tracepoint, device and traced kernel function (hook). The live view, the
tracer and `doctor` all read it, so "not traced" is never shown as "zero".
"""
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Optional

from .alloc import cma_heap_name
from .bpf import KernelBtf, libbpf_version
from .errors import NeedsPrivilege
from .kernelfs import BUFINFO, Kallsyms, ensure_debugfs, tracefs_root, tracepoint_exists
from .probes import feature_probe as trials
from .probes.hooks import DMA_BUF_TRACEPOINTS, HOOK_POINTS

DMA_HEAP_DIR = Path("/dev/dma_heap")
UDMABUF_DEVICE = Path("/dev/udmabuf")
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")

# Capabilities (include/uapi/linux/capability.h)
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# A tracepoint and a function present on every kernel we support, to try attach types on.
PROBE_TRACEPOINT = ("sched", "sched_process_fork")
PROBE_FUNCTION = "vfs_read"

# The detail of a function hook that is in neither BTF nor kallsyms on a patched-only point: the kernel has
# no such path (the Tracer then reports its programs as not needed, not missing).
ABSENT_UNPATCHED = "absent (needs a patched kernel)"
# ... and of any other function the kernel does not have (built without it: CONFIG_AIO off...).
ABSENT = "not in this kernel"

# Benchmarks and tests only: attach kinds to report as refused whatever the kernel allows, comma-separated
# ("fentry" withholds fentry and fexit, "kprobe" kprobes and kretprobes, "tp_btf" BTF tracepoints).
# DMABUF_TOP_WITHHOLD=fentry,kprobe puts the lab kernel on the CI host's hook set (syscall tracepoints, the AIO
# syscall fallback), so the host's target can be measured under the lab's instruction-counting clock
# (benchmarks/overhead.py --exact); =tp_btf has the fexit fallbacks of tp_btf programs tried on real buffers.
WITHHOLD_ENV = "DMABUF_TOP_WITHHOLD"
WITHHELD_KINDS = {"fentry": ("fentry", "fexit"), "kprobe": ("kprobe", "kretprobe"), "tp_btf": ("tp_btf",)}


@dataclass
class Feature:
    available: bool
    via: Optional[str] = None
    detail: str = ""


@dataclass
class FeatureReport:
    kernel: Dict[str, object]
    features: Dict[str, Feature] = field(default_factory=dict)

    def available(self, name):
        feature = self.features.get(name)
        return bool(feature and feature.available)

    def to_dict(self):
        return {"kernel": self.kernel, "features": {name: asdict(f) for name, f in self.features.items()}}


# ---------------------------------------------------------------------------
# Privileges


def effective_capabilities(status_path="/proc/self/status"):
    try:
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_bpf_privileges(capabilities=None):
    capabilities = effective_capabilities() if capabilities is None else capabilities
    has = lambda cap: bool(capabilities & (1 << cap))  # noqa: E731
    return has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))


def require_bpf_privileges(what="this command"):
    if not has_bpf_privileges():
        raise NeedsPrivilege(
            f"{what} loads BPF programs and needs root (or CAP_BPF and CAP_PERFMON): run it with sudo"
        )


# ---------------------------------------------------------------------------
# Files and devices


def dma_heaps():
    try:
        return sorted(entry.name for entry in DMA_HEAP_DIR.iterdir())
    except OSError:
        return []


def heap_features(heaps) -> Dict[str, "Feature"]:
    """The two heaps dmabuf-top allocates from, each said apart: the system heap, the CMA heap (its name is
    the CMA area's: alloc.CMA_HEAP_NAMES)."""
    cma = cma_heap_name(heaps)
    system = "system" in heaps
    return {
        "system_heap": Feature(system, str(DMA_HEAP_DIR / "system") if system else None,
                               "present" if system else "no /dev/dma_heap/system (CONFIG_DMABUF_HEAPS_SYSTEM off)"),
        "cma_heap": Feature(cma is not None, str(DMA_HEAP_DIR / cma) if cma else None,
                            f"{cma}: buffers from the CMA area" if cma else
                            "no CMA heap in /dev/dma_heap (CONFIG_DMABUF_HEAPS_CMA off, or no CMA area: cma=SIZE)"),
    }


def _readable(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return True, "readable"
    except FileNotFoundError:
        return False, "absent (no debugfs, or a kernel without CONFIG_DEBUG_FS / CONFIG_DMA_SHARED_BUFFER)"
    except PermissionError:
        return False, "not readable (needs root)"
    except OSError as error:
        return False, error.strerror


# ---------------------------------------------------------------------------
# The report


def kernel_facts():
    uname = platform.uname()
    return {
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
        "btf": KERNEL_BTF.is_file(),
    }


def _explain_kprobe(feature, tracefs):
    # libbpf says only ENOENT when the kernel has no kprobe support at all; say which it is.
    if not feature.available and not Path("/sys/bus/event_source/devices/kprobe").exists() and not (
        tracefs and (tracefs / "kprobe_events").exists()
    ):
        feature.detail += " (this kernel has no kprobes: CONFIG_KPROBES is off)"
    return feature


def _from_trial(trial, via):
    return Feature(trial.ok, via if trial.ok else None, trial.detail)


def detect():
    """Try every attach type, iterator, tracepoint, device and hook this tool uses."""
    require_bpf_privileges("feature detection")
    report = FeatureReport(kernel=kernel_facts())
    features = report.features
    features["privileges"] = Feature(True, "root" if os.geteuid() == 0 else "capabilities", "CAP_BPF/CAP_PERFMON")
    features["btf"] = Feature(KERNEL_BTF.is_file(), "/sys/kernel/btf/vmlinux" if KERNEL_BTF.is_file() else None,
                              "kernel BTF" if KERNEL_BTF.is_file() else "no CONFIG_DEBUG_INFO_BTF")
    features["libbpf"] = Feature(True, "libbpf.so.1", f"version {libbpf_version()}")

    tracefs = tracefs_root()
    features["tracefs"] = Feature(tracefs is not None, str(tracefs) if tracefs else None,
                                  "mounted" if tracefs else "not mounted and could not be mounted")

    category, event = PROBE_TRACEPOINT
    features["tracepoint"] = _from_trial(trials.trial_tracepoint(category, event), "perf_event tracepoint")
    features["raw_tracepoint"] = _from_trial(trials.trial_raw_tracepoint(event), "raw_tp")
    features["tp_btf"] = _from_trial(trials.trial_tp_btf(event), "tp_btf")
    features["fentry"] = _from_trial(trials.trial_fentry([PROBE_FUNCTION])[PROBE_FUNCTION], "fentry")
    features["fexit"] = _from_trial(trials.trial_fexit(PROBE_FUNCTION), "fexit")
    features["kprobe"] = _explain_kprobe(_from_trial(trials.trial_kprobe(PROBE_FUNCTION), "kprobe"), tracefs)
    features["kretprobe"] = _explain_kprobe(
        _from_trial(trials.trial_kprobe(PROBE_FUNCTION, retprobe=True), "kretprobe"), tracefs
    )
    withhold(features, os.environ.get(WITHHOLD_ENV, ""))
    features["ringbuf"] = _from_trial(trials.trial_round_trip(), "BPF_MAP_TYPE_RINGBUF")
    for target in ("dmabuf", "task_file", "task_vma"):
        features[f"iter/{target}"] = _from_trial(trials.trial_iterator(target), f"iter/{target}")

    for name in DMA_BUF_TRACEPOINTS:
        present = tracepoint_exists(tracefs, f"dma_buf:{name}")
        features[f"tracepoint/dma_buf:{name}"] = Feature(present, "tracefs" if present else None,
                                                         "present" if present else "absent (kernels before 7.0)")

    ensure_debugfs()
    readable, detail = _readable(BUFINFO)
    features["bufinfo"] = Feature(readable, str(BUFINFO) if readable else None, detail)

    heaps = dma_heaps()
    features["heaps"] = Feature(bool(heaps), str(DMA_HEAP_DIR) if heaps else None,
                                ", ".join(heaps) if heaps else "no /dev/dma_heap (CONFIG_DMABUF_HEAPS off)")
    features.update(heap_features(heaps))
    has_udmabuf = UDMABUF_DEVICE.exists()
    features["udmabuf"] = Feature(has_udmabuf, str(UDMABUF_DEVICE) if has_udmabuf else None,
                                  "present" if has_udmabuf else "no /dev/udmabuf (CONFIG_UDMABUF off)")

    with KernelBtf() as btf:
        _detect_hooks(features, btf, Kallsyms.from_file().names, tracefs)
    return report


def withhold(features, kinds):
    """Report the attach kinds named in `kinds` (WITHHOLD_ENV's value) as refused: every hook then plans
    without them, as on a kernel that refuses them."""
    for kind in filter(None, (part.strip() for part in kinds.split(","))):
        if kind not in WITHHELD_KINDS:
            raise ValueError(f"{WITHHOLD_ENV}: unknown attach kind {kind!r} (known: {', '.join(WITHHELD_KINDS)})")
        for name in WITHHELD_KINDS[kind]:
            features[name] = Feature(False, None, f"withheld ({WITHHOLD_ENV}={kinds})")


def _detect_hooks(features, btf, kallsyms, tracefs):
    """Per traced function of the hook catalogue: fentry if the kernel accepts it, else kprobe; per tracepoint:
    whether tracefs has it."""
    functions = [fn for hook in HOOK_POINTS for fn in hook.functions]
    in_btf = [fn for fn in functions if btf.has_function(fn)]
    fentry_trials = trials.trial_fentry(in_btf) if features["fentry"].available else {}
    for hook in HOOK_POINTS:
        for function in hook.functions:
            features[f"fn/{function}"] = _hook_function(hook, function, features, in_btf, kallsyms, fentry_trials)
        for spec in hook.tracepoints:
            if spec.startswith("dma_buf:"):
                continue  # reported once, with the other dma_buf tracepoints
            present = tracepoint_exists(tracefs, spec)
            features[f"tracepoint/{spec}"] = Feature(present, "tracefs" if present else None,
                                                     f"{hook.name}: {'present' if present else 'absent'}")


def _hook_function(hook, function, features, in_btf, kallsyms, fentry_trials):
    if function not in in_btf and function not in kallsyms:
        return Feature(False, None, ABSENT_UNPATCHED if hook.patched_only else ABSENT)
    if function not in in_btf:
        fentry_why = "not in BTF"
    elif not features["fentry"].available:
        fentry_why = features["fentry"].detail
    elif fentry_trials[function].ok:
        return Feature(True, "fentry", f"{hook.name}: fentry load+attach succeeded")
    else:
        fentry_why = fentry_trials[function].detail
    if function not in kallsyms:
        kprobe_why = "not in kallsyms"
    elif not features["kprobe"].available:
        kprobe_why = features["kprobe"].detail.split(" ")[0]
    else:
        trial = trials.trial_kprobe(function)
        if trial.ok:
            return Feature(True, "kprobe", f"{hook.name}: kprobe attach succeeded (fentry: {fentry_why})")
        kprobe_why = trial.detail
    return Feature(False, None, f"{hook.name}: fentry refused ({fentry_why}), kprobe refused ({kprobe_why})")

"""Facts the kernel publishes as files: tracefs, debugfs (dma_buf/bufinfo), /proc/kallsyms, superblock
magics and the kernel's own encoding of device numbers.

Below the BPF binding: it imports nothing of dmabuf_top but the error types, so the binding
(dmabuf_top.bpf), feature detection and the decoders can all lean on it without importing each other.
"""
import bisect
import functools
import gzip
import os
import platform
from pathlib import Path

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
DEBUGFS = Path("/sys/kernel/debug")
BUFINFO = DEBUGFS / "dma_buf" / "bufinfo"
KALLSYMS = "/proc/kallsyms"

# Superblock magics worth a name in output (include/uapi/linux/magic.h): what statfs' f_type and the
# tracer's file keys (s_magic) carry.
SUPERBLOCK_MAGICS = {
    0x444D4142: "dmabuf", 0x01021994: "tmpfs", 0xEF53: "ext4", 0x58465342: "xfs", 0x9123683E: "btrfs",
    0xF2F52010: "f2fs", 0x50495045: "pipefs", 0x534F434B: "sockfs", 0x6A656A63: "virtiofs/fuse",
    0x65735546: "fuse",
}


def filesystem_name(magic):
    """The name of a superblock magic ("ext4"), or the magic in hex when it has none here."""
    return SUPERBLOCK_MAGICS.get(magic, f"0x{magic:x}")


def kernel_dev_to_user(dev):
    """The kernel's internal dev_t (major << 20 | minor) -> the st_dev user space sees (new_encode_dev)."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


# ---------------------------------------------------------------------------
# tracefs and debugfs


def tracefs_root(mount_if_missing=True):
    """Where tracefs is, mounting it at /sys/kernel/tracing if nothing is mounted (as perf does)."""
    for candidate in TRACEFS_CANDIDATES:
        if (candidate / "events").is_dir():
            return candidate
    if mount_if_missing and os.geteuid() == 0 and TRACEFS_CANDIDATES[0].is_dir():
        if os.system(f"mount -t tracefs nodev {TRACEFS_CANDIDATES[0]} 2>/dev/null") == 0:
            return TRACEFS_CANDIDATES[0]
    return None


def tracepoint_exists(tracefs, spec):
    """Whether tracepoint "category:event" is in the tracefs at `tracefs` (None: no tracefs, so no)."""
    category, event = spec.split(":", 1)
    return tracefs is not None and (tracefs / "events" / category / event).is_dir()


def ensure_debugfs():
    """Mount debugfs at /sys/kernel/debug if it is not (bufinfo lives there); True if mounted."""
    if os.path.ismount(DEBUGFS):
        return True
    if os.geteuid() == 0 and DEBUGFS.is_dir():
        return os.system(f"mount -t debugfs nodev {DEBUGFS} 2>/dev/null") == 0
    return False


# ---------------------------------------------------------------------------
# /proc/kallsyms


class Kallsyms:
    """The kernel's symbols: names (every type), and address -> function for text symbols.

    Addresses are real only for root (kptr_restrict shows others zeros); names are there for all."""

    def __init__(self, entries, names=None):
        """entries: (address, name) of text symbols; names: every symbol name (default: the entries')."""
        self._entries = sorted(entries)
        self._addresses = [address for address, _ in self._entries]
        self.names = frozenset(names) if names is not None else frozenset(name for _, name in self._entries)

    @classmethod
    def from_file(cls, path=KALLSYMS):
        """Read kallsyms; an unreadable file gives an empty table (nothing is known, nothing is resolved)."""
        entries, names = [], set()
        try:
            with open(path) as kallsyms:
                for line in kallsyms:
                    parts = line.split()
                    if len(parts) < 3:
                        continue
                    names.add(parts[2])
                    if parts[1] in "tTwW":
                        entries.append((int(parts[0], 16), parts[2]))
        except OSError:
            pass
        return cls(entries, names)

    def __contains__(self, name):
        return name in self.names

    def name(self, address):
        """The function holding `address`, or the address in hex when none does (or addresses are hidden)."""
        index = bisect.bisect_right(self._addresses, address) - 1
        if index < 0 or not self._entries[index][0]:
            return f"0x{address:x}"
        return self._entries[index][1]


def kallsyms_address(name, path=KALLSYMS):
    """The address of kernel symbol `name` of any type (data too, with CONFIG_KALLSYMS_ALL), or None when it is
    not there or addresses are hidden (not root: kptr_restrict shows zeros)."""
    try:
        with open(path) as kallsyms:
            for line in kallsyms:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return int(parts[0], 16) or None
    except (OSError, ValueError):
        pass
    return None


# ---------------------------------------------------------------------------
# the running kernel's config


def kernel_config_places(release=None):
    """Where the running kernel's config may be: /boot/config-<release> (distributions), /proc/config.gz
    (CONFIG_IKCONFIG_PROC, the lab's arm64 kernel)."""
    return (Path("/boot") / f"config-{release or platform.release()}", Path("/proc/config.gz"))


@functools.lru_cache(maxsize=None)
def kernel_config_option(name, places=None):
    """The value of CONFIG_<name> in the running kernel's config ("y", "48", ...), or None when the option is
    not set or no config is found."""
    for place in places or kernel_config_places():
        try:
            opener = gzip.open if str(place).endswith(".gz") else open
            with opener(place, "rt") as config:
                prefix = f"CONFIG_{name}="
                return next((line[len(prefix):].strip().strip('"') for line in config if line.startswith(prefix)),
                            None)
        except OSError:
            continue
    return None



def has_cgroups(proc=Path("/proc")) -> bool:
    """The kernel was built with cgroups (CONFIG_CGROUPS): /proc/PID/cgroup exists exactly then, and so does
    bpf_get_current_cgroup_id for tracing programs (the config file itself is often absent: the lab's kernels)."""
    return (proc / "self" / "cgroup").exists()

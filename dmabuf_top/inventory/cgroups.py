"""Which cgroup (v2) a process is in, and a short form a person recognises: "foo.service", "docker:3f2a1b9c0d4e".

A cgroup path is whatever names its creators chose: any byte but "/" and NUL (the kernel refuses a newline in
a cgroup's name since 5.9, not before). Paths stay raw bytes here, like buffer names; every view escapes them
(text.terminal_safe, html.escape, JSON's *_hex twin).

Read from /proc/PID/cgroup, the "0::" line (the unified hierarchy). A process that exited between the holder
pass and this read, or a kernel with only cgroup v1 controllers, gives None: its bytes go under an
"unknown cgroup" row, never dropped.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional

PROC = "/proc"
UNIFIED_PREFIX = b"0::"
DELETED_SUFFIX = b" (deleted)"  # the kernel appends it to the path of a cgroup removed while the task was in it

# Container runtimes as systemd scopes (the systemd cgroup driver) or as plain directories (cgroupfs driver).
_CONTAINER_SCOPES = (
    (re.compile(rb"^docker-([0-9a-f]{12,64})\.scope$"), "docker"),
    (re.compile(rb"^libpod-(?:conmon-)?([0-9a-f]{12,64})\.scope$"), "podman"),
    (re.compile(rb"^cri-containerd-([0-9a-f]{12,64})\.scope$"), "containerd"),
    (re.compile(rb"^crio-(?:conmon-)?([0-9a-f]{12,64})\.scope$"), "cri-o"),
)
_CONTAINER_PARENTS = {b"docker": "docker", b"libpod_parent": "podman", b"machine.slice": "podman"}
_BARE_ID = re.compile(rb"^(?:[0-9a-f]{64})$")
_POD = re.compile(rb"^kubepods(?:-[a-z]+)*-pod([0-9a-f_]{8,})\.slice$|^pod([0-9a-f-]{8,})$")
SHORT_ID = 12  # as `docker ps` shows a container id


def parse_proc_cgroup(data: bytes) -> Optional[bytes]:
    """The unified-hierarchy path in a /proc/PID/cgroup file, or None (cgroup v1 only)."""
    for line in data.split(b"\n"):
        if line.startswith(UNIFIED_PREFIX):
            return line[len(UNIFIED_PREFIX):]
    return None


def read_cgroup(pid: int, proc: str = PROC) -> Optional[bytes]:
    """Process `pid`'s cgroup v2 path (raw bytes), or None when it exited or the kernel has no cgroup v2."""
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as file:
            return parse_proc_cgroup(file.read())
    except OSError:  # exited mid-scan (ENOENT, ESRCH), or hidden from us (hidepid)
        return None


def read_cgroups(pids: Iterable[int], proc: str = PROC) -> Dict[int, Optional[bytes]]:
    return {pid: read_cgroup(pid, proc) for pid in pids}


def short_name(path: Optional[bytes]) -> str:
    """The name a person knows a cgroup by; the path itself (escaped by the caller) stays beside it.

    "/system.slice/foo.service" -> "foo.service"; a container -> "RUNTIME:ID12" (the id shortened as
    `docker ps` does) whatever the driver; a Kubernetes pod's cgroup -> "pod:UID"; "/user.slice/user-1000.slice/
    user@1000.service/app.slice/app-firefox-1234.scope" -> "app-firefox-1234.scope"; "/" -> "root"; anything
    else -> its last component. Raw bytes in, str out (undecodable bytes kept as surrogates: escape before showing).
    """
    if path is None:
        return "unknown"
    if path.endswith(DELETED_SUFFIX):
        return short_name(path[: -len(DELETED_SUFFIX)]) + " (deleted)"
    parts = [part for part in path.split(b"/") if part]
    if not parts:
        return "root"
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        for pattern, runtime in _CONTAINER_SCOPES:
            match = pattern.match(part)
            if match:
                return f"{runtime}:{_text(match.group(1)[:SHORT_ID])}"
        if _BARE_ID.match(part):
            parent = parts[index - 1] if index else b""
            runtime = _CONTAINER_PARENTS.get(parent, "containerd" if _is_pod(parent) else "container")
            return f"{runtime}:{_text(part[:SHORT_ID])}"
    last = parts[-1]
    if _is_pod(last):
        match = _POD.match(last)
        return f"pod:{_text(match.group(1) or match.group(2))}"
    return _text(last)  # a systemd unit ("foo.service", "session-3.scope") or a hand-made cgroup's own name


def _is_pod(part: bytes) -> bool:
    return bool(_POD.match(part))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")

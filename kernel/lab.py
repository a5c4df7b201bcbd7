"""Boot a kernel in QEMU on the host's own root filesystem and run one command.

One boot = one command. The guest sees the host's / read-only over virtio-fs,
fresh tmpfs where a read-only root would get in the way, an optional results
directory shared writable at the same path as on the host, and an ext4 scratch
disk on emulated NVMe at /mnt/scratch (page cache, O_DIRECT and device DMA all
behave like on real storage). The command's output and exit status come back
over two virtio-serial ports, apart from the kernel's console chatter.

A guest of another architecture (`arch=ARM64` on an x86-64 host) runs under
TCG on a root of its own that kernel/userland.py assembles from Debian's
packages, with the project's directory shared read-only at its host path.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from dmabuf_top.errors import DmabufTopError, MissingDependency, NeedsPrivilege

from . import build, initramfs, userland
from .arch import ARM64, X86_64, GuestArch, is_native
from .fetch import Kernel, fetch_kernel, image_release
from .kconfig import find_kernel_config

DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 2
DEFAULT_SCRATCH_MB = 1024
SCRATCH_MOUNT = "/mnt/scratch"

# The guest's root is read-only: Python must not try to write bytecode there,
# nor pytest its cache (the run would pass but warn about it).
GUEST_ENV_DEFAULTS = {"PYTHONDONTWRITEBYTECODE": "1", "PYTEST_ADDOPTS": "-p no:cacheprovider"}

VIRTIOFSD_PLACES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/lib/virtiofsd")


class GuestTimeout(DmabufTopError):
    """The guest did not finish in time; qemu and virtiofsd were stopped."""

    exit_code = 124


class GuestFailed(DmabufTopError):
    """The guest ended without reporting the command's exit code (panic, bad kernel, init error)."""

    exit_code = 125


class GuestPanickedBeforeCommand(GuestFailed):
    """The guest kernel failed while booting, before the command started: none of it ran."""

    def __init__(self, message, console_kept):
        super().__init__(message)
        self.console_kept = console_kept


@dataclass
class GuestResult:
    exit_code: int
    output: str  # the command's stdout and stderr, interleaved as written
    console: str  # the kernel console (boot messages, oopses, init's own errors)
    duration: float  # seconds from starting qemu to its exit
    kernel: Path
    kernel_release: str
    accel: str  # "kvm" or "tcg"


# ---------------------------------------------------------------- host programs


def find_qemu(arch: GuestArch = X86_64) -> str:
    path = shutil.which(arch.qemu)
    if path is None:
        raise MissingDependency(
            f"{arch.qemu} not found: the kernel lab needs QEMU (`apt-get install {arch.qemu_package}`)")
    return path


def find_virtiofsd() -> str:
    for place in (shutil.which("virtiofsd"), *VIRTIOFSD_PLACES):
        if place and os.access(place, os.X_OK):
            return place
    raise MissingDependency(
        "virtiofsd not found: the kernel lab shares the host root with it "
        "(`apt-get install virtiofsd`, or qemu-system-common on Debian 12)"
    )


def find_mkfs_ext4() -> str:
    path = shutil.which("mkfs.ext4") or next(
        (p for p in ("/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise MissingDependency("mkfs.ext4 not found: the lab's scratch disk needs it (`apt-get install e2fsprogs`)")
    return path


def virtiofsd_args(program: str, socket: Path, source: Path, dialect: str) -> list:
    """Command line for the C virtiofsd (qemu <= 7) or the Rust one (its successor)."""
    if dialect == "rust":
        return [program, f"--socket-path={socket}", f"--shared-dir={source}",
                "--cache=always", "--sandbox=chroot", "--announce-submounts"]
    return [program, f"--socket-path={socket}", "-o", f"source={source}",
            "-o", "cache=always", "-o", "sandbox=chroot", "-o", "announce_submounts"]


def virtiofsd_dialect(program: str) -> str:
    help_text = subprocess.run([program, "--help"], capture_output=True, text=True).stdout
    return "rust" if "--shared-dir" in help_text else "c"


# ---------------------------------------------------------------- acceleration


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def choose_accel() -> str:
    """KVM when the host offers it, TCG otherwise; DMABUF_TOP_ACCEL=kvm|tcg decides for us.

    A /dev/kvm that exists but cannot run a stock kernel (some nested or
    paravirtual hosts) is caught at boot: see run_in_guest's retry."""
    forced = os.environ.get("DMABUF_TOP_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    if forced:
        raise DmabufTopError(f"DMABUF_TOP_ACCEL={forced!r}: expected kvm or tcg")
    if _kvm_known_broken():
        return "tcg"
    return "kvm" if kvm_usable() else "tcg"


_KVM_BROKEN_THIS_PROCESS = False
# KVM found unable to run the guest, remembered for this boot of the machine (its boot_id) so that
# every later `dmabuf-top vm` goes straight to TCG instead of losing seconds on a failing KVM boot.
KVM_UNUSABLE_MARK = Path.home() / ".cache" / "dmabuf-top" / "kvm-unusable"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _kvm_known_broken() -> bool:
    if _KVM_BROKEN_THIS_PROCESS:
        return True
    try:
        first_line = KVM_UNUSABLE_MARK.read_text().splitlines()[:1]
    except OSError:
        return False
    return bool(first_line) and bool(_boot_id()) and first_line[0] == _boot_id()


def _mark_kvm_broken(why: str = "") -> None:
    global _KVM_BROKEN_THIS_PROCESS
    _KVM_BROKEN_THIS_PROCESS = True
    try:
        KVM_UNUSABLE_MARK.parent.mkdir(parents=True, exist_ok=True)
        KVM_UNUSABLE_MARK.write_text(f"{_boot_id()}\n{why.strip()}\n")
    except OSError:
        pass  # remembered in this process only


def looks_like_kvm_failure(qemu_log: str) -> bool:
    text = qemu_log.lower()
    return "kvm" in text or "failed to set msr" in text


# qemu's words when KVM could not run the guest but qemu stays alive with the guest paused (a paravirtual
# /dev/kvm: "KVM internal error. Suberror: 1 ... emulation failure"), so only its log tells.
KVM_STALL_MARKERS = ("KVM internal error", "KVM: entry failed")


class KvmUnusable(DmabufTopError):
    """KVM stopped the guest (qemu stays alive, the guest paused): the boot is given up and done with TCG."""


# ---------------------------------------------------------------- qemu command line


# Reserved for the CMA heap on arm64 (where camera and codec buffers come from on real boards).
ARM64_CMA = "cma=64M"


def kernel_command_line(extra: str = "", arch: GuestArch = X86_64) -> str:
    parts = [
        f"console={arch.console}",
        "rdinit=/init",
        "panic=-1",  # with -no-reboot a panic ends qemu instead of hanging
        "quiet",
    ]
    if arch == ARM64:
        parts.append(ARM64_CMA)
    else:
        parts += _X86_COMMAND_LINE
    if extra:
        parts.append(extra)
    return " ".join(parts)


_X86_COMMAND_LINE = [
        "8250.nr_uarts=1",
        "i8042.noaux",
        "i8042.nokbd",
        "tsc=reliable",  # TCG's TSC looks unstable to the watchdog; the warning is noise
        # A starved TCG vCPU (a loaded host) can miss the boot-time timer IRQ check, which then
        # panics with "IO-APIC + timer doesn't work!" (seen here with three guests running).
        "no_timer_check",
]


# QEMU's instruction-counting clock: one virtual nanosecond per guest instruction (shift=0), the guest never
# slowed to real time (align=off), idle time skipped (sleep=on). A loop timing itself then reads instructions,
# whatever the host's load. TCG only, and with one vCPU (several share the one clock).
ICOUNT = "shift=0,align=off,sleep=on"


@dataclass
class QemuPlan:
    """Everything qemu needs for one boot, kept apart so it can be checked without booting."""

    kernel: Path
    initrd: Path
    workdir: Path
    root_socket: Path
    results_socket: Optional[Path] = None
    scratch_image: Optional[Path] = None
    scratch_direct: bool = True
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS
    accel: str = "tcg"
    append: str = ""
    icount: bool = False
    arch: GuestArch = X86_64
    source_socket: Optional[Path] = None  # the project's directory, for a guest on a root of its own

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def output_log(self) -> Path:
        return self.workdir / "output.log"

    @property
    def status_file(self) -> Path:
        return self.workdir / "status"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"


def qemu_args(qemu: str, plan: QemuPlan) -> list:
    # One TCG thread for all vCPUs: with thread=multi, attaching BPF trampolines (live kernel text patching)
    # while another vCPU ran the patched code crashed the guest ("RIP: 0010:0x0" in a read(), then an int3
    # Oops in vfs_read+0x5: "Fatal exception in interrupt") in 3 of ~7 soak runs; 0 of 5 with thread=single.
    if plan.icount and plan.accel != "tcg":
        raise DmabufTopError("the instruction-counting clock (icount) needs TCG, not KVM")
    # An emulated arm64 CPU signs pointers with QEMU's own cheap algorithm (pauth-impdef) instead of
    # the architected QARMA, which costs TCG much of its speed.
    cpu = "max,pauth-impdef=on" if plan.arch == ARM64 else "max"
    accel = ["-accel", "kvm", "-cpu", "host"] if plan.accel == "kvm" else [
        "-accel", "tcg,thread=single", "-cpu", cpu]
    args = [
        qemu, "-name", "dmabuf-top-lab",
        *accel,
        "-smp", str(plan.cpus),
        "-m", f"{plan.memory_mb}M",
        # vhost-user-fs needs guest memory the virtiofsd processes can map.
        "-object", f"memory-backend-memfd,id=mem,size={plan.memory_mb}M,share=on",
        "-machine", f"{plan.arch.qemu_machine},memory-backend=mem",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        *(["-vga", "none"] if plan.arch == X86_64 else []),
        "-no-reboot",
        "-kernel", str(plan.kernel),
        "-initrd", str(plan.initrd),
        "-append", kernel_command_line(plan.append, plan.arch),
        "-chardev", f"file,id=console,path={plan.console_log}",
        "-serial", "chardev:console",
        "-device", "virtio-serial-pci,id=ports",
        "-chardev", f"file,id=output,path={plan.output_log}",
        "-device", f"virtserialport,bus=ports.0,chardev=output,name={initramfs.OUTPUT_PORT}",
        "-chardev", f"file,id=status,path={plan.status_file}",
        "-device", f"virtserialport,bus=ports.0,chardev=status,name={initramfs.STATUS_PORT}",
        "-chardev", f"socket,id=rootfs,path={plan.root_socket}",
        "-device", f"vhost-user-fs-pci,chardev=rootfs,tag={initramfs.ROOT_TAG}",
    ]
    if plan.icount:
        args += ["-icount", ICOUNT]
    if plan.source_socket is not None:
        args += [
            "-chardev", f"socket,id=sourcefs,path={plan.source_socket}",
            "-device", f"vhost-user-fs-pci,chardev=sourcefs,tag={initramfs.SOURCE_TAG}",
        ]
    if plan.results_socket is not None:
        args += [
            "-chardev", f"socket,id=resultsfs,path={plan.results_socket}",
            "-device", f"vhost-user-fs-pci,chardev=resultsfs,tag={initramfs.RESULTS_TAG}",
        ]
    if plan.scratch_image is not None:
        cache = "none" if plan.scratch_direct else "writeback"
        args += [
            "-drive", f"file={plan.scratch_image},if=none,id=scratch,format=raw,cache={cache}",
            "-device", "nvme,serial=scratch0,drive=scratch",
        ]
    return args


# ---------------------------------------------------------------- scratch disk


def make_scratch_disk(path: Path, size_mb: int) -> Path:
    """A sparse file holding a fresh ext4 filesystem; costs disk only as it is written."""
    with open(path, "wb") as image:
        image.truncate(size_mb * 1024 * 1024)
    # Initialise inode tables now: otherwise ext4lazyinit writes them from inside
    # the guest in the background, which would show up in I/O experiments.
    result = subprocess.run(
        [find_mkfs_ext4(), "-F", "-q", "-L", "scratch", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(path)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise DmabufTopError(f"mkfs.ext4 on the scratch image failed: {result.stderr.strip()}")
    return path


def supports_o_direct(path: Path) -> bool:
    """cache=none makes qemu open the image with O_DIRECT, which tmpfs refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


# ---------------------------------------------------------------- processes


class Daemons:
    """The processes of one boot, each in its own process group so that a kill
    takes its children too; stop() is safe to call more than once."""

    def __init__(self):
        self.processes = []

    def start(self, args: Sequence[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                list(args), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def stop(self, grace: float = 2.0) -> None:
        for process in self.processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def start_virtiofsd(daemons: Daemons, source: Path, socket: Path, log: Path) -> subprocess.Popen:
    program = find_virtiofsd()
    process = daemons.start(virtiofsd_args(program, socket, source, virtiofsd_dialect(program)), log)
    deadline = time.monotonic() + 10
    while not socket.exists():
        if process.poll() is not None:
            raise DmabufTopError(f"virtiofsd for {source} exited: {_tail(log, 3)}")
        if time.monotonic() > deadline:
            raise DmabufTopError(f"virtiofsd for {source} did not open its socket within 10 s")
        time.sleep(0.01)
    return process


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- the run


def resolve_kernel(kernel: Optional[Path], arch: GuestArch = X86_64, stock: bool = False) -> Kernel:
    """The given image (any bzImage or arm64 Image: a distro's or a self-built one) or the default one."""
    if kernel is None:
        return default_kernel(arch, stock)
    path = Path(kernel).expanduser()
    if not path.is_file():
        raise DmabufTopError(f"kernel image {path} does not exist")
    release = image_release(path)
    return Kernel(release or path.name, path.resolve(), find_kernel_config(path), release)


def default_kernel(arch: GuestArch = X86_64, stock: bool = False, cache_dir: Optional[Path] = None) -> Kernel:
    """What the lab boots without --kernel: Debian's cloud kernel (fetched once, cached), except on arm64, where
    the lab's own kernel (`make kernel-arm64`) is booted once built, unless `stock` asks for Debian's.

    Debian's amd64 kernel has every dma-buf feature the lab is for; its arm64 kernel has no dma-buf heaps
    (CONFIG_DMABUF_HEAPS is not set), so neither the system nor the CMA heap exists there, and the arm64 lab
    exists for those. Debian's arm64 kernel is fetched either way: it names the version the lab's own is
    built from."""
    debian = fetch_kernel(arch=arch, cache_dir=cache_dir)
    if arch != ARM64 or stock:
        return debian
    built = build.cached_build(cache_dir, arch=arch)
    if built is None:
        print(f"dmabuf-top vm: booting Debian's arm64 kernel {debian.version}, which has no dma-buf heaps; "
              "'make kernel-arm64' builds the lab's own with the system and CMA heaps", file=sys.stderr, flush=True)
        return debian
    release = image_release(built.vmlinuz)
    return Kernel(release or built.key, built.vmlinuz, built.config, release)


# Directories the guest replaces wholesale: the host's content is not there. (A working
# directory under /tmp, /run or /var/tmp is carried through their tmpfs by init.)
GUEST_PRIVATE_DIRS = ("/dev", "/proc", "/sys")


def _check_cwd_visible(cwd: Path, results_path: Optional[str]) -> None:
    if results_path and (cwd == Path(results_path) or Path(results_path) in cwd.parents):
        return
    for private in map(Path, GUEST_PRIVATE_DIRS):
        if cwd == private or private in cwd.parents:
            raise DmabufTopError(
                f"cannot run in {cwd}: {private} is the guest's own, so the host's files there are not "
                "visible; run from elsewhere or pass that directory as the results directory"
            )


def _check_cwd_in_shares(cwd: Path, source_dir: Path, results_path: Optional[str]) -> None:
    """A guest on a root of its own sees only the project's directory and the results directory of the host's."""
    for shared in filter(None, (source_dir, results_path)):
        if cwd == Path(shared) or Path(shared) in cwd.parents:
            return
    raise DmabufTopError(
        f"cannot run in {cwd}: a guest of another architecture sees only the project's directory "
        f"({source_dir}) and the results directory of this machine; run from inside the project"
    )


@dataclass(frozen=True)
class LabRun:
    """One run_in_guest call, settled: what every boot attempt of it (KVM, then TCG; once more after a
    panic while booting) shares. Each attempt makes its own work directory and QemuPlan from it."""

    qemu: str
    kernel: Kernel
    base_initramfs: Path
    job: initramfs.GuestJob
    timeout: float
    memory_mb: int
    cpus: int
    scratch_mb: int
    append: str
    icount: bool
    on_output: Optional[Callable[[bytes], None]]
    arch: GuestArch = X86_64
    root_dir: Path = Path("/")  # what virtiofs shares as the guest's root
    source_dir: Optional[Path] = None  # shared read-only at the same path (job.source_path)

    def plan(self, workdir: Path, accel: str) -> QemuPlan:
        """This run's qemu plan for one boot in `workdir` (writes the initrd and the scratch disk there)."""
        plan = QemuPlan(
            kernel=self.kernel.vmlinuz,
            initrd=initramfs.write_initrd(self.base_initramfs, self.job, workdir / "initrd"),
            workdir=workdir,
            root_socket=workdir / "root.sock",
            results_socket=workdir / "results.sock" if self.job.results_path else None,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
            accel=accel,
            append=self.append,
            icount=self.icount,
            arch=self.arch,
            source_socket=workdir / "source.sock" if self.source_dir is not None else None,
        )
        if self.scratch_mb > 0:
            plan.scratch_image = make_scratch_disk(workdir / "scratch.img", self.scratch_mb)
            plan.scratch_direct = supports_o_direct(plan.scratch_image)
        return plan


def guest_cpus(asked: Optional[int], icount: bool) -> int:
    """The vCPUs asked for, else one under the instruction-counting clock (which all vCPUs share), else two."""
    if asked is not None:
        return asked
    return 1 if icount else DEFAULT_CPUS


def run_in_guest(
    argv: Sequence[str],
    *,
    kernel: Optional[Path] = None,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    cpus: Optional[int] = None,
    results_dir: Optional[Path] = None,
    scratch_mb: int = DEFAULT_SCRATCH_MB,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    on_output: Optional[Callable[[bytes], None]] = None,
    append: str = "",
    icount: bool = False,
    arch: GuestArch = X86_64,
    stock: bool = False,
) -> GuestResult:
    """Boot `kernel` (default: the cached Debian cloud kernel), run argv, power off.

    `env` is the command's whole environment besides PATH, HOME and TERM: the
    host's is not copied in. `cwd` defaults to the host's current directory
    (the same path exists in the guest). `on_output` gets the command's output
    as it arrives. `scratch_mb=0` attaches no scratch disk. `icount` boots under
    TCG with the instruction-counting clock and, unless `cpus` says otherwise,
    one vCPU (else DEFAULT_CPUS). `arch` other than the host's boots that
    architecture's kernel (TCG) on the root kernel/userland.py assembles, with
    the project's directory shared read-only. Raises GuestTimeout after
    `timeout` seconds, with qemu and virtiofsd stopped. Without `kernel`, `stock` boots Debian's kernel even
    where the lab's own is the default (arm64: see default_kernel).
    """
    if not argv:
        raise DmabufTopError("no command given to run in the guest")
    qemu = find_qemu(arch)
    if os.geteuid() != 0:
        raise NeedsPrivilege("the kernel lab runs virtiofsd, which needs root: run it as root")
    if icount and os.environ.get("DMABUF_TOP_ACCEL", "").strip().lower() == "kvm":
        raise DmabufTopError("--icount needs TCG, but DMABUF_TOP_ACCEL=kvm asks for KVM")
    chosen = resolve_kernel(kernel, arch, stock)
    native = is_native(arch)
    job = initramfs.GuestJob(
        argv=list(argv),
        cwd=str(Path(cwd or os.getcwd()).resolve()),
        env={**GUEST_ENV_DEFAULTS, **(env or {})},
        home=str(Path.home()) if native else "/root",
        results_path=str(Path(results_dir).resolve()) if results_dir is not None else None,
        scratch=scratch_mb > 0,
    )
    if job.results_path is not None:
        Path(job.results_path).mkdir(parents=True, exist_ok=True)
    _check_cwd_visible(Path(job.cwd), job.results_path)
    root_dir, source_dir, busybox = Path("/"), None, None
    if not native:
        root_dir = userland.assemble_userland(arch)
        mapping = userland.package_mapping()
        source_dir = userland.shared_source_root(mapping)
        job.source_path = str(source_dir)
        job.env = {**job.env, userland.PACKAGES_VARIABLE: userland.encode_mapping(mapping)}
        _check_cwd_in_shares(Path(job.cwd), source_dir, job.results_path)
        userland.make_mount_points(root_dir, [p for p in (job.source_path, job.results_path) if p],
                                   initramfs.TMPFS_COVERED)
        busybox = userland.guest_busybox(root_dir)
    run = LabRun(
        qemu=qemu, kernel=chosen, base_initramfs=initramfs.build_base_initramfs(busybox=busybox), job=job,
        timeout=timeout, memory_mb=memory_mb, cpus=guest_cpus(cpus, icount),
        scratch_mb=scratch_mb, append=append, icount=icount, on_output=on_output,
        arch=arch, root_dir=root_dir, source_dir=source_dir,
    )

    # KVM runs only a guest of the host's own architecture.
    result = _boot_once_more_after_a_boot_panic(run, "tcg" if icount or not native else choose_accel())
    if result is None and os.environ.get("DMABUF_TOP_ACCEL", "").strip().lower() == "kvm":
        raise GuestFailed("KVM was asked for (DMABUF_TOP_ACCEL=kvm) but qemu could not run the guest with it")
    if result is None:  # KVM advertised but unable to run this kernel: once more without it
        result = _boot_once_more_after_a_boot_panic(run, "tcg")
    return result


def _boot_once_more_after_a_boot_panic(run: LabRun, accel: str) -> Optional[GuestResult]:
    try:
        return _boot(run, accel)
    except GuestPanickedBeforeCommand as failure:
        # The emulated guest kernel now and then oopses while booting on a loaded host (seen: "Fatal
        # exception in interrupt" at 1.1 s, not reproducible in 12 quiet boots). Nothing of the command
        # ran, so one more boot is safe; a second failure is reported as it is.
        print(f"dmabuf-top vm: {failure} (before the command started; console kept in "
              f"{failure.console_kept or 'nowhere: not writable'}): booting once more", file=sys.stderr, flush=True)
        return _boot(run, accel)


def _boot(run: LabRun, accel: str) -> Optional[GuestResult]:
    """One boot; None when KVM turned out unable to run the guest (the caller then boots with TCG)."""
    with tempfile.TemporaryDirectory(prefix="dmabuf-top-lab-") as workdir:
        workdir = Path(workdir)
        plan = run.plan(workdir, accel)
        for log in (plan.console_log, plan.output_log, plan.status_file):
            log.touch()

        daemons = Daemons()
        try:
            start_virtiofsd(daemons, run.root_dir, plan.root_socket, workdir / "virtiofsd-root.log")
            if plan.source_socket is not None:
                start_virtiofsd(daemons, run.source_dir, plan.source_socket, workdir / "virtiofsd-source.log")
            if plan.results_socket is not None:
                start_virtiofsd(daemons, Path(run.job.results_path), plan.results_socket,
                                workdir / "virtiofsd-results.log")
            started = time.monotonic()
            qemu_process = daemons.start(qemu_args(run.qemu, plan), plan.qemu_log)
            try:
                _wait(qemu_process, plan, run.timeout, run.on_output, started, daemons)
            except KvmUnusable as stall:
                if plan.status_file.read_text(errors="replace").strip():
                    raise GuestFailed(f"KVM stopped the guest after its command started ({stall})") from None
                _mark_kvm_broken(str(stall))
                return None
            duration = time.monotonic() - started
        finally:
            daemons.stop()

        status = plan.status_file.read_text(errors="replace")
        console = plan.console_log.read_text(errors="replace")
        qemu_log = plan.qemu_log.read_text(errors="replace")
        exit_code = _parse_status(status)
        if exit_code is None:
            if accel == "kvm" and not console.strip() and looks_like_kvm_failure(qemu_log):
                _mark_kvm_broken(_tail(plan.qemu_log, 1))
                return None
            message = _failure_message(status, console, qemu_log, qemu_process.returncode)
            if panicked_before_command(status, console):
                raise GuestPanickedBeforeCommand(message, _keep_console(console))
            if kernel_failed(console):
                message += f" (console kept in {_keep_console(console) or 'nowhere: not writable'})"
            raise GuestFailed(message)
        return GuestResult(
            exit_code=exit_code,
            output=plan.output_log.read_bytes().decode(errors="replace"),
            console=console,
            duration=duration,
            kernel=run.kernel.vmlinuz,
            kernel_release=run.kernel.release,
            accel=accel,
        )


def _wait(process, plan: QemuPlan, timeout: float, on_output, started: float, daemons: Daemons) -> None:
    """Wait for qemu, forwarding new output as it lands; stop everything on timeout."""
    offset = 0
    next_kvm_check = 0.0
    while True:
        finished = process.poll() is not None
        if on_output is not None:
            offset = _forward_new_output(plan.output_log, offset, on_output)
        if finished:
            return
        if plan.accel == "kvm" and time.monotonic() >= next_kvm_check:
            next_kvm_check = time.monotonic() + 0.5
            stall = _kvm_stall(plan.qemu_log)
            if stall:
                daemons.stop(grace=1.0)
                raise KvmUnusable(f"qemu: {stall}")
        if time.monotonic() - started > timeout:
            daemons.stop(grace=1.0)
            raise GuestTimeout(
                f"the guest did not finish within {timeout:g} s; qemu and virtiofsd were stopped "
                f"(last console line: {_tail(plan.console_log, 1) or 'none'})"
            )
        time.sleep(0.05)


def _kvm_stall(qemu_log: Path) -> str:
    """The line of qemu's log that says KVM stopped the guest, or ''."""
    try:
        text = qemu_log.read_text(errors="replace")
    except OSError:
        return ""
    return next((line.strip() for line in text.splitlines() if any(m in line for m in KVM_STALL_MARKERS)), "")


def _forward_new_output(path: Path, offset: int, on_output) -> int:
    with open(path, "rb") as log:
        log.seek(offset)
        chunk = log.read()
    if chunk:
        on_output(chunk)
    return offset + len(chunk)


def _parse_status(status: str) -> Optional[int]:
    for line in status.splitlines():
        if line.startswith("exit="):
            try:
                return int(line[len("exit="):])
            except ValueError:
                return None
    return None


# What the guest console shows when its kernel failed (an oops, a BUG, a panic).
KERNEL_FAILURE_MARKERS = ("Kernel panic", "BUG:", "Oops")


def panicked_before_command(status: str, console: str) -> bool:
    """The kernel oopsed or panicked and init never reported that the command started."""
    started = any(line.strip() == "started" for line in status.splitlines())
    return not started and kernel_failed(console)


def kernel_failed(console: str) -> bool:
    return any(marker in console for marker in KERNEL_FAILURE_MARKERS)


def _keep_console(console: str) -> Optional[Path]:
    """The failed boot's console, kept for a bug report (the run's work directory is deleted)."""
    try:
        directory = Path.home() / ".cache" / "dmabuf-top" / "lab-failures"
        directory.mkdir(parents=True, exist_ok=True)
        kept = directory / time.strftime("%Y%m%d-%H%M%S-console.log")
        kept.write_text(console)
        return kept
    except OSError:
        return None


def _failure_message(status: str, console: str, qemu_log: str, returncode) -> str:
    for line in status.splitlines():
        if line.startswith("init-error="):
            return f"the guest could not set up: {line[len('init-error='):]}"
    for marker in KERNEL_FAILURE_MARKERS:
        lines = [line.strip() for line in console.splitlines() if marker in line]
        if lines:
            return f"the guest kernel failed: {lines[0]}"
    if qemu_log.strip():
        return f"qemu exited with code {returncode}: {qemu_log.strip().splitlines()[-1]}"
    last = console.strip().splitlines()[-1] if console.strip() else "no console output"
    return f"the guest ended without reporting an exit code (last console line: {last})"

"""`dmabuf-top vm`: run a command in the kernel lab (a QEMU guest on the host root)."""
import os
import sys

import click

from ..errors import DmabufTopError

# Passed on from the host unless -e says otherwise. PATH is safe to keep: the
# guest sees the same filesystem, so an activated venv stays activated.
PASSED_FROM_HOST = ("PATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "PYTHONPATH", "DMABUF_TOP_CACHE")
# A guest of another architecture has a root of its own: the host's programs and venv mean nothing there.
PASSED_TO_FOREIGN_GUEST = ("LANG", "LC_ALL")


def guest_environment(host_env, assignments, native=True):
    """The command's environment: a few host variables, then -e (the lab adds its defaults)."""
    passed = PASSED_FROM_HOST if native else PASSED_TO_FOREIGN_GUEST
    env = {name: host_env[name] for name in passed if name in host_env}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:  # -e NAME passes the host's value through
            if name not in host_env:
                raise DmabufTopError(f"-e {name}: no such variable in this environment")
            value = host_env[name]
        env[name] = value
    return env


def _stream_to_stdout(chunk):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--kernel", type=click.Path(dir_okay=False), help="Kernel image to boot (bzImage, or an arm64 "
              "Image); default: Debian's cloud kernel, fetched once and cached; for arm64 the lab's own kernel "
              "(system and CMA heaps) once `make kernel-arm64` built it, as Debian's arm64 kernel has no heaps.")
@click.option("--stock", is_flag=True, help="Boot Debian's cloud kernel even where the lab's own kernel is the "
              "default (arm64).")
@click.option("--arch", "arch_name", type=click.Choice(["x86_64", "arm64"]), help="Guest architecture. "
              "Another than the host's boots under TCG on a root assembled from Debian's packages (cached), "
              "with this project shared read-only.  [default: the host's]")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds before the guest is stopped.")
@click.option("--memory", type=int, default=1024, show_default=True, help="Guest memory in MiB.")
@click.option("--cpus", type=click.IntRange(min=1), help="Guest vCPUs.  [default: 2, or 1 with --icount]")
@click.option("--icount", is_flag=True, help="Instruction-counting clock (TCG, one vCPU unless --cpus): one guest "
              "nanosecond per guest instruction, for exact benchmarks whatever the host's load.")
@click.option("--results", type=click.Path(file_okay=False),
              help="Host directory the guest may write, mounted at the same path.")
@click.option("--scratch", type=int, default=1024, show_default=True,
              help="Size in MiB of the ext4 NVMe scratch disk at /mnt/scratch (0: none).")
@click.option("-e", "--env", "assignments", multiple=True, metavar="NAME[=VALUE]",
              help="Set (or pass on) a variable in the guest; repeatable.")
@click.option("--fetch-only", is_flag=True, help="Fetch the default kernel if needed, print its path and exit.")
@click.option("--refresh", is_flag=True, help="Ask the archive for its newest kernel instead of using the cached one.")
@click.option("--check", "check_only", is_flag=True,
              help="Print which lab and dma-buf options the kernel has built in, and exit.")
@click.option("--console", "show_console", is_flag=True,
              help="Print the guest kernel's console log to stderr after the run.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx, kernel, stock, arch_name, timeout, memory, cpus, icount, results, scratch, assignments, fetch_only,
            refresh, check_only, show_console, argv):
    """Boot a test kernel with the host's root filesystem and run CMD in it.

    \b
    Examples:
      dmabuf-top vm -- uname -r
      dmabuf-top vm --results out -- dmabuf-top validate --record out/validate.db
      dmabuf-top vm --icount -- python3 benchmarks/overhead.py --here
      dmabuf-top vm --kernel arch/x86/boot/bzImage -- python3 -m pytest tests/vm
      dmabuf-top vm --arch arm64 -- dmabuf-top doctor --json
      dmabuf-top vm --arch arm64 --stock -- uname -r
    The exit code is the command's own.
    """
    from dmabuf_top.kernel import arch as lab_arch
    from dmabuf_top.kernel import fetch, kconfig, lab, userland

    arch = lab_arch.guest_arch(arch_name) if arch_name else lab_arch.host_arch()
    native = lab_arch.is_native(arch)
    if fetch_only or check_only or refresh and not argv:
        if refresh and kernel is None:
            fetch.fetch_kernel(refresh=True, arch=arch)
        chosen = lab.resolve_kernel(kernel, arch, stock)
        if fetch_only and not native:
            userland.assemble_userland(arch, refresh=refresh)
        if check_only:
            needs = {**kconfig.boot_needs(arch), **kconfig.dmabuf_needs(arch)}
            report = kconfig.check_features(chosen.config, needs)
            click.echo(f"{chosen.vmlinuz} ({chosen.release or 'unknown release'}): {report.describe()}")
            ctx.exit(0 if report.ok else 4)
        click.echo(str(chosen.vmlinuz))
        return
    if not argv:
        raise click.UsageError("give the command to run after --, e.g. `dmabuf-top vm -- uname -r`")
    if refresh:
        fetch.fetch_kernel(refresh=True, arch=arch)
        if not native:
            userland.assemble_userland(arch, refresh=True)

    result = lab.run_in_guest(
        list(argv),
        kernel=kernel,
        timeout=timeout,
        memory_mb=memory,
        cpus=cpus,
        icount=icount,
        arch=arch,
        stock=stock,
        results_dir=results,
        scratch_mb=scratch,
        env=guest_environment(os.environ, assignments, native),
        cwd=os.getcwd(),
        on_output=_stream_to_stdout,
    )
    if show_console:
        click.echo(result.console, err=True, nl=False)
    ctx.exit(result.exit_code)

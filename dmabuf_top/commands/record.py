"""`dmabuf-top record`: record dma-bufs, their I/O paths, lifecycle and the traced tasks into a session file."""
import math
import sys

import click

from .. import __version__
from ..errors import DmabufTopError


def _usable_seconds(value):
    """Positive and finite even in nanoseconds, as the recorder counts (nan fails every comparison)."""
    return value > 0 and math.isfinite(value * 1e9)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The session file to create (SQLite).")
@click.option("--duration", type=float, help="Stop after this many seconds (default: when CMD exits, or Ctrl-C).")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between buffer snapshots and counter samples.")
@click.option("--force", is_flag=True, help="Replace an existing session file.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]")
def command(output, duration, interval, force, argv):
    """Record a session; with `-- CMD ARGS...`, trace CMD from its first instruction until it exits.

    \b
    The session is an SQLite file written in batches: Ctrl-C, SIGTERM, a crashing command,
    a killed recorder or a full disk leave everything committed readable. Then:
        dmabuf-top report SESSION -o report.html
    Exits with CMD's exit code (128 + N if a signal N killed it).
    """
    from ..features import detect, require_bpf_privileges
    from ..recording.recorder import Recorder
    from ..recording.session import SessionWriter
    from ..recording.sources import all_sources

    if not _usable_seconds(interval) or (duration is not None and not _usable_seconds(duration)):
        raise DmabufTopError("--interval and --duration must be positive, finite numbers of seconds", exit_code=2)
    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    require_bpf_privileges("dmabuf-top record")
    features = detect()
    writer = SessionWriter(output, overwrite=force)
    writer.set_metadata(tool_version=__version__, argv=sys.argv, command=argv or None, interval_s=interval,
                        duration_s=duration)
    writer.set_features(features)
    recorder = Recorder(writer, all_sources(report=features), interval_s=interval, duration_s=duration, command=argv or None)
    result = recorder.run()
    click.echo(f"dmabuf-top: recording ended: {result.end_reason}; {result.rows} rows in {output} "
               f"(next: dmabuf-top report {output} -o report.html)", err=True)
    if writer.disk_full:
        raise DmabufTopError(f"the disk filled up: {output} holds what was committed before", exit_code=
                             result.exit_code or 1)
    return result.exit_code

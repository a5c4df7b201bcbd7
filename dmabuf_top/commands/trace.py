"""`dmabuf-top trace`: per-path bytes, CPU copies, pins and page-cache pages, and which hooks are live."""
import json
import subprocess
import time

import click

from ..errors import DmabufTopError
from ..probes.tracer import Tracer
from ..render_trace import render_text


def _emit(tracer, previous, as_json, elapsed, pid):
    snap = tracer.snapshot()
    per_path = snap.per_path(tgid=pid)
    shown = {path: c - previous.get(path, type(c)()) for path, c in per_path.items()}
    if as_json:
        out = snap.to_dict()
        out["interval_paths"] = {path: c.to_dict(snap.untraced_fields()) for path, c in sorted(shown.items())}
        out["elapsed_s"] = elapsed
        click.echo(json.dumps(out, sort_keys=True))
    else:
        click.echo(render_text(shown, snap.missing_concerns(), snap.dropped, elapsed, snap.map_full))
        click.echo("")
    return per_path


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("-p", "--pid", type=int, default=None, help="Trace this process (tgid) only.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval (paths, processes, targets, "
              "outcomes, page cache, lifecycle, hooks, missing, dropped_events, map_full).")
@click.option("--hooks", "show_hooks", is_flag=True, help="List every hook, live or missing, with the reason, and exit.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(pid, as_json, show_hooks, args):
    """Trace I/O paths into and out of dma-bufs: [interval] [count], or -- CMD ARGS... (needs root)."""
    args = list(args)
    numbers = []
    while args and len(numbers) < 2 and args[0].replace(".", "", 1).isdigit():
        numbers.append(float(args.pop(0)))
    if args and args[0] == "--":
        args.pop(0)
    interval = numbers[0] if numbers else 1.0
    count = int(numbers[1]) if len(numbers) > 1 else None
    if interval <= 0:
        raise DmabufTopError("the interval must be a positive number of seconds, e.g. 'dmabuf-top trace 1 5'", 2)
    # No kernel stacks: trace shows none, and each one costs the traced call microseconds (benchmarks/overhead.py).
    with Tracer(pid=pid, stacks=False) as tracer:
        if show_hooks:
            for hook in tracer.hooks:
                state = f"live via {hook.via}" if hook.live else hook.state.value.upper()
                click.echo(f"{hook.concern:<16} {hook.target:<48} {state}  {'' if hook.live else hook.why}")
            return
        started = time.monotonic()
        if args:
            try:
                child = subprocess.run(args)
            except OSError as error:
                raise DmabufTopError(f"could not run {args[0]!r}: {error.strerror}", 2) from None
            _emit(tracer, {}, as_json, time.monotonic() - started, pid)
            raise SystemExit(child.returncode)
        previous, shown = {}, 0
        while count is None or shown < count:
            time.sleep(interval)
            now = time.monotonic()
            previous = _emit(tracer, previous, as_json, now - started, pid)
            started = now
            shown += 1

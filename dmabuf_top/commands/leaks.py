"""`dmabuf-top leaks`: buffers that stay alive, grouped, with their growth, creators and holders."""
import sys
import time

import click

from .live import _parse_numbers


@click.command()
@click.option("--min-age", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="S",
              help="List buffers alive at least S seconds (from creation when the lifecycle probe saw it, else "
              "from when this tool first saw them; a buffer there before it started is 'at least' that old).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per report, one per line (schema dmabuf-top.leaks/1, in render_leaks).")
@click.argument("numbers", nargs=-1)
def command(min_age, as_json, numbers):
    """Buffers alive longer than --min-age, grouped by allocation stack (else exporter + size + name), with count,
    bytes, growth, age, creator, holders by fd and by mapping, and for a buffer no process holds what holds it:
    attached devices, else a kernel reference (needs root).

    dmabuf-top leaks [interval] [count]: look every interval seconds (default 1) and print a report each
    time, count reports (default: until interrupted). The first report comes after one interval.

    \b
    Example, buffers older than 30 s, a report every 10 s, six of them:
      dmabuf-top leaks --min-age 30 10 6
    """
    from ..features import require_bpf_privileges
    from ..leak_creations import CreationFeed
    from ..leaks import LeakTracker
    from ..render_leaks import render_json, render_text
    from ..sampler import Sources, sigterm_exits

    interval, count = _parse_numbers(numbers)
    require_bpf_privileges("leaks")
    tracker = LeakTracker()
    with sigterm_exits(), CreationFeed() as feed, Sources(trace=False, taskstats=False) as sources:
        for sentence in sources.cannot_see:
            click.echo(f"dmabuf-top leaks: cannot see: {sentence}", err=True)
        # The probe is attached before this first inventory: a buffer in it without a creation predates the tool.
        tracker.observe(sources.take_inventory(), time.monotonic_ns(), feed.drain())
        reports = 0
        try:
            while count is None or reports < count:
                feed.wait(interval)
                read_ns = time.monotonic_ns()
                inventory = sources.take_inventory()
                creations = feed.drain()  # exports made while the inventory was read
                now = time.monotonic_ns()
                tracker.observe(inventory, now, creations)
                report = tracker.report(inventory, now, min_age, creations, probe_loaded=feed.sees_exports,
                                        hold_events=feed.hold_events())
                click.echo(render_json(report) if as_json else render_text(report))
                feed.keep_only((entry.buffer.inode for entry in inventory.buffers), read_ns)
                reports += 1
        except BrokenPipeError:  # `dmabuf-top leaks | head`
            sys.stderr.close()

"""`dmabuf-top [interval] [count]` (also `dmabuf-top live`): the live view, or a table/JSON per interval."""
import math
import sys

import click

from ..errors import DmabufTopError
from ..live.columns import PANES


def _parse_numbers(args):
    numbers = []
    for arg in args:
        try:
            numbers.append(float(arg))
        except ValueError:
            raise DmabufTopError(f"'{arg}' is not a number: usage is 'dmabuf-top [interval] [count]', "
                                 "e.g. 'dmabuf-top 1 5'", exit_code=2) from None
    if not all(math.isfinite(number) for number in numbers):  # nan and inf parse as floats
        raise DmabufTopError("the interval and count must be finite numbers, e.g. 'dmabuf-top 1 5'", exit_code=2)
    if len(numbers) > 2:
        raise DmabufTopError("at most two numbers: 'dmabuf-top [interval] [count]'", exit_code=2)
    interval = numbers[0] if numbers else 1.0
    count = numbers[1] if len(numbers) > 1 else None
    if interval <= 0:
        raise DmabufTopError("the interval must be a positive number of seconds, e.g. 'dmabuf-top 1'", exit_code=2)
    if count is not None and (count < 1 or count != int(count)):
        raise DmabufTopError("the count must be a whole number of intervals >= 1, e.g. 'dmabuf-top 1 5'", exit_code=2)
    return interval, None if count is None else int(count)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pid", type=int, help="Only this process: the buffers it holds, its I/O, its delays.")
@click.option("-s", "--sort", "sort_key", metavar="KEY",
              help="Sort by this column key (size, read, write, xfer, copy, pin, rss, pss, blkio, name, ...).")
@click.option("-r", "--rows", type=click.IntRange(min=1), help="At most this many rows per pane.")
@click.option("-C", "--no-clear", "no_clear", is_flag=True,
              help="No full screen: print a table per interval (like biotop -C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval (schema dmabuf-top.live/2: "
              "see dmabuf_top/live/jsonout.py).")
@click.option("--pane", type=click.Choice(list(PANES)), default="buffers",
              show_default=True, help="The pane shown first (the table printed with -C).")
@click.option("--min-age", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="S",
              help="The Leaks pane lists buffers alive at least S seconds (the rules of `dmabuf-top leaks`).")
@click.argument("numbers", nargs=-1)
def command(pid, sort_key, rows, no_clear, as_json, pane, min_age, numbers):
    """The live view of every dma-buf: sizes, holders, I/O rates by path, delays (needs root).

    dmabuf-top [interval] [count]: refresh every interval seconds (default 1), stop after
    count refreshes. Keys: Tab/1-6 pane, < > sort column, r reverse, / filter, space pause, q quit.
    """
    from ..live.columns import sort_keys
    from ..live.model import LiveModel
    from ..live.view import ViewState
    from ..taskstats import delay_accounting

    interval, count = _parse_numbers(numbers)
    if no_clear and as_json:
        raise DmabufTopError("-C and --json are exclusive: pick one", exit_code=2)
    view = ViewState(pane=pane, max_rows=rows)
    if sort_key is not None:
        try:
            view.set_sort(sort_key)
        except ValueError:
            raise DmabufTopError(f"no column '{sort_key}': -s takes one of {', '.join(sort_keys())}",
                                 exit_code=2) from None
    batch = no_clear or as_json
    if not batch and not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise DmabufTopError("the live view needs a terminal: use -C for a table per interval or --json", exit_code=2)

    from ..features import require_bpf_privileges
    from ..live import app
    from ..sampler import Sources, kernel_release, run_batch, sigterm_exits

    require_bpf_privileges("the live view")
    # The full screen shows the inventory at once and the I/O hooks load behind it (tens of seconds
    # on an emulated CPU); batch output waits for them, so that its first table is already traced.
    with sigterm_exits(), delay_accounting() as delayacct, \
            Sources(pid=pid, delayacct=delayacct, background=not batch, creations=True,
                    creation_stacks=True) as sources:
        model = LiveModel(interval, kernel=kernel_release(), cannot_see=sources.cannot_see, pid=pid, min_age=min_age)
        if not batch:
            return app.run(sources, model, interval, count, view)
        if as_json:
            from ..live.jsonout import render_json

            def emit(frame):
                click.echo(render_json(frame, view, rows))
        else:
            from ..live.screen import render_table

            def emit(frame):
                click.echo(render_table(frame, pane, view, rows))
                click.echo("")
        try:
            return run_batch(sources, model, interval, count, emit)
        except BrokenPipeError:  # `dmabuf-top -C | head`: the reader has gone, which is not an error
            sys.stderr.close()
            return 0

"""`dmabuf-top snapshot`: every dma-buf, who holds it, what it costs, once."""
import click

from ..errors import DmabufTopError
from ..inventory.collect import collect
from ..inventory.inventory import HOLDER_SOURCES, SOURCES
from ..inventory.render_snapshot import render_csv, render_json, render_table


@click.command()
@click.option("--buffers", "view", flag_value="buffers",
              help="One row per buffer: exporter, name, size, attachments, holders.")
@click.option("--exporters", "view", flag_value="exporters", help="Count and total size per exporter.")
@click.option("--grid", "view", flag_value="grid",
              help="Buffers x processes, each cell fd(map) references (dmabuf_dump -a).")
@click.option("--cgroups", "view", flag_value="cgroups",
              help="dma-buf bytes per cgroup (v2) of the holders: a buffer held from two cgroups counts in each "
              "one's HELD and SHARED, once in 'shared between cgroups'; buffers no process holds are 'kernel-only'; "
              "CREATED is 'not known' without the lifecycle probe (docs/cgroups.md).")
@click.option("-p", "--pid", type=int, help="Only this process and the buffers it holds (totals stay system-wide).")
@click.option("--json", "as_json", is_flag=True,
              help="The whole snapshot as JSON (exact bytes; schema in render_snapshot).")
@click.option("--csv", "as_csv", is_flag=True, help="The chosen view as CSV, one line per row, exact bytes.")
@click.option("--source", type=click.Choice(SOURCES),
              help="Where the buffer list comes from (default: the best this kernel offers, in this order).")
@click.option("--holders", "holders_source", type=click.Choice(HOLDER_SOURCES),
              help="Where fds and mappings come from: the task iterators or /proc "
              "(default: the iterators if they load).")
def command(view, pid, as_json, as_csv, source, holders_source):
    """Show every dma-buf and the processes holding it (by default one block per process, as dmabuf_dump)."""
    if as_json and as_csv:
        raise DmabufTopError("--json and --csv are exclusive: pick one", exit_code=2)
    inventory = collect(source, holders_source)
    if pid is not None:
        inventory = inventory.only_process(pid)
        if not inventory.processes:
            raise DmabufTopError(f"process {pid} holds no dma-buf that this snapshot saw "
                                 f"(or does not exist); run without -p to see every holder")
    view = view or "processes"
    if as_json:
        click.echo(render_json(inventory))
    elif as_csv:
        click.echo(render_csv(inventory, view), nl=False)
    else:
        click.echo(render_table(inventory, view))

"""`dmabuf-top flame`: kernel stacks at copy and GUP points as a flame graph or folded stacks."""
import click

from ..recording.session import Session
from ._output import default_output, write_rendered


@click.command()
@click.argument("session_path", metavar="SESSION", type=click.Path(dir_okay=False))
@click.option("--folded", is_flag=True, help="Folded stacks (FlameGraph, speedscope, inferno) instead of SVG.")
@click.option("--weight", type=click.Choice(("amount", "hits")), default="amount", show_default=True,
              help="Weigh stacks by bytes copied / pages pinned, or by how often they were seen.")
@click.option("-o", "--output", help="File to write; default: stdout for --folded, SESSION.flame.svg for SVG.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(session_path, folded, weight, output, force):
    """Write the session's kernel stacks as an SVG flame graph or as folded stacks."""
    from ..analysis import flame

    session = Session(session_path)
    stacks = flame.folded_stacks(session, weight=weight)
    if folded:
        text = flame.render_folded(stacks)
        write_rendered(lambda out: out.write(text), output or "-", force=force, allow_tty=True)
    else:
        unit = "bytes" if weight == "amount" else "hits"
        svg = flame.render_svg(stacks, unit=unit)
        output = output or default_output(session_path, ".flame.svg")
        written = write_rendered(lambda out: out.write(svg), output, force=force)
        if written:
            click.echo(f"dmabuf-top: wrote {written} ({len(stacks)} stacks): open it in a browser", err=True)
    if not stacks:
        click.echo("dmabuf-top: the session holds no kernel stacks (the I/O tracer took none)", err=True)

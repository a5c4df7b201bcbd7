"""`dmabuf-top flame`: kernel stacks at copy and GUP points as a flame graph or folded stacks."""
import click

from ..analysis.renderers import FORMATS, RenderOptions, guess_format
from ..recording.session import Session
from ._output import default_output, write_rendered

FLAME_FORMATS = ("svg", "folded")


@click.command()
@click.argument("session_path", metavar="SESSION", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FLAME_FORMATS),
              help="Default: guessed from -o (.svg: svg, .folded: folded), else svg.")
@click.option("--folded", is_flag=True, help="Folded stacks (FlameGraph, speedscope, inferno): --format folded.")
@click.option("--weight", type=click.Choice(("amount", "hits")), default="amount", show_default=True,
              help="Weigh stacks by bytes copied / pages pinned, or by how often they were seen.")
@click.option("-o", "--output", help="File to write; default: stdout for folded stacks, SESSION.flame.svg for SVG.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(session_path, fmt, folded, weight, output, force):
    """Write the session's kernel stacks as an SVG flame graph or as folded stacks."""
    # Imported here: it loads matplotlib, which --help should not wait for (see analysis/renderers.py).
    from ..analysis.flame import folded_stacks

    fmt = "folded" if folded else fmt or guess_format(output, FLAME_FORMATS, default="svg")
    session = Session(session_path)
    renderer = FORMATS[fmt].create(RenderOptions(weight=weight))
    stacks = len(folded_stacks(session, weight=weight))
    if fmt == "folded":  # text meant for a pipe or a terminal
        write_rendered(lambda out: renderer.render(session, out), output or "-", force=force, allow_tty=True)
    else:
        output = output or default_output(session_path, FORMATS[fmt].extensions[0])
        written = write_rendered(lambda out: renderer.render(session, out), output, force=force)
        if written:
            click.echo(f"dmabuf-top: wrote {written} ({stacks} stacks): {FORMATS[fmt].hint}", err=True)
    if not stacks:
        click.echo("dmabuf-top: the session holds no kernel stacks (the I/O tracer took none)", err=True)

"""`dmabuf-top flame`: kernel stacks at copy and GUP points, or buffers' allocation stacks (--alloc), as a flame
graph or folded stacks."""
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
              help="Weigh stacks by bytes copied / pages pinned (--alloc: bytes allocated), or by how often they "
                   "were seen (--alloc: buffers).")
@click.option("--alloc", is_flag=True, help="Draw bytes by allocation stack (user and kernel frames at each "
                                            "buffer's creation) instead of the I/O stacks.")
@click.option("-o", "--output", help="File to write; default: stdout for folded stacks, SESSION.flame.svg for SVG.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(session_path, fmt, folded, weight, alloc, output, force):
    """Write the session's kernel stacks (or, with --alloc, its buffers' allocation stacks) as an SVG flame
    graph or as folded stacks.

    \b
    Examples:
      dmabuf-top flame load.session -o io.svg
      dmabuf-top flame --alloc load.session -o alloc.svg"""
    # Imported here: it loads matplotlib, which --help should not wait for (see analysis/renderers.py).
    from ..analysis.flame import session_folded

    fmt = "folded" if folded else fmt or guess_format(output, FLAME_FORMATS, default="svg")
    session = Session(session_path)
    options = RenderOptions(weight=weight, stacks="alloc" if alloc else "io")
    renderer = FORMATS[fmt].create(options)
    stacks = len(session_folded(session, options))
    if fmt == "folded":  # text meant for a pipe or a terminal
        write_rendered(lambda out: renderer.render(session, out), output or "-", force=force, allow_tty=True)
    else:
        output = output or default_output(session_path, FORMATS[fmt].extensions[0])
        written = write_rendered(lambda out: renderer.render(session, out), output, force=force)
        if written:
            click.echo(f"dmabuf-top: wrote {written} ({stacks} stacks): {FORMATS[fmt].hint}", err=True)
    if not stacks:
        click.echo("dmabuf-top: the session holds no allocation stacks (no buffer was created while the lifecycle "
                   "probe ran with its export hook live)" if alloc
                   else "dmabuf-top: the session holds no kernel stacks (the I/O tracer took none)", err=True)

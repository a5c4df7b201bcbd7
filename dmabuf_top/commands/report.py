"""`dmabuf-top report`: a recorded session as an HTML report, a Perfetto trace, CSV/JSON tables, or its stacks."""
import click

from ..analysis.renderers import FORMATS, RenderOptions, guess_format
from ..errors import DmabufTopError
from ..recording.session import Session
from ._output import default_output, write_rendered

SUFFIXES = ", ".join(f"{extension}: {name}" for name, entry in FORMATS.items() for extension in entry.extensions)


@click.command()
@click.argument("session_path", metavar="SESSION", type=click.Path(dir_okay=False))
@click.argument("session_b", metavar="[B]", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output",
              help="File to write ('-' for stdout); default: SESSION's name with the format's suffix.")
@click.option("--format", "fmt", type=click.Choice(tuple(FORMATS)),
              help=f"Default: guessed from -o ({SUFFIXES}), else html.")
@click.option("--table", type=click.Choice(("buffers", "paths", "latency", "methods", "cgroups")), default="buffers",
              show_default=True, help="Which table --format csv writes (methods: a validate session's; cgroups: "
              "per-cgroup dma-buf bytes of the holders, peak and at the end).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False),
              help="Also write each figure as PNG and SVG here.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(session_path, session_b, output, fmt, table, figures_dir, force):
    """Render a session recorded by `dmabuf-top record` or `dmabuf-top validate --record`.

    With one SESSION: an HTML report (throughput, latency, zero-copy picture, buffers, flame
    graph, missing hooks, dropped events; a validate run's methods compared), a Perfetto/Chrome
    trace, CSV/JSON tables, or the flame graph (svg) and folded stacks.
    With SESSION and B: one HTML page comparing them (deltas, figures side by side).
    """
    fmt = fmt or guess_format(output)
    if session_b and fmt != "html":
        raise DmabufTopError("comparing two sessions writes HTML only: drop --format or use --format html",
                             exit_code=2)
    session = Session(session_path)
    options = RenderOptions(table=table)
    if session_b:
        # Imported here, as FORMATS imports its renderers only when used: they load matplotlib (see renderers).
        from ..analysis.compare import CompareHtmlRenderer

        renderer = CompareHtmlRenderer(Session(session_b), options)
    else:
        renderer = FORMATS[fmt].create(options)
    output = output or default_output(session_path, ".compare.html" if session_b else FORMATS[fmt].extensions[0])
    written = write_rendered(lambda out: renderer.render(session, out), output, force=force)
    if figures_dir:
        from ..analysis.figures import write_figures

        paths = write_figures(session, figures_dir)
        click.echo(f"dmabuf-top: wrote {len(paths)} figure files to {figures_dir}", err=True)
    if written:
        hint = FORMATS[fmt].hint
        click.echo(f"dmabuf-top: wrote {written}" + (f": {hint}" if hint else ""), err=True)

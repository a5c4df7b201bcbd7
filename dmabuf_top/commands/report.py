"""`dmabuf-top report`: a recorded session as an HTML report, a Perfetto trace, or CSV/JSON tables."""
import click

from ..errors import DmabufTopError
from ..recording.session import Session
from ._output import default_output, write_rendered

FORMATS = ("html", "perfetto", "csv", "json")
SUFFIXES = {"html": ".html", "perfetto": ".trace.json", "csv": ".csv", "json": ".json"}


def guess_format(output):
    """The format an output name asks for (pyinstrument's rule): .trace.json/.perfetto.json is Perfetto."""
    name = (output or "").lower()
    if name.endswith((".trace.json", ".perfetto.json")):
        return "perfetto"
    for fmt, suffix in (("html", ".html"), ("html", ".htm"), ("csv", ".csv"), ("json", ".json")):
        if name.endswith(suffix):
            return fmt
    return "html"


def renderer_for(fmt, table, session_b=None):
    from ..analysis import compare, export, html, perfetto

    if session_b is not None:
        if fmt != "html":
            raise DmabufTopError("comparing two sessions writes HTML only: drop --format or use --format html",
                                 exit_code=2)
        return compare.CompareHtmlRenderer(session_b)
    return {"html": html.HtmlRenderer, "perfetto": perfetto.PerfettoRenderer, "json": export.JsonRenderer,
            "csv": lambda: export.CsvRenderer(table)}[fmt]()


@click.command()
@click.argument("session_path", metavar="SESSION", type=click.Path(dir_okay=False))
@click.argument("session_b", metavar="[B]", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", help="File to write ('-' for stdout); default: SESSION's name with the format's suffix.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: guessed from -o (.html, .trace.json, .csv, .json).")
@click.option("--table", type=click.Choice(("buffers", "paths", "latency", "methods")), default="buffers",
              show_default=True, help="Which table --format csv writes (methods: a validate session's).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False), help="Also write each figure as PNG and SVG here.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def command(session_path, session_b, output, fmt, table, figures_dir, force):
    """Render a session recorded by `dmabuf-top record`.

    With one SESSION: an HTML report (throughput, latency, zero-copy picture, buffers, flame
    graph, missing hooks, dropped events), a Perfetto/Chrome trace, or CSV/JSON tables.
    With SESSION and B: one HTML page comparing them (deltas, figures side by side).
    """
    fmt = fmt or guess_format(output)
    session = Session(session_path)
    other = Session(session_b) if session_b else None
    renderer = renderer_for(fmt, table, other)
    output = output or default_output(session_path, ".compare.html" if other else SUFFIXES[fmt])
    written = write_rendered(lambda out: renderer.render(session, out), output, force=force)
    if figures_dir:
        from ..analysis.figures import write_figures

        paths = write_figures(session, figures_dir)
        click.echo(f"dmabuf-top: wrote {len(paths)} figure files to {figures_dir}", err=True)
    if written:
        hint = {"html": "open it in a browser", "perfetto": "open it at ui.perfetto.dev"}.get(fmt, "")
        click.echo(f"dmabuf-top: wrote {written}" + (f": {hint}" if hint else ""), err=True)

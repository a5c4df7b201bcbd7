"""`dmabuf-top validate`: prove what each way of loading a file into a dma-buf costs, from kernel events."""
import json
import re

import click

from ..errors import DmabufTopError

SIZE = re.compile(r"^(\d+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """'256M', '64MiB', '1g', '4096' -> bytes (binary units); ValueError otherwise."""
    match = SIZE.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"cannot read the size {text!r}: write e.g. 64M, 256MiB or 1G")
    return int(match.group(1)) * UNITS[match.group(2).lower()]


def _size(ctx, param, value):
    try:
        return parse_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _expectation(ctx, param, value):
    if value is None:
        return None
    from ..validate.verdict import parse_expectation

    try:
        return parse_expectation(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _method_names(value):
    return [name.strip() for part in value for name in part.split(",") if name.strip()]


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--size", default="256M", show_default=True, callback=_size, help="Size of the test file (64M, 1G...).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Where the test file goes: the "
              "filesystem you load from (default /mnt/scratch when it exists).")
@click.option("--methods", "method_names", multiple=True, metavar="A,B,...", help="Run only these methods "
              "(see --list).")
@click.option("--list", "list_methods", is_flag=True, help="List the methods and exit.")
@click.option("--warm", is_flag=True, help="Keep the page cache (default: dropped before each method).")
@click.option("--chunk", default="32M", show_default=True, callback=_size, help="Bytes per call (the posters "
              "loaded 32 MB buffers).")
@click.option("--expect", "expectation", callback=_expectation, metavar="zero-copy|copies=N",
              help="Exit 0 only if every method run (or the command) meets this claim, else 1.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on one line: methods, verdicts, evidence, "
              "hooks (with -- CMD, after the command's own output).")
@click.option("--record", "session_path", type=click.Path(dir_okay=False), metavar="SESSION",
              help="Also write a session file; `dmabuf-top report SESSION` draws the comparison.")
@click.option("--force", is_flag=True, help="Replace an existing --record file.")
@click.option("--keep-file", is_flag=True, help="Leave the test file in --dir.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def command(size, directory, method_names, list_methods, warm, chunk, expectation, as_json, session_path, force,
            keep_file, argv):
    """Run the method matrix on a file of --size in --dir, or trace -- CMD ARGS... (needs root).

    Per method: allocation, I/O and close times, MB/s, bytes the CPU copied, page-cache pages,
    pinned pages, calls, a content check, and a verdict: zero-copy, N copies, failed (errno),
    wrong data, or unmeasured (when a copy could happen where no hook sees it).
    """
    from ..validate import methods as method_table
    from ..validate import render, runner

    if list_methods:
        for method in method_table.METHODS:
            needs = f"  [needs {', '.join(method.needs)}]" if method.needs else ""
            click.echo(f"{method.name:<26} {method.summary}{needs}")
        return
    argv = list(argv)
    if argv and argv[0] == "--":
        argv.pop(0)
    names = _method_names(method_names)
    if argv and names:
        raise DmabufTopError("--methods picks from the built-in matrix; with -- CMD the command is the method",
                             exit_code=2)
    try:
        method_table.select(names)
    except ValueError as error:
        raise DmabufTopError(str(error), exit_code=2) from None
    if argv:
        run = runner.trace_command(argv)
    else:
        run = runner.run_matrix(directory or runner.default_directory(), size, names, warm=warm, chunk=chunk,
                                keep_file=keep_file)
    if session_path:
        from ..validate.store import record_run

        if not force:
            import os

            if os.path.exists(session_path):
                raise DmabufTopError(f"{session_path} exists: pass --force to replace it", exit_code=2)
        record_run(run, session_path, overwrite=force)
    if as_json:
        click.echo(json.dumps(run.to_dict(), sort_keys=True))
    else:
        click.echo(render.render_table(run))
        evidence = render.render_evidence(run)
        if evidence:
            click.echo("\n" + evidence)
    if session_path:
        click.echo(f"dmabuf-top: wrote {session_path}: `dmabuf-top report {session_path}` draws the comparison",
                   err=True)
    if expectation is not None:
        judged = [r for r in run.results if r.verdict.kind != "absent" or names or argv]
        outcomes = [(r.name, *expectation.holds(r.verdict)) for r in judged]
        for name, held, why in outcomes:
            click.echo(f"expect {name}: {why}", err=True)
        raise SystemExit(0 if outcomes and all(held for _, held, _ in outcomes) else 1)
    if run.command_exit:
        from ..recording.command import exit_status

        raise SystemExit(exit_status(run.command_exit))

"""The `dmabuf-top` command line: a thin click group over the commands package.

Each subcommand lives in dmabuf_top/commands/<name>.py and exports `command`;
adding such a file is all it takes to add a command.
"""
import logging
import pkgutil
import sys

import click

from . import __version__
from .errors import DmabufTopError


def command_modules():
    from . import commands

    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_"))


class LazyGroup(click.Group):
    """Imports a command's module only when it runs, so `--help` and light commands stay fast."""

    def list_commands(self, ctx):
        return command_modules()

    def get_command(self, ctx, name):
        if name not in command_modules():
            return None
        module = __import__(f"dmabuf_top.commands.{name}", fromlist=["command"])
        return module.command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="dmabuf-top")
@click.option("-v", "--verbose", count=True, help="Show libbpf's and our debug log (-vv for more).")
def cli(verbose):
    """BPF observability for Linux dma-buf I/O."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)


DEFAULT_COMMAND = "live"
_GROUP_EXITS = ("--help", "--version")


def with_default_command(args):
    """`dmabuf-top [interval] [count] [options]` runs the live view: insert its name when the first
    word after the group's own options is not a command (a number, an option, or nothing)."""
    index = 0
    while index < len(args) and (args[index] == "--verbose" or args[index].startswith("-v")
                                 and set(args[index][1:]) == {"v"}):
        index += 1
    rest = args[index:]
    if rest and (rest[0] in _GROUP_EXITS or rest[0] in command_modules()):
        return list(args)
    if not rest or rest[0].startswith("-") or rest[0].replace(".", "", 1).isdigit():
        return list(args[:index]) + [DEFAULT_COMMAND] + list(rest)
    return list(args)  # an unknown word: click's usage error names it


def main(argv=None):
    argv = with_default_command(sys.argv[1:] if argv is None else list(argv))
    try:
        return cli.main(args=argv, prog_name="dmabuf-top", standalone_mode=False) or 0
    except DmabufTopError as error:
        click.echo(f"dmabuf-top: {error}", err=True)
        return error.exit_code
    except click.exceptions.Abort:
        click.echo("dmabuf-top: interrupted", err=True)
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except KeyboardInterrupt:
        click.echo("dmabuf-top: interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())

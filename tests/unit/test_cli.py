import logging
import tempfile

import pytest

from dmabuf_top import cli
from dmabuf_top.errors import DmabufTopError


def test_commands_are_discovered_from_the_commands_package():
    assert {"doctor", "vm"} <= set(cli.command_modules())


def test_help_and_version_exit_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "doctor" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0


def test_unknown_command_and_flag_are_usage_errors(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["doctor", "--no-such-flag"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_our_errors_are_one_line_with_their_exit_code(monkeypatch, capsys):
    def fail():
        raise DmabufTopError("something a user can fix: do this", exit_code=7)

    monkeypatch.setattr("dmabuf_top.commands.doctor.detect", fail)
    assert cli.main(["doctor"]) == 7
    err = capsys.readouterr().err
    assert err == "dmabuf-top: something a user can fix: do this\n"


def test_libbpf_messages_reach_our_logger(caplog):
    from dmabuf_top import bpf

    # Drive the real callback through libbpf: opening a file that is not ELF makes libbpf warn.
    with caplog.at_level(logging.DEBUG, logger="libbpf"), tempfile.NamedTemporaryFile(suffix=".bpf.o") as bogus:
        bogus.write(b"not elf")
        bogus.flush()
        with pytest.raises(DmabufTopError):
            bpf.BpfObject(bogus.name)
    assert any(record.name == "libbpf" and "elf" in record.getMessage().lower() for record in caplog.records)


def help_examples(capsys):
    """Every example command line in every command's --help: (command whose help shows it, its words after
    'dmabuf-top' up to any `--`, whether a command to run follows `--`).

    An example is a help line that starts with 'dmabuf-top ' and has no [optional] synopsis brackets;
    a dmabuf-top command an example runs after `--` (`dmabuf-top vm -- dmabuf-top validate ...`) is one too."""
    examples = []
    for name in cli.command_modules():
        assert cli.main([name, "--help"]) == 0
        for line in capsys.readouterr().out.splitlines():
            words = line.strip().split()
            if words[:1] != ["dmabuf-top"] or any("[" in word for word in words):
                continue
            while words:
                split = words.index("--") if "--" in words else len(words)
                examples.append((name, words[1:split], split < len(words)))
                nested = words[split + 1:]
                words = nested if nested[:1] == ["dmabuf-top"] else []
    return examples


def test_every_help_example_parses(capsys):
    examples = help_examples(capsys)
    assert sum(name == "vm" for name, _, _ in examples) >= 4, examples  # three examples, one nested command
    for name, args, runs_a_command in examples:
        shown = f"the example `dmabuf-top {' '.join(args)}` in `dmabuf-top {name} --help`"
        # --help after the example's own words: click parses them all (an unknown option or a missing
        # value is a usage error, exit 2) before the eager --help prints and exits 0, so nothing runs.
        assert cli.main([*args, "--help"]) == 0, f"{shown} does not parse: {capsys.readouterr().err.strip()}"
        capsys.readouterr()
        if runs_a_command:
            # A command taking `-- CMD` may pass unknown options on (vm does): none may end up before `--`.
            command = cli.cli.get_command(None, args[0])
            context = command.make_context(args[0], [*args[1:], "--", "CMD"], resilient_parsing=True)
            rest = [value for param in command.params if param.nargs == -1 for value in context.params[param.name]]
            assert rest == ["CMD"], f"{shown} passes {rest[:-1]} on as part of the command"

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

"""`dmabuf-top [interval] [count]` runs the live view; the group's own options and commands still work."""
import pytest

from dmabuf_top import cli


@pytest.mark.parametrize("argv,expected", [
    ([], ["live"]),
    (["1", "3"], ["live", "1", "3"]),
    (["0.5"], ["live", "0.5"]),
    (["-C", "1", "3"], ["live", "-C", "1", "3"]),
    (["--json", "-p", "7"], ["live", "--json", "-p", "7"]),
    (["-vv", "2"], ["-vv", "live", "2"]),
    (["--help"], ["--help"]),
    (["--version"], ["--version"]),
    (["-v", "--help"], ["-v", "--help"]),
    (["doctor", "--json"], ["doctor", "--json"]),
    (["live", "1"], ["live", "1"]),
    (["no-such-command"], ["no-such-command"]),
])
def test_default_command(argv, expected):
    assert cli.with_default_command(argv) == expected


def test_usage_errors_are_one_line(capsys):
    assert cli.main(["-s", "nonsense", "-C"]) == 2
    assert cli.main(["1", "2", "3"]) == 2
    assert cli.main(["0", "1"]) == 2
    assert cli.main(["-C", "--json", "1", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no column 'nonsense'" in err and "-s takes one of" in err


def test_live_refuses_a_pipe_without_batch_mode(capsys):
    # pytest's stdout is not a terminal: the full-screen view must say what to use instead
    assert cli.main(["1", "1"]) == 2
    assert "needs a terminal: use -C" in capsys.readouterr().err

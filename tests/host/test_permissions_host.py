"""Sessions and everything rendered from them hold command lines and process names: created 0600 whatever
the umask. `validate -- CMD` and `record -- CMD` run an argv, never a shell. A crashing command's signal
becomes the exit code (128 + N) and the session says how it ended."""
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dmabuf_top.recording.session import Session

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
DMABUF_TOP = [sys.executable, "-m", "dmabuf_top"]
HOSTILE_ARGS = ["a;touch PWNED", "$(touch PWNED)", "`touch PWNED`", "x|y", "*", "'\"", "$HOME"]
ECHO_ARGV = "import json, sys; open('argv.json', 'w').write(json.dumps(sys.argv[1:]))"
SEGV = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


def run(args, cwd, umask=0o022):
    env = {**os.environ, "MPLCONFIGDIR": str(cwd)}
    result = subprocess.run([*DMABUF_TOP, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
                            preexec_fn=lambda: os.umask(umask))
    assert "Traceback" not in result.stderr, result.stderr
    return result


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    directory = tmp_path_factory.mktemp("perm")
    result = run(["record", "-o", "s.db", "--", sys.executable, "-c", "open('/etc/os-release').read()"], directory,
                 umask=0)
    assert result.returncode == 0, result.stderr
    return directory / "s.db"


def test_record_creates_the_session_0600_even_with_umask_0(session):
    assert mode(session) == 0o600


@pytest.mark.parametrize("name", ["r.html", "r.json", "r.csv", "r.trace.json"])
def test_reports_are_0600(session, tmp_path, name):
    result = run(["report", str(session), "-o", name], tmp_path, umask=0)
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / name) == 0o600


def test_replaced_report_is_still_0600(session, tmp_path):
    (tmp_path / "r.html").write_text("old")
    os.chmod(tmp_path / "r.html", 0o644)
    assert run(["report", str(session), "-o", "r.html", "--force"], tmp_path, umask=0).returncode == 0
    assert mode(tmp_path / "r.html") == 0o600


def test_figures_are_0600(session, tmp_path):
    result = run(["report", str(session), "-o", "r.html", "--figures", "figs"], tmp_path, umask=0)
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "figs").iterdir())
    assert files and {f.suffix for f in files} == {".png", ".svg"}
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


@pytest.mark.parametrize("args", [["-o", "f.svg"], ["--folded", "-o", "f.folded"]], ids=" ".join)
def test_flame_output_is_0600(session, tmp_path, args):
    result = run(["flame", str(session), *args], tmp_path, umask=0)
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / args[-1]) == 0o600


def test_validate_record_is_0600_and_the_command_gets_its_argv_verbatim(tmp_path):
    result = run(["validate", "--record", "v.db", "--", sys.executable, "-c", ECHO_ARGV, *HOSTILE_ARGS], tmp_path,
                 umask=0)
    assert result.returncode == 0, result.stderr
    assert mode(tmp_path / "v.db") == 0o600
    import json

    assert json.loads((tmp_path / "argv.json").read_text()) == HOSTILE_ARGS
    assert not (tmp_path / "PWNED").exists()
    with Session(tmp_path / "v.db") as recorded:
        assert recorded.metadata["command"][3:] == HOSTILE_ARGS


def test_record_runs_the_command_as_an_argv(tmp_path):
    result = run(["record", "-o", "s.db", "--", sys.executable, "-c", ECHO_ARGV, *HOSTILE_ARGS], tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads((tmp_path / "argv.json").read_text()) == HOSTILE_ARGS
    assert not (tmp_path / "PWNED").exists()


def test_record_of_a_crashing_command_exits_128_plus_the_signal(tmp_path):
    result = run(["record", "-o", "s.db", "--", sys.executable, "-c", SEGV], tmp_path)
    assert result.returncode == 128 + signal.SIGSEGV, result.stderr
    assert result.stderr.count("\n") == 1 and "SIGSEGV" in result.stderr
    with Session(tmp_path / "s.db") as recorded:
        assert recorded.end_reason == "command killed by SIGSEGV"
        assert recorded.exit_code == -signal.SIGSEGV  # the raw wait status, as subprocess gives it


def test_validate_of_a_crashing_command_exits_128_plus_the_signal(tmp_path):
    result = run(["validate", "--json", "--", sys.executable, "-c", SEGV], tmp_path)
    assert result.returncode == 128 + signal.SIGSEGV, result.stderr
    import json

    out = json.loads(result.stdout.splitlines()[-1])
    assert "SIGSEGV" in json.dumps(out), out

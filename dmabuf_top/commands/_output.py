"""Writing a rendered report: never over an existing file without --force, never a report to a terminal.

Renderers share one protocol, `render(session, out)` on a text stream (dmabuf_top/analysis/renderers.py);
this is the one place that turns that into a file or stdout.
"""
import os
import sys
import tempfile

from ..errors import DmabufTopError


def default_output(session_path, suffix):
    stem = os.path.basename(session_path)
    for ext in (".sqlite", ".db", ".session"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return stem + suffix


def write_rendered(render, output, force=False, allow_tty=False):
    """Calls render(out) with out a text stream for `output` ('-' is stdout); returns the path written or None."""
    if output == "-":
        if sys.stdout.isatty() and not allow_tty:
            raise DmabufTopError("refusing to write a report to the terminal: give -o FILE, or pipe stdout", exit_code=2)
        render(sys.stdout)
        sys.stdout.flush()
        return None
    if os.path.isdir(output):
        raise DmabufTopError(f"{output} is a directory: give a file name with -o", exit_code=2)
    if os.path.exists(output) and not force:
        raise DmabufTopError(f"{output} exists: pass --force to replace it, or choose another -o", exit_code=2)
    directory = os.path.dirname(os.path.abspath(output))
    # Rendered next to the target, then renamed: an interrupted report never leaves half a file.
    try:
        fd, temporary = tempfile.mkstemp(prefix=".dmabuf-top-", dir=directory)
    except OSError as error:
        raise DmabufTopError(f"cannot write in {directory}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            render(out)
        os.chmod(temporary, 0o600)  # reports hold command lines and process names, as sessions do
        os.replace(temporary, output)
    except OSError as error:
        os.unlink(temporary)
        raise DmabufTopError(f"cannot write {output}: {error.strerror}; nothing was written") from None
    except BaseException:
        os.unlink(temporary)
        raise
    return output

"""Drive a full-screen program as a user does: a private tmux server, one window of a fixed size."""
import subprocess
import time
from pathlib import Path


class Tmux:
    def __init__(self, socket, command, width=160, height=45, timeout=20):
        self.tmux = ["tmux", "-S", str(socket)]
        self.timeout = timeout
        subprocess.run(self.tmux + ["new-session", "-d", "-x", str(width), "-y", str(height), "cat"], check=True)
        # without a client terminal some tmux versions ignore -x/-y: size the window, then start the command in it
        subprocess.run(self.tmux + ["resize-window", "-t", "0", "-x", str(width), "-y", str(height)], check=True)
        subprocess.run(self.tmux + ["respawn-pane", "-k", "-t", "0", "-e", "TERM=xterm-256color", command], check=True)

    def screen(self):
        return subprocess.run(self.tmux + ["capture-pane", "-p", "-t", "0"], capture_output=True, text=True,
                              check=True).stdout

    def keys(self, *keys):
        subprocess.run(self.tmux + ["send-keys", "-t", "0", *keys], check=True)

    def wait_for(self, predicate, timeout=None):
        """The first screen for which predicate(text) holds (a capture can land mid-paint: poll)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"the screen never matched; last screen:\n{self.screen()}")

    def child_pid(self):
        """The pid of the command the pane's shell is running."""
        shell = subprocess.run(self.tmux + ["display", "-p", "-t", "0", "#{pane_pid}"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return int(Path(f"/proc/{shell}/task/{shell}/children").read_text().split()[0])

    def kill(self):
        subprocess.run(self.tmux + ["kill-server"], capture_output=True)


def wait_for_file(path, timeout):
    """The file's text once a line has been written to it (the shell creates it before writing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(path).exists() and Path(path).read_text().endswith("\n"):
            break
        time.sleep(0.2)
    return Path(path).read_text()

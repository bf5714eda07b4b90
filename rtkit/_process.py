"""Child processes that must start, become ready and always go away.

Hub processes in tests, ``rtkit cluster``'s hubs and nginx, ``rtkit demo``'s
JupyterLab, the Jupyter servers of the extension's tests and the benchmarks'
servers all follow the same steps, which live here:

- :func:`start_group` starts a command as the leader of a new process group
  (its own session), so that stopping it reaches whatever it started too,
  and a Ctrl-C in the terminal goes to us rather than straight to it.
- :class:`OutputLines` reads a child's output on a thread, keeps every line
  and lets callers wait for one (a "listening on" line, a log message).
- :func:`wait_for_port` waits until something accepts connections on a
  loopback port, for programs that print nothing useful when ready
  (:func:`port_open` asks once).
- :func:`find_program` finds a server binary, also in the sbin directories
  that are not on an ordinary user's PATH (mosquitto, nginx).
- :func:`stop_group` asks the leader to stop (SIGTERM), waits, then kills the
  whole group (:func:`stop_groups`: several side by side);
  :func:`kill_group` kills it at once (SIGKILL, no clean-up).

    proc = start_group([sys.executable, "-m", "rtkit", "hub", ...], stdout=subprocess.PIPE)
    lines = OutputLines(proc)
    lines.wait_for("rtkit hub listening on", within=20)
    ...
    stop_group(proc, timeout=5)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = [
    "OutputLines",
    "find_program",
    "free_port",
    "kill_group",
    "port_open",
    "start_group",
    "stop_group",
    "stop_groups",
    "wait_for_port",
]

# The poll interval where there is no event to wait on (a port that is not
# listening yet cannot be waited for any other way).
_POLL = 0.05


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_program(name: str) -> str | None:
    """The path of the program ``name``: on PATH, else in /usr/sbin or
    /usr/bin (Debian installs its servers in sbin, which a user's PATH may
    lack); None when it is not installed."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    text: bool = False,
    preexec_fn: Callable[[], Any] | None = None,
) -> subprocess.Popen[Any]:
    """Start ``argv`` as the leader of a new session and process group (its
    process id is the group id :func:`stop_group` and :func:`kill_group` use)."""
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        stdin=stdin,
        text=text,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    # The group may be gone already (the leader and all it started exited).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def kill_group(proc: subprocess.Popen[Any], wait: float = 10.0) -> None:
    """SIGKILL the process group: nothing in it gets a chance to clean up."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(wait)
    else:
        # Children that outlived the leader go too.
        _signal_group(proc, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """SIGTERM the leader and wait ``timeout`` seconds for it to exit, then
    SIGKILL the whole group; returns the leader's exit code.

    Only the leader is asked to stop: it stops what it started in its own
    order (a Jupyter server stops its extensions before its kernels). What is
    left of the group once it has exited is killed.
    """
    return stop_groups([proc], timeout)[0]


def stop_groups(procs: Sequence[subprocess.Popen[Any]], timeout: float = 15.0) -> list[int]:
    """:func:`stop_group` for several processes at once: all are asked to
    stop before any is waited for, so they shut down side by side within
    one ``timeout``. Each is signalled once; a second SIGTERM would cut a
    clean shutdown short."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(10)
        _signal_group(proc, signal.SIGKILL)
    return [proc.returncode for proc in procs]


def wait_for_port(
    port: int,
    proc: subprocess.Popen[Any] | None = None,
    *,
    host: str = "127.0.0.1",
    within: float = 20.0,
) -> None:
    """Return once ``host:port`` accepts a connection. Raises RuntimeError if
    ``proc`` exits first, TimeoutError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{_name(proc)} exited with {proc.returncode} while starting")
        if port_open(host, port, timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {within} s")
        time.sleep(_POLL)


class OutputLines:
    """Every line ``proc`` writes to its stdout pipe (opened in text mode),
    read on a daemon thread.

    ``lines`` grows as output arrives (without line endings); :meth:`wait_for`
    blocks until a line matches or the output ends. The pipe is closed once
    the process has closed it, since one left to the garbage collector is a
    ResourceWarning.
    """

    def __init__(self, proc: subprocess.Popen[str], lines: list[str] | None = None) -> None:
        if proc.stdout is None:
            raise ValueError("start the process with stdout=subprocess.PIPE and text=True")
        self.proc = proc
        # A list of the caller's, to keep the output of a restarted process in one place.
        self.lines: list[str] = lines if lines is not None else []
        # wait_for looks at this process's lines only, not at what the list
        # held before (the previous run's "ready" line, say).
        self._first = len(self.lines)
        self.closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, pipe: IO[str]) -> None:
        with pipe:
            for line in pipe:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(
        self, match: str | Callable[[str], bool], within: float, *, since: int | None = None
    ) -> str:
        """The first line containing ``match`` (or for which it is true),
        among the lines from index ``since`` of ``lines`` (by default, this
        process's first). Raises RuntimeError when the output ends without
        one (the process exited), TimeoutError after ``within`` seconds."""
        test = match if callable(match) else lambda line: match in line
        deadline = time.monotonic() + within
        seen = self._first if since is None else since
        with self._changed:
            while True:
                while seen < len(self.lines):
                    if test(self.lines[seen]):
                        return self.lines[seen]
                    seen += 1
                if self.closed:
                    raise RuntimeError(f"{_name(self.proc)} exited while starting")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{_name(self.proc)}: no such line in {within} s")
                self._changed.wait(remaining)

    def text(self, last: int | None = None) -> str:
        """The output so far (its ``last`` lines), for error messages."""
        with self._changed:
            return "\n".join(self.lines[-last:] if last else self.lines)


def _name(proc: subprocess.Popen[Any]) -> str:
    args = proc.args
    if isinstance(args, list | tuple) and args:
        return os.path.basename(str(args[0]))
    return str(args)

"""A real `cargoscan serve` as a child process: started, waited for, stopped.

The demo, the service benchmarks and the tests that need a real server process
(signals, kill -9, a browser) all run it this way, so that a server that dies at start
or never gets ready says why in one place: the error ends with its log's tail.
In-process servers (``TestClient``, uvicorn in a thread) do not need this.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["HOST", "ServerError", "ServerProcess", "free_port", "serving", "start_server"]

HOST = "127.0.0.1"
LOG_TAIL_LINES = 30


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's tail."""


def free_port(first: int | None = None) -> int:
    """A loopback port nobody listens on now: ``first`` or one of the 19 after it when one
    is free (a port people can remember), else any."""
    for port in range(first, first + 20) if first is not None else ():
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM the server when its parent dies, however it dies (no orphan server)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class ServerProcess:
    """A started `cargoscan serve`: its process (to signal or kill), URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: the signal that ended it)."""
        return self.proc.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(
        self, timeout_s: float = 120.0, probe: str = "/readyz", poll_s: float = 0.1
    ) -> None:
        """Until ``probe`` answers 200 (``/healthz``: up; ``/readyz``: a model loaded too).
        ServerError with the log's tail if the server exits first or takes longer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"the service exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}{probe}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(poll_s)
        raise ServerError(f"the service did not answer in {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (the server drains, then exits) and its exit status; killed when it takes
        longer than ``timeout_s`` or on a Ctrl-C meanwhile."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            self.proc.kill()
            return self.proc.wait()


def start_server(
    port: int,
    *,
    log: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    host: str = HOST,
    own_session: bool = False,
) -> ServerProcess:
    """`cargoscan serve --host HOST --port PORT ARGS` under this Python, its output appended
    to ``log``; settings not given as ``args`` come from ``env`` (CARGOSCAN_*).

    ``own_session``: the terminal's Ctrl-C reaches only the caller, which stops the server
    in order, and on Linux the server is told to die with the caller (no orphan)."""
    cmd = [sys.executable, "-m", "cargoscan", "serve", "--host", host, "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*cmd, *args],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
            preexec_fn=_die_with_parent if own_session and sys.platform == "linux" else None,
        )
    return ServerProcess(proc, f"http://{host}:{port}", log)


@contextmanager
def serving(
    port: int,
    *,
    log: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout_s: float = 120.0,
    probe: str = "/readyz",
    stop_timeout_s: float = 60.0,
) -> Iterator[ServerProcess]:
    """A server that is ready on entry and stopped (SIGTERM, else killed) on exit, also when
    it never got ready; its exit status is then ``returncode``."""
    server = start_server(port, log=log, args=args, env=env, cwd=cwd)
    try:
        server.wait_ready(ready_timeout_s, probe)
        yield server
    finally:
        server.stop(stop_timeout_s)

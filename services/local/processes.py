"""Child processes for the local runtime and the test suite.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only
the parent, which then stops the children in a deliberate order (services
first, their servers last). On Linux a child also dies with its parent: it is
sent its stop signal when the parent is gone, even when the parent was killed
with SIGKILL (PR_SET_PDEATHSIG). Each child is recorded in a pid file together
with its start time: if a previous parent was killed and left the child running
(elsewhere than on Linux, or a child that ignored the signal), the next start
finds and stops that leftover instead of failing on a busy port or a locked data
directory. The start time guards against a recycled pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import psutil

log = logging.getLogger(__name__)

# psutil reports create_time with a resolution of a clock tick; a recycled pid
# started within the same tick is not a realistic concern.
_CREATE_TIME_TOLERANCE = 0.05
_KILL_WAIT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class RunAs:
    """An unprivileged system account a child is started under (used when we are root)."""

    name: str
    uid: int
    gid: int


class PopenCredentials(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def popen_credentials(run_as: RunAs | None) -> PopenCredentials:
    """subprocess keyword arguments that start a child as `run_as` (nothing if None)."""
    if run_as is None:
        return {}
    # extra_groups=[] drops our supplementary groups as well.
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def dies_with_parent(death_signal: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send `death_signal` to the child when its parent dies, however it dies;
    None where that cannot be had (not Linux, or not the main thread). The kernel ties the signal to the thread
    that forked the child, not to the process: a child started from a thread that ends would be signalled then.
    It runs in the child after its user was switched (so it holds for a server run as another user), and uses
    only what was prepared before the fork."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    number = int(death_signal)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)  # should it fail, the pid file still finds a leftover
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(126)

    return preexec


def record_process(pid_file: Path, pid: int) -> None:
    """Write `pid` and its start time to `pid_file`."""
    create_time = psutil.Process(pid).create_time()
    temporary = pid_file.with_name(pid_file.name + ".tmp")
    temporary.write_text(f"{pid} {create_time!r}\n")
    temporary.replace(pid_file)


def recorded_process(pid_file: Path) -> psutil.Process | None:
    """The live process recorded in `pid_file`, or None if it is gone (or the pid was recycled)."""
    try:
        pid_text, create_time_text = pid_file.read_text().split()
        process = psutil.Process(int(pid_text))
        if abs(process.create_time() - float(create_time_text)) > _CREATE_TIME_TOLERANCE:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (OSError, ValueError, psutil.Error):
        return None


def stop_leftover(pid_file: Path, stop_signal: signal.Signals, timeout: float) -> None:
    """Stop a process a killed predecessor left running, then forget it."""
    process = recorded_process(pid_file)
    if process is not None:
        log.warning("stopping leftover process %d recorded in %s", process.pid, pid_file)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(stop_signal)
        if not _wait_gone(process, timeout):
            kill_group(process.pid)
            _wait_gone(process, _KILL_WAIT_SECONDS)
    pid_file.unlink(missing_ok=True)


def _wait_gone(process: psutil.Process, timeout: float) -> bool:
    """Wait for a process that is not our child to exit.

    psutil's wait() counts a zombie as alive, and an orphan's zombie lingers
    until init reaps it, which some container inits never do.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (its helpers too, e.g. postgres backends)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ChildProcess:
    """One run of a command as a child process in its own session."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        pid_file: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        run_as: RunAs | None = None,
        name: str | None = None,
        bound_to_parent: bool = True,
    ) -> None:
        """`log_path` receives stdout and stderr (appended); None means they go to ours. `name` is what messages
        call the child (the command's file name by default). `bound_to_parent` has the child sent `stop_signal`
        when we die (Linux)."""
        self.command = list(command)
        self.pid_file = pid_file
        self.stop_signal = stop_signal
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.run_as = run_as
        self.name = name or Path(self.command[0]).name
        self.bound_to_parent = bound_to_parent
        self._popen: subprocess.Popen[bytes] | None = None
        self._asked_to_stop_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def poll(self) -> int | None:
        """The exit code once the child has exited, else None (also None if never started)."""
        return self._popen.poll() if self._popen is not None else None

    def start(self, leftover_timeout: float = 30.0) -> None:
        stop_leftover(self.pid_file, self.stop_signal, leftover_timeout)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        output = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self._popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=dies_with_parent(self.stop_signal) if self.bound_to_parent else None,
                **popen_credentials(self.run_as),
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        record_process(self.pid_file, self._popen.pid)

    def signal_stop(self) -> None:
        """Ask the child to stop (its graceful stop signal); returns at once."""
        if self.running:
            assert self._popen is not None
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(self.stop_signal)
            if self._asked_to_stop_at is None:
                self._asked_to_stop_at = time.monotonic()

    def wait_stopped(self, timeout: float) -> int | None:
        """Wait up to `timeout` for the child to exit, then SIGKILL its process group (and say so)."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            asked_at = self._asked_to_stop_at
            waited = time.monotonic() - asked_at if asked_at is not None else timeout
            log.warning("%s did not stop within %.0f s of %s: killing it (SIGKILL)", self.name, waited,
                        self.stop_signal.name)
            kill_group(self._popen.pid)
            return self._popen.wait(_KILL_WAIT_SECONDS)
        finally:
            self.forget_pid_file()

    def stop(self, timeout: float) -> int | None:
        self.signal_stop()
        return self.wait_stopped(timeout)

    def forget_pid_file(self) -> None:
        """Remove the pid file if it still describes this child (it may have been replaced)."""
        if self._popen is not None and self._popen.poll() is not None:
            try:
                if self.pid_file.read_text().split()[0] == str(self._popen.pid):
                    self.pid_file.unlink()
            except (OSError, IndexError):
                pass

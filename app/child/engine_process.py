"""The engine as a child process: start it, read its JSON events, ask it to stop.

Training never runs in the window's process: a crash, an out-of-memory error or a kill in
the child never takes the window down. The child writes one JSON event per line on stdout
(see engine.run.events) and readable logs on stderr; this class turns those into Qt signals.
"""

from __future__ import annotations

import sys
from collections import deque

from PySide6.QtCore import QObject, QProcess, QTimer, Signal

from engine.run.events import parse_event

#: Kept lines of the child's stderr, shown when a run fails.
LOG_TAIL_LINES = 200
#: Verbs whose child reports the end of its run with a run_end event.
TRAINING_VERBS = ("train", "demo")


def engine_command() -> tuple[str, list[str]]:
    """Program and leading arguments that start the engine CLI: ``-m engine`` with this
    interpreter; in a frozen bundle (PyInstaller), where sys.executable is the app itself,
    the app's worker mode ``--engine`` (app.main.main)."""
    if getattr(sys, "frozen", False):
        return sys.executable, ["--engine"]
    return sys.executable, ["-m", "engine"]


class EngineProcess(QObject):
    """One engine child process.

    Signals:
        event(dict): a parsed event line from the child's stdout.
        malformed(str): a stdout line that is not a valid event (reported, then ignored).
        log(str): a line from the child's stderr.
        result(dict): a ``{"type": "result"}`` event of an exploring verb (embed, map,
            neighbours, knn, probe, export run with ``--json``).
        ended(str, int, str): how the child ended: status ("finished", "stopped", "failed",
            or "crashed" when it died without saying how), exit code, and the reason. A
            training run says how in its run_end event (without one it "crashed", whatever
            its exit code); an exploring verb finishes with exit code 0 or fails with an
            ``error`` event.
    """

    event = Signal(dict)
    result = Signal(dict)
    malformed = Signal(str)
    log = Signal(str)
    ended = Signal(str, int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._stdout_buffer = b""
        self._stderr_buffer = b""
        self._run_end: dict | None = None
        self._error: str | None = None
        self._expects_run_end = False
        self.log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._on_stop_timeout)

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.NotRunning

    def start(self, arguments: list[str]) -> None:
        """Start ``contrastive-engine <arguments>``; one child at a time per object."""
        if self.is_running():
            raise RuntimeError("the engine is already running")
        self._stdout_buffer = self._stderr_buffer = b""
        self._run_end = None
        self._error = None
        self._expects_run_end = bool(arguments) and arguments[0] in TRAINING_VERBS
        self.log_tail.clear()
        process = QProcess(self)
        process.readyReadStandardOutput.connect(self._on_stdout)
        process.readyReadStandardError.connect(self._on_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        program, leading = engine_command()
        self._process = process
        if hasattr(QProcess, "setUnixProcessParameters") and sys.platform != "win32":
            # A session of its own: a run left going when the window closes is not hung up
            # (SIGHUP) with the terminal the app was started from, and Ctrl-C there reaches
            # the app (which asks what to do with the run), not the engine directly.
            process.setUnixProcessParameters(QProcess.UnixProcessFlag.CreateNewSession)
        process.start(program, leading + list(arguments))

    def stop(self, timeout_ms: int = 60_000) -> None:
        """Ask the child to checkpoint and stop (``stop`` on its stdin); terminate it only if
        it has not exited after ``timeout_ms``."""
        if not self.is_running():
            return
        assert self._process is not None
        self._process.write(b"stop\n")
        self._kill_timer.start(timeout_ms)

    def kill(self) -> None:
        if self.is_running():
            assert self._process is not None
            self._process.kill()

    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return int(self._process.processId()) if self.is_running() else None

    def detach(self) -> int | None:
        """Let the child run on without this object (the window is closing during a run):
        its output is no longer read and its stdin is closed, so only SIGTERM or SIGINT can
        stop it now (with a checkpoint). Returns its process id, or None if none runs.

        A QProcess that is destroyed kills a child it still thinks is running, and the
        window's objects are destroyed when it closes; so the QProcess is first told that
        its child is gone. The engine keeps writing its events to the run directory and
        goes on when stdout and stderr have no reader any more.
        """
        if not self.is_running():
            return None
        process, self._process = self._process, None
        assert process is not None
        pid = int(process.processId())
        self._kill_timer.stop()
        process.blockSignals(True)  # no ended(): this object no longer follows the child
        process.closeWriteChannel()
        process.setProcessState(QProcess.NotRunning)
        process.deleteLater()
        return pid

    def wait(self, ms: int) -> bool:
        """Block until the child exits (for shutdown and tests only, never on the GUI's
        normal path)."""
        return self._process is None or self._process.waitForFinished(ms)

    # --- child output --------------------------------------------------------------------

    def _lines(self, data: bytes, buffer: bytes) -> tuple[list[str], bytes]:
        buffer += data
        *complete, rest = buffer.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in complete], rest

    def _on_stdout(self) -> None:
        assert self._process is not None
        lines, self._stdout_buffer = self._lines(bytes(self._process.readAllStandardOutput()),
                                                 self._stdout_buffer)
        for line in lines:
            if not line.strip():
                continue
            event = parse_event(line)
            if event is None:
                self.malformed.emit(line[:500])
                continue
            kind = event.get("type")
            if kind == "run_end":
                self._run_end = event
            elif kind == "error":
                self._error = str(event.get("message", "the engine reported an error"))
            self.event.emit(event)
            if kind == "result":
                self.result.emit(event)

    def _on_stderr(self) -> None:
        assert self._process is not None
        lines, self._stderr_buffer = self._lines(bytes(self._process.readAllStandardError()),
                                                 self._stderr_buffer)
        for line in lines:
            self.log_tail.append(line)
            self.log.emit(line)

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._on_stdout()
        if self._stdout_buffer.strip():  # a last line without its newline: a truncated event
            self.malformed.emit(self._stdout_buffer.decode("utf-8", errors="replace")[:500])
            self._stdout_buffer = b""
        if self._run_end is not None:
            status = self._run_end.get("status")
            status = status if isinstance(status, str) and status else "failed"
            reason = str(self._run_end.get("reason", ""))
        elif self._error is not None:
            status, reason = "failed", self._error
        elif exit_status == QProcess.NormalExit and exit_code == 0 and not self._expects_run_end:
            status, reason = "finished", "done"
        else:
            if exit_status == QProcess.CrashExit:
                how = "was killed without finishing"
            elif exit_code == 0:  # a training child that never said how its run ended
                how = "exited (code 0) without reporting how the run ended"
            else:
                how = f"exited with code {exit_code} without finishing"
            last = next((line for line in reversed(self.log_tail) if line.strip()), "")
            status, reason = "crashed", (f"the engine {how}; the last "
                                         "checkpoint, if any, is kept"
                                         + (f" (last message: {last.strip()[:300]})"
                                            if last else ""))
        self.ended.emit(status, exit_code, reason)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.FailedToStart:
            self.ended.emit("crashed", -1, "the engine could not be started: "
                            f"{self._process.errorString() if self._process else error}")

    def _on_stop_timeout(self) -> None:
        if self.is_running():
            assert self._process is not None
            self.log_tail.append("the engine did not stop in time; terminating it")
            self._process.terminate()
            QTimer.singleShot(5000, self.kill)

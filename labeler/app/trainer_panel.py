"""The model and the follow trainer in the window: what is in use, how good it is, and start/stop.

* **Status bar**: "model v7 · mAP 0.62 (+0.04) · 1,240 images, 18 new since" — the model version the
  prediction worker uses, its mAP@0.5 on the test split when the follow trainer's gate registered it (and
  the change against the model it replaced), else its validation figure; the images it was trained on, and
  how many were submitted after its data were cut. Beside it the trainer's state ("trainer: step 1,234").
* **Hot swap**: when a newer version is registered, the images on screen and prefetched are asked for again
  (`PrelabelController.repredict`); the worker loads the new model in its own thread on the first of them.
* **Start / stop**: the toolbar button starts `labeler train WS --out WS/models/follow --follow` as a child
  process (its own process: it keeps training through a GUI stall, and keeps running when the window closes,
  until stopped), with a lower CPU priority and one core left to the window. Stop asks the run to stop
  through its status row (`projects.trainer_status`), so a trainer started on another machine or from a
  terminal stops too; a child of this window also gets SIGTERM.

The workspace is read in a background thread with its own connection every `POLL_S` seconds; the GUI thread
only formats what it is handed, so the trainer never stalls the window.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel

from labeler.app.startup import after_first_paint
from projects import trainer_status
from projects.workspace import Workspace

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

log = logging.getLogger(__name__)

POLL_S = 2.0
FOLLOW_DIR = "models/follow"
LOG_NAME = "follow.log"
TRAINER_NICE = 10


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar says about one model version (read from its models row)."""

    model_id: int
    version: str
    map50: float | None  # on the test split (the follow gate) or the validation split
    delta: float | None  # against the model it replaced (the gate), when known
    figure_set: str  # "test" or "val" or ""
    trained_images: int | None
    new_since: int | None


@dataclass(frozen=True)
class Snapshot:
    model: ModelInfo | None
    latest_model_id: int | None
    run: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v == v else None


def model_info(ws: Workspace, row: dict[str, Any]) -> ModelInfo:
    """The figures of one models row: gate figure and delta for a follow model, else the val mAP@0.5."""
    metrics = json.loads(row.get("metrics") or "{}") if isinstance(row.get("metrics"), str) else row.get("metrics")
    config = json.loads(row.get("config") or "{}") if isinstance(row.get("config"), str) else row.get("config")
    metrics, config = metrics or {}, config or {}
    gate = metrics.get("gate") if isinstance(metrics.get("gate"), dict) else None
    if gate is not None:
        value, delta, where = _number(gate.get("candidate")), _number(gate.get("delta")), "test"
        if gate.get("metric") != "mAP50":
            value = _number((metrics.get("test") or {}).get("mAP50"))
    elif isinstance(metrics.get("val"), dict):
        value, delta, where = _number(metrics["val"].get("mAP50")), None, "val"
    else:
        value, delta, where = None, None, ""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    projects = data.get("projects") if isinstance(data.get("projects"), dict) else {}
    trained = sum(int((p.get("images") or {}).get("train", 0)) for p in projects.values() if isinstance(p, dict))
    cut = data.get("cut_at") or row.get("created_at")
    new = trainer_status.submitted_count(ws, since=cut, projects=list(projects) or None) if cut else None
    return ModelInfo(int(row["id"]), str(row["version"]), value, delta, where, trained if projects else None, new)


def read_snapshot(ws: Workspace, model_in_use: int | None) -> Snapshot:
    """The status bar's data: the model in use (else the newest registered), the newest id, the latest run."""
    rows = ws.models()
    latest = rows[-1]["id"] if rows else None
    row = next((r for r in rows if r["id"] == model_in_use), None) or (rows[-1] if rows else None)
    return Snapshot(model_info(ws, row) if row else None, latest, trainer_status.latest_run(ws))


def model_text(info: ModelInfo | None) -> str:
    """ "model v7 · mAP 0.62 (+0.04) · 1,240 images, 18 new since" (parts left out when unknown)."""
    if info is None:
        return "no model yet"
    parts = [f"model v{info.model_id}"]
    if info.map50 is not None:
        figure = f"mAP {info.map50:.2f}"
        if info.delta is not None:
            figure += f" ({info.delta:+.2f})"
        parts.append(figure)
    if info.trained_images is not None:
        images = f"{info.trained_images:,} images"
        if info.new_since is not None:
            images += f", {info.new_since:,} new since"
        parts.append(images)
    elif info.new_since is not None:
        parts.append(f"{info.new_since:,} images new since")
    return " · ".join(parts)


def trainer_text(run: dict[str, Any] | None) -> str:
    if run is None:
        return "trainer: off"
    if run["alive"]:
        state = run["state"]
        if state == "training":
            world = (run.get("config") or {}).get("world_size") or 1  # `labeler train --follow --nproc N`
            return f"trainer: step {run['steps']:,}" + (f" on {world} ranks" if world > 1 else "")
        if state == "waiting":
            return "trainer: waiting for new images"
        return f"trainer: {state}…"
    if run["state"] in trainer_status.ACTIVE:
        return "trainer: not responding"
    return "trainer: failed" if run["state"] == "failed" else "trainer: off"


def trainer_command(folder: str | Path, out: Path, extra: list[str] | None = None) -> list[str]:
    """The child process: the same CLI a terminal would run, at a lower priority, one core left to the window."""
    threads = max(1, (os.cpu_count() or 2) - 1)
    return [sys.executable, "-m", "labeler", "train", str(folder), "--out", str(out), "--follow",
            "--nice", str(TRAINER_NICE), "--threads", str(threads), *(extra or [])]


class _Poller(QObject):
    """Reads the status in its own thread and connection; `snapshot` arrives in the GUI thread."""

    snapshot = Signal(object)

    def __init__(self, folder: str | Path, model_in_use: Callable[[], int | None], interval_s: float):
        super().__init__()
        self.folder, self.model_in_use, self.interval_s = folder, model_in_use, interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labeler-trainer-status", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._stop.is_set() and not self._started:  # not for a window closed before its first paint
            self._started = True
            self._thread.start()

    def poll_now(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            ws = Workspace.open(self.folder)
        except Exception as e:
            self.snapshot.emit(Snapshot(None, None, None, f"cannot read the workspace ({e})"))
            return
        try:
            while not self._stop.is_set():
                try:
                    self.snapshot.emit(read_snapshot(ws, self.model_in_use()))
                except Exception as e:  # a locked or changing database: the next poll tries again
                    log.warning("trainer status: %s", e)
                self._wake.wait(self.interval_s)
                self._wake.clear()
        finally:
            ws.close()


class TrainerPanel(QObject):
    model_registered = Signal(int)  # a newer model version appeared in the workspace (its id)

    def __init__(self, window: MainWindow, out: str | Path | None = None, extra_args: list[str] | None = None,
                 poll_s: float = POLL_S):
        super().__init__(window)
        self.w = window
        self.folder = Path(window.session.ws.folder)  # a team workspace: its image root
        self.location = window.session.ws.location  # what the poller and the child open (a folder or a URL)
        self.out = Path(out) if out else self.folder / FOLLOW_DIR
        self.extra_args = list(extra_args or [])
        self.last: Snapshot | None = None
        self.child: subprocess.Popen | None = None
        self.child_pid: int | None = None
        self.model_label = QLabel("model: …")
        self.model_label.setToolTip("The model the pre-labels come from")
        self.trainer_label = QLabel("trainer: …")
        window.statusBar().addPermanentWidget(self.model_label)
        window.statusBar().addPermanentWidget(self.trainer_label)
        self.action = QAction("Start trainer", window)
        self.action.setToolTip("Train the model continuously on the submitted images (labeler train --follow)")
        self.action.triggered.connect(self.toggle)
        bar = window.toolbar if hasattr(window, "toolbar") else window.addToolBar("Trainer")
        bar.addAction(self.action)
        self.poller = _Poller(self.location, self._model_in_use, poll_s)
        self.poller.snapshot.connect(self._on_snapshot)
        self.model_registered.connect(self._on_model_registered)
        if window.prelabels is not None:
            window.prelabels.worker.status_changed.connect(lambda _text: self.poller.poll_now())
        window.installEventFilter(self)
        after_first_paint(window, self.poller.start)  # the image first; the status a moment later

    # --- reading -------------------------------------------------------------------------------------------
    def _model_in_use(self) -> int | None:
        pl = self.w.prelabels
        return pl.worker.service.model_id if pl is not None else None

    def _on_snapshot(self, snap: Snapshot) -> None:
        if self.child is not None and self.child.poll() is not None:  # ended: reaped, never left a zombie
            self.child = None
        previous, self.last = self.last, snap
        if snap.error:
            self.model_label.setText(f"model: {snap.error}")
            return
        self.model_label.setText(model_text(snap.model))
        if snap.model is not None:
            m = snap.model
            where = {"test": "on the test split, as the follow trainer's gate measured it",
                     "val": "on the validation split"}.get(m.figure_set, "")
            self.model_label.setToolTip(f"model {m.version} (id {m.model_id}); mAP@0.5 {where}")
        self.trainer_label.setText(trainer_text(snap.run))
        run = snap.run
        if run is not None:
            self.trainer_label.setToolTip(f"{run.get('message') or ''}\nrun {run['id']}, pid {run['pid']} on "
                                          f"{run['host']}, writing to {run['out']}".strip())
        self.action.setText("Stop trainer" if run is not None and run["alive"] else "Start trainer")
        if previous is not None and snap.latest_model_id is not None and \
                snap.latest_model_id != previous.latest_model_id:
            self.model_registered.emit(snap.latest_model_id)

    def _on_model_registered(self, model_id: int) -> None:
        """A newer version: the visible and prefetched images are predicted again (the worker swaps to it)."""
        if self.w.prelabels is not None:
            self.w.prelabels.repredict()
        self.w.statusBar().showMessage(f"model v{model_id} registered: pre-labels are being refreshed", 5000)

    # --- start / stop --------------------------------------------------------------------------------------
    def running(self) -> dict[str, Any] | None:
        run = self.last.run if self.last else None
        return run if run is not None and run["alive"] else None

    def toggle(self) -> None:
        if self.running() is not None or (self.child_pid is not None and trainer_status.pid_running(self.child_pid)):
            self.stop()
        else:
            self.start()

    def start(self) -> bool:
        """Start the follow trainer as a child process in its own session (a Ctrl-C meant for the window does not
        reach it, and it outlives the window); its output goes to OUT/follow.log."""
        if self.running() is not None:
            self.w.statusBar().showMessage("a trainer is already running on this workspace", 5000)
            return False
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = trainer_command(self.location, self.out, self.extra_args)
        try:
            with open(self.out / LOG_NAME, "ab") as log_file:
                self.child = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True,
                                              cwd=str(Path(__file__).resolve().parents[2]))
        except OSError as e:
            self.w.statusBar().showMessage(f"the trainer could not be started ({e})", 10000)
            return False
        self.child_pid = self.child.pid
        self.trainer_label.setText("trainer: starting…")
        self.action.setText("Stop trainer")
        self.w.statusBar().showMessage(f"trainer started (pid {self.child_pid}); its log: {self.out / LOG_NAME}",
                                       8000)
        self.poller.poll_now()
        return True

    def stop(self) -> None:
        """Ask the running trainer to stop (through the workspace), and SIGTERM a child of this window."""
        run = self.running()
        if run is not None:
            trainer_status.request_stop(self.w.session.ws, run["id"])
        if self.child_pid is not None and trainer_status.pid_running(self.child_pid):
            try:
                os.kill(self.child_pid, signal.SIGTERM)
            except OSError:
                pass
        self.trainer_label.setText("trainer: stopping…")
        self.action.setText("Start trainer")
        self.poller.poll_now()

    def eventFilter(self, obj, event) -> bool:
        if obj is self.w and event.type() == QEvent.Type.Close:
            self.poller.stop()  # the trainer itself keeps running: Stop trainer ends it
        return False


def install(window: MainWindow, **kwargs: Any) -> TrainerPanel:
    panel = TrainerPanel(window, **kwargs)
    window.trainer = panel
    return panel

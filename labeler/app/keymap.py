"""Every key binding of the labeling window, in one table.

Each row is (action name, key sequences, description, handler); the handlers are small functions
of the main window, registered with `@bind`, in the manner of napari's key-binding modules. The
window turns each row into a QAction, and the F1 sheet renders the same rows, so the sheet cannot
drift from what the keys do. Mouse gestures are listed as rows without a handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence

from widgets import findings_panel
from widgets.shortcut_sheet import SheetRow

if TYPE_CHECKING:
    from labeler.app.main_window import MainWindow

Handler = Callable[["MainWindow"], None]


@dataclass(frozen=True)
class Binding:
    name: str
    keys: tuple[str, ...]  # QKeySequence strings ("Ctrl+Z"), or words for mouse gestures
    description: str
    handler: Handler | None  # None: a mouse gesture the canvas implements, listed for the sheet
    group: str
    family: str = ""  # rows of one family share a line of the F1 sheet (the nine class keys, the nudges)


BINDINGS: list[Binding] = []


def bind(name: str, keys: tuple[str, ...], description: str, group: str):
    def wrap(fn: Handler) -> Handler:
        BINDINGS.append(Binding(name, keys, description, fn, group))
        return fn

    return wrap


def gesture(name: str, keys: str, description: str, group: str = "Mouse") -> None:
    """A row without a handler: a mouse gesture, or keys a widget handles while it has the focus."""
    BINDINGS.append(Binding(name, (keys,), description, None, group))


# The F1 sheet lists groups in this order, each once, wherever their rows were registered (the
# controllers' modules add rows to "Pre-labels", "Lint findings" and "Mouse" when they are imported).
GROUP_ORDER = ("Images", "Boxes", "Pre-labels", "Lint findings", "View", "Window", "Mouse")


# --- images ------------------------------------------------------------------------------------
@bind("submit_and_next", ("Return", "Enter"),
      "Accept the selected pre-label; with none selected, submit the image (after the lint check) and go to the "
      "next one not yet submitted", "Images")
def submit_and_next(w: MainWindow) -> None:
    w.submit()  # the submit pipeline: its checks (selected pre-label, unreadable image, lint) may stop it


@bind("next_image", ("D", "PgDown"), "Next image", "Images")
def next_image(w: MainWindow) -> None:
    w.session.next()


@bind("previous_image", ("A", "PgUp"), "Previous image", "Images")
def previous_image(w: MainWindow) -> None:
    w.session.previous()


@bind("next_unlabeled", ("N",), "Next unlabeled image", "Images")
def next_unlabeled(w: MainWindow) -> None:
    w.session.next_unlabeled()


@bind("first_image", ("Home",), "First image of the list", "Images")
def first_image(w: MainWindow) -> None:
    w.session.go_to(0)


@bind("last_image", ("End",), "Last image of the list", "Images")
def last_image(w: MainWindow) -> None:
    w.session.go_to(len(w.session.queue) - 1)


# --- boxes -------------------------------------------------------------------------------------
def _class_handler(digit: str) -> Handler:
    def handler(w: MainWindow) -> None:
        w.use_shortcut(digit)

    return handler


for _d in "123456789":
    BINDINGS.append(Binding(f"class_{_d}", (_d, f"Num+{_d}"),
                            f"Class {_d}: give it to the selected boxes or pre-labels, and draw the next boxes with it",
                            _class_handler(_d), "Boxes", "Class 1–9 (also on the keypad): give it to the selected "
                                                         "boxes or pre-labels (Enter then accepts them with it), "
                                                         "and draw the next boxes with it"))


@bind("draw_mode", ("W",), "Draw: the next drag draws a box wherever it starts, also on a box or a pre-label "
                           "(as in labelImg; Esc cancels)", "Boxes")
def draw_mode(w: MainWindow) -> None:
    w.arm_draw()


@bind("pick_class", ("C",), "Pick a class by name (searchable)", "Boxes")
def pick_class(w: MainWindow) -> None:
    w.open_class_picker()


@bind("delete_boxes", ("Delete", "Backspace"), "Delete the selected boxes, or reject the selected pre-labels", "Boxes")
def delete_boxes(w: MainWindow) -> None:
    w.delete_selected()  # selected proposals are rejected, else the selected boxes deleted


@bind("select_next_box", ("Tab",), "Select the next box", "Boxes")
def select_next_box(w: MainWindow) -> None:
    w.canvas.select_next(1)


@bind("select_previous_box", ("Shift+Tab",), "Select the previous box", "Boxes")
def select_previous_box(w: MainWindow) -> None:
    w.canvas.select_next(-1)


@bind("select_all_boxes", ("Ctrl+A",), "Select every box", "Boxes")
def select_all_boxes(w: MainWindow) -> None:
    w.canvas.select(w.canvas.annotation_boxes())
    w.canvas.selection_changed.emit(w.canvas.selected_ids())


@bind("escape", ("Esc",), "Cancel the drawing in progress, else clear the selection", "Boxes")
def escape(w: MainWindow) -> None:
    if not w.canvas.cancel_gesture():
        w.canvas.select([])
        w.canvas.selection_changed.emit([])


def _nudge(dx: int, dy: int) -> Handler:
    def handler(w: MainWindow) -> None:
        w.canvas.nudge(dx, dy)

    return handler


for _key, (_dx, _dy) in {"Left": (-1, 0), "Right": (1, 0), "Up": (0, -1), "Down": (0, 1)}.items():
    BINDINGS.append(Binding(f"nudge_{_key.lower()}", (_key,), f"Move the selected boxes 1 px {_key.lower()}",
                            _nudge(_dx, _dy), "Boxes", "Move the selected boxes 1 px"))
    BINDINGS.append(Binding(f"nudge_{_key.lower()}_10", (f"Shift+{_key}",),
                            f"Move the selected boxes 10 px {_key.lower()}", _nudge(10 * _dx, 10 * _dy), "Boxes",
                            "Move the selected boxes 10 px"))


@bind("undo", ("Ctrl+Z",), "Undo (unlimited within the session)", "Boxes")
def undo(w: MainWindow) -> None:
    w.session.undo()


@bind("redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Redo", "Boxes")
def redo(w: MainWindow) -> None:
    w.session.redo()


# --- view --------------------------------------------------------------------------------------
@bind("fit", ("F",), "Fit the image to the window", "View")
def fit(w: MainWindow) -> None:
    w.canvas.fit()


@bind("new_image_zoom", ("Ctrl+Shift+F",),
      "New images open fitted (default) or keep the zoom of the image before: a switch, remembered", "View")
def new_image_zoom(w: MainWindow) -> None:
    w.toggle_new_image_zoom()


@bind("toggle_boxes", ("Ctrl+H",), "Hide / show the boxes and pre-labels, to see the image alone", "View")
def toggle_boxes(w: MainWindow) -> None:
    w.toggle_boxes()


@bind("theme", ("Ctrl+Shift+T",), "Theme: follow the system, dark, light (a switch, remembered)", "View")
def theme_(w: MainWindow) -> None:
    w.cycle_theme()


@bind("actual_size", ("Ctrl+0",), "Zoom to 100 % (one image pixel per screen pixel)", "View")
def actual_size(w: MainWindow) -> None:
    w.canvas.actual_size()


@bind("zoom_in", ("=", "+"), "Zoom in", "View")
def zoom_in(w: MainWindow) -> None:
    w.canvas.zoom_by(1.25)


@bind("zoom_out", ("-",), "Zoom out", "View")
def zoom_out(w: MainWindow) -> None:
    w.canvas.zoom_by(0.8)


# --- window ------------------------------------------------------------------------------------
@bind("shortcuts", ("F1",), "This sheet of every key and mouse binding", "Window")
def shortcuts(w: MainWindow) -> None:
    w.show_shortcut_sheet()


@bind("open_workspace", ("Ctrl+O",), "Open another workspace folder", "Window")
def open_workspace(w: MainWindow) -> None:
    w.choose_workspace()


@bind("save", ("Ctrl+S",), "Nothing to save: says so (every edit is stored the moment it is made)", "Window")
def save(w: MainWindow) -> None:
    w.say_saved()


@bind("quit", ("Ctrl+Q",), "Quit (every edit is already saved)", "Window")
def quit_(w: MainWindow) -> None:
    w.close()


gesture("draw", "Left-drag on the image", "Draw a box with the current class, also over an unselected box")
gesture("select", "Click a box / Ctrl+click", "Select it / add it to the selection")
gesture("move", "Drag a selected box", "Move it (clamped to the image)")
gesture("resize", "Drag a handle", "Resize the selected box")
gesture("zoom", "Wheel", "Zoom at the cursor")
gesture("pan", "Middle-drag, or hold Space and drag", "Pan")
gesture("accept_proposal", "Double-click a dashed proposal", "Accept the model's box")


def install(window: MainWindow, bindings: list[Binding] = BINDINGS) -> dict[str, QAction]:
    """One QAction per keyed binding, added to the window so its keys work wherever the focus is."""
    seen: dict[str, str] = {}
    actions: dict[str, QAction] = {}
    for b in bindings:
        if b.handler is None:
            continue
        for key in b.keys:
            canon = QKeySequence(key).toString()
            if canon in seen:
                raise ValueError(f"key {key!r} is bound twice: {seen[canon]!r} and {b.name!r}")
            seen[canon] = b.name
        action = QAction(b.description, window)
        action.setObjectName(b.name)
        action.setShortcuts([QKeySequence(k) for k in b.keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setAutoRepeat(b.group in ("Boxes", "Images", "View"))
        action.triggered.connect(lambda checked=False, h=b.handler: h(window))
        window.addAction(action)
        actions[b.name] = action
    return actions


def sheet_rows(bindings: list[Binding] = BINDINGS) -> list[SheetRow]:
    """The table as the F1 sheet shows it, keys in the platform's own notation; a family is one line."""
    rows: list[SheetRow] = []
    keyless: set[int] = set()  # rows of gestures and widget keys: after the window's keys of their group
    families: dict[str, int] = {}
    for b in bindings:
        keys = b.keys if b.handler is None else [QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText)
                                                 for k in b.keys if not (b.family and k.startswith("Num+"))]
        text = " / ".join(dict.fromkeys(keys))
        if b.family and b.family in families:
            row = rows[families[b.family]]
            rows[families[b.family]] = SheetRow(row.group, f"{row.keys} {text}", row.description)
            continue
        if b.family:
            families[b.family] = len(rows)
        if b.handler is None:
            keyless.add(len(rows))
        rows.append(SheetRow(b.group, text, b.family or b.description))
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    other = rank["Window"] + 0.5  # a group not named above goes before the mouse gestures
    order = sorted(range(len(rows)), key=lambda i: (rank.get(rows[i].group, other), i in keyless, i))
    return [rows[i] for i in order]


def _keys_text(keys: tuple[Qt.Key, ...]) -> str:
    return " / ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in keys)


# Keys the findings list handles itself while it has the focus (widgets/findings_panel.py decides them)
gesture("findings_list_dismiss", f"{_keys_text(findings_panel.DISMISS_KEYS)} (findings list focused)",
        "Dismiss the selected finding (as X)", "Lint findings")
gesture("findings_list_move", f"{_keys_text(findings_panel.LIST_KEYS)} (findings list focused)",
        "Go through the findings; the canvas frames each one's box", "Lint findings")
gesture("findings_list_leave", f"{_keys_text((Qt.Key.Key_Escape,))} (findings list focused)",
        "Back to the image", "Lint findings")

"""Dark or light, following the system unless the annotator chose one (Ctrl+Shift+T, remembered).

The app draws with Qt's Fusion style and one of two palettes, so the look is the same on every platform.
"system" follows the platform's colour scheme (`QStyleHints.colorScheme`) and changes with it while the
app runs; where the platform does not say (Unknown), it is light. The canvas keeps its own dark
background either way: images are judged against the same grey all day.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

MODES = ("system", "dark", "light")

_DARK = {
    QPalette.ColorRole.Window: "#2b2b2f", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1f1f23", QPalette.ColorRole.AlternateBase: "#2b2b2f",
    QPalette.ColorRole.ToolTipBase: "#3a3a40", QPalette.ColorRole.ToolTipText: "#f0f0f0",
    QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#35353b",
    QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.BrightText: "#ff5555",
    QPalette.ColorRole.Highlight: "#3d7bd9", QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#6ea8ff", QPalette.ColorRole.PlaceholderText: "#8a8a90",
}


def system_scheme() -> str:
    """"dark" or "light": what the platform asks for (light when it does not say)."""
    app = QGuiApplication.instance()
    scheme = app.styleHints().colorScheme() if app is not None else Qt.ColorScheme.Unknown
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def palette(scheme: str) -> QPalette:
    style = QApplication.style()
    pal = QPalette(style.standardPalette())
    if scheme == "dark":
        for role, color in _DARK.items():
            pal.setColor(role, QColor(color))
        for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
            pal.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7a7a80"))
    return pal


class Theme:
    """The app's theme: `apply(mode)` sets it; in "system" mode it follows the platform's changes."""

    def __init__(self, app: QApplication):
        self.app = app
        self.mode = "system"
        self.scheme = "light"
        app.setStyle("Fusion")
        app.styleHints().colorSchemeChanged.connect(self._on_system_changed)

    def apply(self, mode: str) -> str:
        """Use `mode` ("system", "dark" or "light"); returns the scheme in effect ("dark" or "light")."""
        if mode not in MODES:
            raise ValueError(f"unknown theme {mode!r} (one of {', '.join(MODES)})")
        self.mode = mode
        self.scheme = system_scheme() if mode == "system" else mode
        self.app.setPalette(palette(self.scheme))
        return self.scheme

    def next_mode(self) -> str:
        return MODES[(MODES.index(self.mode) + 1) % len(MODES)]

    def _on_system_changed(self, *_args) -> None:
        if self.mode == "system":
            self.apply("system")


_THEME: Theme | None = None


def for_app(app: QApplication | None = None) -> Theme:
    """The one Theme of the running application (made on first use)."""
    global _THEME
    app = app or QApplication.instance()
    if _THEME is None or _THEME.app is not app:
        _THEME = Theme(app)
    return _THEME

"""A progress bar on stderr, fed (fraction, message) by long-running work."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Redraws in place on a terminal; elsewhere (logs, CI) prints a line per 10%."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last_decile = -1

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.monotonic() - self.start
        filled = round(fraction * self.width)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} {elapsed:5.1f}s {message}"
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if fraction >= 1.0 else ""))
            self.stream.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

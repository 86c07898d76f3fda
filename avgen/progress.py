"""Progress of long-running work: the one `Progress` callback type, and a tqdm bar on stderr that is one."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"


class ProgressBar:
    """A `Progress` drawn by tqdm on stderr: redrawn in place on a terminal; elsewhere (logs, CI) the same
    line written once per 10%, so a log holds a few whole lines and no carriage returns."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar = tqdm(total=1.0, desc=label, file=self.stream, bar_format=BAR_FORMAT, disable=not self.tty)
        self.start = time.monotonic()
        self.last_decile = -1

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            self.bar.n = fraction
            self.bar.set_postfix_str(message, refresh=True)
            if fraction >= 1.0:
                self.bar.close()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            line = tqdm.format_meter(fraction, 1.0, time.monotonic() - self.start, prefix=self.label,
                                     bar_format=BAR_FORMAT, postfix=message or None, ncols=80, ascii=True)  # fmt: skip
            self.stream.write(line + "\n")
            self.stream.flush()

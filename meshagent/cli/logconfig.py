"""Where log records go when ``meshagent`` runs: one stderr handler for meshagent and its libraries.

meshagent's own records are shown from WARNING up (``-v``: INFO, ``-vv``:
DEBUG; ``MESHAGENT_LOG=info`` or ``debug`` does the same for a node started by
a service manager). Records of the libraries underneath (libp2p, zeroconf,
hypercorn, ...) are operator noise for a user: they are shown only when
``MESHAGENT_LOG`` is set, only at WARNING and above, in meshagent's format,
and rate limited per message template (a reconnect's burst of identical
library warnings becomes a few lines and a count).

py-libp2p detaches its loggers from the root (``propagate = False``, no
handler) when it is imported, so Python would print their warnings bare
through :data:`logging.lastResort`; the handler is installed there too, so
those records are gated and formatted like every other. ``LIBP2P_DEBUG``
keeps working as libp2p's own switch.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from meshagent.errors import ConfigError

__all__ = ["LEVELS", "LogSettings", "parse_log_env", "MeshLogHandler", "configured_logging"]

LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
"""The values ``MESHAGENT_LOG`` takes (any case)."""

OWN_LOGGERS: Final = ("meshagent", "simulations", "tests", "__main__")
"""Loggers whose records are meshagent's own; every other logger belongs to a library."""

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LIBRARY_BURST: Final = 5
"""Library records with one message template shown per window before the rest are counted."""
LIBRARY_WINDOW_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    own_level: int
    """Threshold of meshagent's own records."""
    libraries: bool
    """Whether library records (WARNING and above) are shown at all."""


def parse_log_env(value: str | None, verbose: int = 0) -> LogSettings:
    """Settings from ``MESHAGENT_LOG`` and the ``-v`` count; :class:`ConfigError` for an unknown level."""
    own = logging.WARNING - 10 * min(max(verbose, 0), 2)
    text = (value or "").strip()
    if not text:
        return LogSettings(own, libraries=False)
    level = LEVELS.get(text.lower())
    if level is None:
        raise ConfigError(f"MESHAGENT_LOG={text}: unknown level; use one of {', '.join(LEVELS)}")
    return LogSettings(min(own, level), libraries=True)


def _is_own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


class MeshLogHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr``; gates and rate-limits library records."""

    def __init__(self, settings: LogSettings, *, clock: Callable[[], float] = time.monotonic,
                 burst: int = LIBRARY_BURST, window_s: float = LIBRARY_WINDOW_S) -> None:
        super().__init__()
        self.settings = settings
        self.setFormatter(logging.Formatter(FORMAT))
        self._clock = clock
        self._burst = burst
        self._window_s = window_s
        self._windows: dict[tuple[str, object], list[float]] = {}
        """Per (logger, message template): [window start, shown in window, suppressed since last shown]."""

    def _admit(self, record: logging.LogRecord) -> tuple[bool, int]:
        """Whether a record is shown, and how many like it were held back since the last one shown."""
        if _is_own(record.name):
            return record.levelno >= self.settings.own_level, 0
        if not self.settings.libraries or record.levelno < logging.WARNING:
            return False, 0
        now = self._clock()
        key = (record.name, record.msg)
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._window_s:
            held = 0 if window is None else int(window[2])
            if len(self._windows) > 1024:  # a bounded table, whatever the libraries log
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            return True, held
        if window[1] < self._burst:
            window[1] += 1
            return True, 0
        window[2] += 1
        return False, 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            shown, held = self._admit(record)
            if not shown:
                return
            text = self.format(record)
            if held:
                text += f" [{held} more like this in the last {self._window_s:g} s not shown]"
            stream = sys.stderr
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # logging must never break the caller
            self.handleError(record)


LIBRARY_LOGGERS: Final = ("libp2p", "multiaddr", "zeroconf", "hypercorn", "asyncio", "trio")
"""Libraries known to log a lot below WARNING: their records below it are not even created."""


@contextmanager
def configured_logging(settings: LogSettings) -> Iterator[MeshLogHandler]:
    """One :class:`MeshLogHandler` on the root logger and as :data:`logging.lastResort` while the command runs;
    everything is put back afterwards (``main`` may run inside another program, such as a test)."""
    root = logging.getLogger()
    handler = MeshLogHandler(settings)
    saved_root, saved_last = root.level, logging.lastResort
    saved_libraries = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    root.addHandler(handler)
    root.setLevel(min(settings.own_level, logging.WARNING))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(saved_libraries[name], logging.WARNING))
    logging.lastResort = handler
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved_libraries.items():
            logging.getLogger(name).setLevel(level)
        logging.lastResort = saved_last

"""Where output goes: results on stdout; progress on stderr, only for a terminal, never with --quiet."""

from __future__ import annotations

import contextlib
import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    """`catdog --quiet`: no progress bars and no per-epoch lines, errors only."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def show_progress() -> bool:
    """Progress bars are drawn only on a terminal, and not with --quiet."""
    return not _quiet and sys.stderr.isatty()


def keras_verbose() -> int:
    """Keras's `verbose`: a progress bar on a terminal, one line per epoch in a log, nothing if quiet."""
    return 0 if _quiet else 1 if sys.stderr.isatty() else 2


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar on stderr where `show_progress()`, else a stand-in that draws nothing.

    With `iterable`, it wraps it (or is the iterable itself, with no bar). tqdm is imported
    only for a terminal: its import is a fifth of a cold `catdog predict`.
    """
    if not show_progress():
        return _NoBar() if iterable is None else iterable
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, **kwargs)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress_to_stderr():
    """Keras prints its progress bars and epoch lines to stdout: send them to stderr instead."""
    with contextlib.redirect_stdout(sys.stderr):
        yield

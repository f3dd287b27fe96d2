"""Where output goes: results on stdout; progress on stderr, only for a terminal, never with --quiet;
TensorFlow's and LiteRT's native log lines held back unless --verbose."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

_quiet = False


def set_quiet(quiet: bool) -> None:
    """`catdog --quiet`: no progress bars and no per-epoch lines, errors only."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def note(text: str) -> None:
    """One line for the person at the terminal, on stderr (`catdog: ...`); nothing with --quiet."""
    if not _quiet:
        print(f"catdog: {text}", file=sys.stderr, flush=True)


def show_progress() -> bool:
    """Progress bars are drawn only on a terminal, and not with --quiet."""
    return not _quiet and sys.stderr.isatty()


class _Stderr:
    """Where progress is drawn, looked up at each write: sys.stderr, or the terminal itself while
    `quiet_stderr` holds native writes to fd 2 back (a bar made before the hold keeps showing)."""

    def write(self, text: str) -> int:
        return (_terminal or sys.stderr).write(text)

    def flush(self) -> None:
        (_terminal or sys.stderr).flush()

    def __getattr__(self, name: str):
        return getattr(_terminal or sys.stderr, name)


_terminal = None


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

    return tqdm(iterable, file=_Stderr(), **kwargs)


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


_verbose = False


def set_verbose(verbose: bool) -> None:
    """Lets TensorFlow's and LiteRT's native log lines through (`catdog --verbose`)."""
    global _verbose
    _verbose = verbose
    # Read by TensorFlow and LiteRT as they load, so set before either is imported: 2 hides their
    # info and warning lines; a value the user set is kept.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def quiet_stderr(discard: tuple[type[BaseException], ...] = ()):
    """Holds native writes to fd 2 back (TensorFlow logs at import despite TF_CPP_MIN_LOG_LEVEL; Ray's
    C++ core and loggers write there for as long as it runs). Progress bars still reach the terminal.

    What was held back is written out after all if the block fails, so a real error still shows;
    not for Ctrl-C, nor for the `discard` errors (those that already say all in their one line).

    The hold is the whole process's fd 2, so only the main thread takes it: held from another
    thread (a server's background warm-up) it would swallow what the main thread writes meanwhile
    (uvicorn's start-up lines). Elsewhere the block runs with stderr as it is.
    """
    global _terminal
    if _verbose or threading.current_thread() is not threading.main_thread():
        yield
        return
    sys.stderr.flush()
    saved, previous = os.dup(2), _terminal
    with tempfile.TemporaryFile() as held, open(os.dup(saved), "w", errors="replace") as terminal:
        if _is_fd2(sys.stderr):  # else (a test's capture) sys.stderr is untouched by the hold anyway
            _terminal = terminal
        os.dup2(held.fileno(), 2)
        try:
            yield
        except Exception as error:
            sys.stderr.flush()
            os.dup2(saved, 2)
            if not isinstance(error, discard):
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            _terminal = previous
            terminal.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False

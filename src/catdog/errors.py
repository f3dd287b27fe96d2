"""The errors the CLI reports as one line, each with its exit status (a light module: no TensorFlow).

    0    done
    1    some inputs failed (the others were still answered)      InputsFailed
    2    usage, config, data or model error; nothing was changed   UsageError, ConfigError, DataError, ModelError
    70   a bug in catdog (rerun with --debug and report the traceback)
    75   stopped to be started again: a preempted --distributed worker group checkpointed   Restart
    130  interrupted (Ctrl-C); a run folder says so and stays resumable   Interrupted
"""

from __future__ import annotations

EXIT_OK, EXIT_INPUTS_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
EXIT_RESTART = 75  # sysexits.h's EX_TEMPFAIL: a temporary stop, try again


class CatdogError(Exception):
    """An error the user can act on; `str()` is one sentence naming the file, field or value."""

    exit_code = EXIT_USAGE


class UsageError(CatdogError):
    """A command line that cannot be run as given (a missing or malformed argument)."""


class ConfigError(UsageError, ValueError):
    """An unknown preset or key, a value of the wrong type or out of range."""


class DataError(CatdogError):
    """Data or a run folder that is missing, empty, unreadable or not what was expected."""


class ModelError(CatdogError):
    """A model that cannot be loaded or cannot do what was asked of it; `str()` names the model file."""


class InputsFailed(CatdogError):
    """Some inputs could not be used; every other one was answered."""

    exit_code = EXIT_INPUTS_FAILED


class Interrupted(CatdogError):
    """Stopped by Ctrl-C (or SIGINT) after something had started; the message says what was kept."""

    exit_code = EXIT_INTERRUPTED


class Restart(CatdogError):
    """Stopped on purpose, to be started again with the same command: after SIGTERM to one worker
    of a `--distributed` group, every worker checkpointed at the same step and exited with this."""

    exit_code = EXIT_RESTART

"""fadiag's error kinds: the one place where exit codes are defined.

Exit codes (DESIGN.md, CLI contract):
    0  nothing flagged
    1  at least one diagnostic flagged (``--exit-zero`` turns it into 0)
    2  bad usage or bad input (checkpoint, spec, data, threshold): one line on stderr
    3  internal error (one line; ``--debug`` shows the traceback)

Library code raises these; only the CLI turns them into exit codes. An internal error (exit 3) is any
other exception: the CLI catches it (there is no error class for a bug).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FLAGGED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class FadiagError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; str(err) is the one-line message."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        msg = f"{source}: {message}" if source else message
        # One line, always: multi-line detail would break the stderr contract.
        super().__init__(" ".join(str(msg).split()))


class InputError(FadiagError):
    """Bad input from the user: a file, a spec key, a flag value. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(InputError):
    """The checkpoint cannot be read, is malformed, or needs unsafe unpickling."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint needs arbitrary unpickling; ``globals`` lists the offending names, ``classes`` maps every
    global found to "dangerous" / "allowed" / "unknown", ``reason`` says in a few words why it was refused."""

    def __init__(self, message: str, *, source: str | None = None, globals_: list[str] | None = None,
                 classes: dict | None = None, reason: str = ""):
        self.globals = list(globals_ or [])
        self.classes = dict(classes or {})
        self.reason = reason
        super().__init__(message, source=source)


class SpecError(InputError):
    """The YAML spec is malformed, has unknown keys, wrong types, or does not fit the checkpoint."""


class DataError(InputError):
    """The evaluation data is missing, malformed, or too short."""


class ThresholdError(InputError):
    """A threshold or numeric option is not a finite number in its allowed range."""


class MissingInputError(InputError):
    """An auxiliary input that a metric needs (feedback matrices, value net, init checkpoint) is absent."""

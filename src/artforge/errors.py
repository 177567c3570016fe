"""What kind of failure an exception is: the user's to fix, or artforge's (a bug).

One hierarchy, raised explicitly at each check. The command line reports a user error as one
line, ``artforge: error: ...``, and shows the traceback of anything else (with "please report
it"), so a bug is never passed off as bad input; the studio applies the same rule (a user
error is a 4xx answer with its message, anything else a 500 logged with its traceback)::

    ArtforgeError                  everything artforge raises on purpose
      UserError                    the user can fix it: one line / a 4xx answer
        ConfigError (ValueError)   a setting, option or flag value artforge cannot take
        DataError (ValueError)     a data set, image or file that cannot be used (names it)
        UsageError (ValueError)    command-line parts that cannot be honoured together (exit 2)
        NotFound (ValueError)      a run, snapshot or file that is not there (HTTP 404)
        Conflict (ValueError)      well formed, but the run's state does not allow it (HTTP 409)
        TrainingError (RuntimeError)  training cannot go on; the last checkpoint is intact

The ValueError / RuntimeError bases keep callers that caught those working. An ``OSError``
(a missing file, a full disk, a refused permission: the machine, not the code) is a user
error too. Every other exception, a ValueError from a library or from a Python operation
included, is a bug; so is a broken invariant, which artforge raises as ``InternalError``.
"""

from __future__ import annotations


class ArtforgeError(Exception):
    """The base of every exception artforge raises on purpose."""

    exit_status = 1  # the CLI's exit status
    http_status = 500  # the studio's answer


class InternalError(ArtforgeError, RuntimeError):
    """An invariant of artforge's own code broke (an unknown phase, an impossible state): a
    bug, reported with its traceback and "please report it", never as the user's mistake."""


class UserError(ArtforgeError):
    """A mistake in what the user gave that they can fix: reported as one line, no traceback."""

    http_status = 400


class ConfigError(UserError, ValueError):
    """A setting, sample option or flag value that artforge cannot take (out of range, unknown
    name, wrong type, options that contradict each other)."""


class DataError(UserError, ValueError):
    """The data cannot be used; the message names the path and the problem."""


class UsageError(UserError, ValueError):
    """Parts of a command line that cannot be honoured together (``--resume`` with
    ``--restart``, a resume that changes fixed settings): exit status 2, like argparse's usage
    errors."""

    exit_status = 2


class NotFound(UserError, ValueError):
    """A run, snapshot, checkpoint or file that the request names is not there."""

    http_status = 404


class Conflict(UserError, ValueError):
    """The request is well formed but the run's state does not allow it (nothing to resume,
    a run still training, data that moved)."""

    http_status = 409


class TrainingError(UserError, RuntimeError):
    """Training cannot continue (e.g. the loss became NaN); the last checkpoint is intact."""

    http_status = 409


def is_user_error(exc: BaseException) -> bool:
    """The module docstring's rule: shown as one line (True) or with its traceback (False)."""
    return isinstance(exc, UserError | OSError)


def http_status(exc: BaseException) -> int:
    """The studio's answer to ``exc``: the user error's own status (an OSError is a 400: a
    file the request named), 500 for a bug."""
    if isinstance(exc, UserError):
        return exc.http_status
    return 400 if isinstance(exc, OSError) else 500

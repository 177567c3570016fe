"""What kind of failure an exception is: the user's to fix, or artforge's (a bug).

The command line reports a user error as one line, ``artforge: error: ...``, and shows the
traceback of anything else, so a bug is never passed off as bad input. A user error is:

- a ``UserError`` (``UsageError`` for a command line that cannot be honoured: exit status 2);
- an ``OSError`` (a missing file, a full disk, a refused permission: the machine, not the code);
- a ``ValueError`` that artforge raised itself, with a ``raise`` statement in its own code: that
  is how every check of settings, files and options reports bad input (``is_own_refusal``).
  A ValueError that escaped from a library or from a Python operation in artforge's code
  (``int("x")``, unpacking, a tensor shape) was not a check: it is a bug, and so is every
  other exception type.

A caller that turns a library's ValueError about the user's input into a message does so
where it knows the input (``raise ValueError(f"{path}: ...") from None``), which is also what
makes it a user error here.
"""

from __future__ import annotations

import dis

_RAISES = frozenset(dis.opmap[name] for name in ("RAISE_VARARGS", "RERAISE"))


class UserError(Exception):
    """A mistake in what the user gave that they can fix: reported as one line, no traceback."""

    exit_status = 1


class UsageError(UserError, ValueError):
    """Parts of a command line that cannot be honoured together (``--resume`` with
    ``--restart``, a resume that changes fixed settings): exit status 2, like argparse's usage
    errors. Also a ValueError, so the Python API's and the studio's callers, which catch
    ValueError for bad input, see it as the bad input it is."""

    exit_status = 2


def is_own_refusal(exc: BaseException) -> bool:
    """True when ``exc`` was raised by a ``raise`` statement in artforge's own code (the
    innermost frame of its traceback), not by a library or a Python operation there."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    module = str(frame.f_globals.get("__name__", ""))
    if module != "artforge" and not module.startswith("artforge."):
        return False
    code = frame.f_code.co_code
    return 0 <= tb.tb_lasti < len(code) and code[tb.tb_lasti] in _RAISES


def is_user_error(exc: BaseException) -> bool:
    """The module docstring's rule: shown as one line (True) or with its traceback (False).
    TrainingError (training/trainer.py: the run cannot go on, its checkpoint is intact) is
    checked by the CLI, which may import the training layer."""
    if isinstance(exc, UserError | OSError):
        return True
    return isinstance(exc, ValueError) and is_own_refusal(exc)

"""artforge studio: a local web page to look at runs, watch training, create and compare.

``artforge studio RUNS_DIR`` serves it (see docs/studio.md). The pieces:

- ``safety``: every path and number a request carries is checked here (files only from inside
  RUNS_DIR, bounded counts and sizes), so the other modules receive trusted values;
- ``gallery``: finds the runs under RUNS_DIR and summarises each one (and its live progress);
- ``worker``: the generation queue: one thread per lane, a bounded queue, an LRU of models;
- ``jobs``: training runs started from the page, as ``python -m artforge train`` processes;
- ``app``: the Starlette application and its routes; ``static/`` is the page itself.

Nothing here prints: the CLI does.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Build the ASGI app (imported lazily: the studio's web dependencies are an extra)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)

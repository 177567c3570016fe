"""artforge studio: serve the local web page for a folder of runs (docs/studio.md)."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

from .common import CLIError

NAMES = ("studio",)


def add_arguments(sub: Any) -> None:

    st = sub.add_parser(
        "studio",
        help="a local web page: gallery, live training, generation, interpolation, novelty",
        description="Serve a web page for the runs in RUNS_DIR (see docs/studio.md). It listens on "
        "127.0.0.1 only, unless --host names another address.",
        allow_abbrev=False,
    )
    st.add_argument("runs_dir", metavar="RUNS_DIR", help="folder of run folders (created if missing)")
    st.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    st.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    st.add_argument("--max-models", type=int, default=4, help="loaded models kept in memory (default 4)")
    st.add_argument("--device", default="auto", help="device for generation (default auto)")
    st.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose data the Train page may use (repeatable; RUNS_DIR always is)",
    )
    st.add_argument(
        "--max-jobs",
        type=int,
        default=None,
        help="trainings at once; more wait in a queue (default: one per GPU, one without)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        from ..studio.app import create_app, is_loopback, serve
    except ImportError as e:
        raise CLIError(
            f"the studio needs its web packages ({e.name}): pip install 'artforge[studio]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {args.port}")
    if not 1 <= args.max_models <= 64:
        raise CLIError(f"--max-models must be between 1 and 64, got {args.max_models}")
    if args.max_jobs is not None and not 1 <= args.max_jobs <= 64:
        raise CLIError(f"--max-jobs must be between 1 and 64, got {args.max_jobs}")
    for d in args.data_root:
        if not Path(d).expanduser().is_dir():
            raise CLIError(f"--data-root {d}: no such folder")
    root = Path(args.runs_dir)
    if not root.exists():
        root.mkdir(parents=True)
        print(f"created {root}/ (empty: train a run from the page or with artforge train --out {root}/NAME)")
    if not is_loopback(args.host):
        print(
            f"artforge studio: WARNING: listening on {args.host}: anyone who can reach this machine "
            "can see your runs, generate, and start or stop training. Use the default 127.0.0.1 "
            "unless you mean it.",
            file=sys.stderr,
        )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(128)  # from now on connections wait in the backlog until the server accepts them
    except OSError as e:
        sock.close()
        raise CLIError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror}); try another --port"
        ) from None
    app = create_app(
        root,
        host=args.host,
        max_models=args.max_models,
        device=args.device,
        data_roots=args.data_root,
        max_jobs=args.max_jobs,
    )
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"artforge studio: {root.resolve()} on http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down cleanly, then passed Ctrl-C on
        serve(app, sock)
    print("artforge studio: stopped")
    for job in app.state.studio.jobs.shutdown():
        print(
            f"training job {job.run} (pid {job.pid}) keeps running; stop it from the studio or with kill -INT"
        )
    return 0

"""Which files are held out: a fixed share of a data set, chosen by a hash of each file name.

One rule for every user: the Trainer leaves these files out under ``--data.holdout=S``,
prompt faithfulness and the create benchmark use them as images the run never saw, and the
sound judge (evaluate_audio.py) is trained without its own share of them. A name's hash does
not depend on the machine, the order of the files or the other files, so the same files are
held out everywhere; and a larger share holds out a superset of a smaller one (the sound
judge's 20% contains every note a run trained with ``--data.holdout=0.1`` left out).

The rule is part of the run-folder contract: a run trained with ``--data.holdout=S`` is
evaluated against the files ``is_held_out(name, S)`` names today, so the hash and the number
of buckets never change (tests/test_data.py pins the files chosen for a few names).
"""

from __future__ import annotations

import zlib

BUCKETS = 10_000  # shares are resolved to 1/10,000


def is_held_out(name: str, share: float) -> bool:
    """True if the file ``name`` (a name relative to the data root) is in the held-out ``share``."""
    return share > 0 and zlib.crc32(name.encode()) % BUCKETS < share * BUCKETS

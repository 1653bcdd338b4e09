"""Decode many image files into one uint8 array with a thread pool.

Pillow releases the GIL while it decodes and resizes, so threads scale with
cores here (measured in bench/pipeline.py) without a process pool's start-up
cost or pickled pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .preprocessing import ImageDecodeError, Preprocessing

_CHUNK = 64


def _decode_into(buffer: np.ndarray, paths: Sequence[str], pre: Preprocessing, start: int) -> list:
    errors = []
    for i, path in enumerate(paths):
        try:
            buffer[start + i] = pre.load(path)
        except ImageDecodeError as exc:
            errors.append((path, str(exc)))
    return errors


def decode_all(paths: Sequence[str], pre: Preprocessing, workers: int | None = None) -> np.ndarray:
    """All ``paths`` as a uint8 (N, H, W, 1) array, each decoded by ``pre.load``.

    Raises ``ImageDecodeError`` naming every file that failed.
    """
    paths = [str(p) for p in paths]
    out = np.empty((len(paths), pre.height, pre.width, 1), dtype=np.uint8)
    starts = range(0, len(paths), _CHUNK)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        chunks = pool.map(lambda i: _decode_into(out, paths[i:i + _CHUNK], pre, i), starts)
        errors = [e for chunk in chunks for e in chunk]
    if errors:
        listed = "\n".join(f"  {p}: {e}" for p, e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ImageDecodeError(
            f"{len(errors)} image(s) could not be decoded:\n{listed}{more}\n"
            "Run `pneumokit data check DIR` to list every problem."
        )
    return out

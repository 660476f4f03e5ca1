"""Arrays in memory-mapped files, shared by every process of a host (issue #21).

A *mapped directory* holds one ``.npy`` file per array and ``meta.json`` (a key naming what the arrays
were made from, their names, and small extra values). :func:`read` maps the files read-only
(``np.load(mmap_mode="r")``): every process that maps the same directory shares the same page-cache
pages, so N API processes on one host hold one copy of the road network, not N, and a page nobody
touches is never read from disk. :func:`write` builds the directory aside and renames it into place, so
a reader sees a whole directory or none; when two processes write the same one, the first rename wins
and the other's copy is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("sonae.evac.mapped")


def write(path: Path, arrays: dict[str, np.ndarray], *, key: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``arrays`` (name -> array) and ``key`` as the mapped directory ``path`` (atomically).

    A directory with another key is replaced (processes mapping it keep their pages). Raises ``OSError``
    when the directory cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(a), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "arrays": sorted(arrays), "extra": extra or {}}))
        try:
            os.rename(tmp, path)
            return
        except OSError:
            pass  # the directory exists: written meanwhile by another process, or stale
        if _meta(path).get("key") == key:
            return  # another process wrote the same arrays first: use those
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read(path: Path, *, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Map the arrays of directory ``path`` read-only, with its extra values; ``None`` when it is missing,
    damaged or was written for another ``key``."""
    meta = _meta(Path(path))
    if meta.get("key") != key:
        return None
    out: dict[str, np.ndarray] = {}
    try:
        for name in meta["arrays"]:
            f = Path(path) / f"{name}.npy"
            try:
                # a plain ndarray over the mapping (its base keeps the map): np.memmap's Python-level
                # __getitem__ and __array_finalize__ cost a few microseconds on every index of a query
                out[name] = np.load(f, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except ValueError:  # an empty array cannot be mapped
                out[name] = np.load(f, allow_pickle=False)
        extra = dict(meta.get("extra") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:  # TypeError: arrays or extra of another shape
        log.warning("mapped arrays in %s are unreadable (%s): they will be written again", path, exc)
        return None
    return out, extra


def _meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}

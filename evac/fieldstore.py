"""Computed arrays shared by every process of a host: the host-wide field store (issue #21, item 4).

A field's search result (distance, next hop and source row per node, ``16 B`` per node) and a set of
hazard areas' edge factors (``8 B`` per base edge) are the same in every API process that has the same
network and the same hazard state, yet each process used to compute and hold its own copy. A
:class:`FieldStore` keeps them once per host, in files beside the mapped network
(``<network>.npz.mapped/fields/``, see :mod:`evac.mapped`):

* an entry is a directory ``<name>/<digest>/`` of ``.npy`` files and ``meta.json``; ``name`` says what it
  is (``walk-flood-real``, ``mult``) and ``digest`` hashes everything the arrays are computed from (the
  caller's :func:`digest`), so an entry never goes stale: a new state has a new digest;
* :meth:`FieldStore.put` writes the directory aside and renames it into place (a reader sees a whole entry
  or none; when two processes publish the same entry the first rename wins and both map that one), then
  returns the arrays mapped read-only: the caller drops its private copy;
* :meth:`FieldStore.get` maps an entry read-only after checking it: the network key and digest in
  ``meta.json``, each file's size, dtype and shape, and a CRC-32 of its bytes. A damaged entry is
  removed and ``None`` returned (the caller computes and publishes again): nothing unchecked is trusted;
* entries are bounded: :meth:`FieldStore.prune` (after a publish) keeps the :attr:`FieldStore.keep` most
  recently published or mapped entries of each name (processes that still map an older one keep their pages: a removed file lives on while mapped),
  and :meth:`FieldStore.clean` (run when an engine starts) prunes every name the same way and removes
  half-written directories whose writer has exited.

Mapped arrays are read-only; whoever changes a field copies it first (the engine's incremental update does).
The store takes disk (page cache) of about :data:`KEEP` x (16 B per node per field in use + 8 B per base
edge): about 1 GB at 3M nodes with four fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("sonae.evac.fieldstore")

#: Bump when what an entry holds, or how its digest is made, changes.
STORE_FORMAT = 1
#: Entries kept per name (per field key, and for edge factors): the current state of each process and a
#: few before it (a process a little behind the others still finds its state).
KEEP = 4


def digest(*parts: Any) -> str:
    """A hex digest of ``parts``: arrays by dtype, shape and bytes; anything else by ``repr``."""
    h = hashlib.sha1(str(STORE_FORMAT).encode())
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"|{a.dtype.str}{a.shape}|".encode())
            h.update(a.data.cast("B"))
        else:
            h.update(f"|{p!r}".encode())
    return h.hexdigest()[:24]


def _crc(a: np.ndarray) -> int:
    a = np.ascontiguousarray(a)
    return zlib.crc32(a.data.cast("B")) if a.size else 0


class FieldStore:
    """Entries of mapped arrays under ``root`` for one network (``network_key``: its mapped key).

    Thread-safe (every operation works on whole directories by rename). Errors writing the directory are
    logged and the caller keeps its private arrays (:meth:`put` returns them unchanged).
    """

    def __init__(self, root: Path | str, network_key: str, *, keep: int = KEEP) -> None:
        self.root = Path(root)
        self.key = f"{STORE_FORMAT}|{network_key}"
        self.keep = max(1, int(keep))
        #: Entries mapped by :meth:`get`, written by :meth:`put`, and found damaged (for metrics and tests).
        self.hits = 0
        self.writes = 0
        self.damaged = 0
        self._lock = threading.Lock()
        #: False after a write failed: later results stay private (no retry, no warning per change).
        self.writable = True
        self._published: dict[str, str] = {}  # name -> digest last published, until :meth:`prune`

    def path(self, name: str, dig: str) -> Path:
        """The directory of entry ``name``/``dig``."""
        return self.root / name / dig

    # -- reading -------------------------------------------------------------------------------------
    def get(self, name: str, dig: str, *, check: bool = True) -> dict[str, np.ndarray] | None:
        """The arrays of entry ``name``/``dig`` mapped read-only, or ``None`` when there is none.

        A damaged entry (wrong key or digest, a file missing, truncated, of another shape or dtype, or
        whose bytes fail the CRC-32 in ``meta.json``) is logged, removed and reported as ``None``.
        ``check=False`` skips the CRC (for the entry this process has just written).
        """
        where = self.path(name, dig)
        try:
            meta = json.loads((where / "meta.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._damaged(where, f"meta.json unreadable: {exc}")
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
            self._damaged(where, "meta.json is not an object with the arrays' specs")
            return None
        try:
            if meta.get("key") != self.key or meta.get("digest") != dig:
                self._damaged(where, "written for another network or state")
                return None
            out: dict[str, np.ndarray] = {}
            for aname, spec in meta["arrays"].items():
                f = where / f"{aname}.npy"
                shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
                size = f.stat().st_size
                if size != int(spec["file_bytes"]):
                    self._damaged(where, f"{f.name} has {size} bytes, not {spec['file_bytes']}")
                    return None
                if int(np.prod(shape)) == 0:
                    a = np.load(f, allow_pickle=False)  # an empty array cannot be mapped
                    a.setflags(write=False)
                else:
                    a = np.load(f, mmap_mode="r", allow_pickle=False).view(np.ndarray)
                if a.shape != shape or a.dtype != dtype:
                    self._damaged(where, f"{f.name} holds {a.dtype}{a.shape}, not {dtype}{shape}")
                    return None
                if check and _crc(a) != int(spec["crc32"]):
                    self._damaged(where, f"{f.name} fails its CRC-32")
                    return None
                out[aname] = a
        except FileNotFoundError:
            return None  # removed meanwhile (pruned by another process): compute it again
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # any field of another kind
            self._damaged(where, f"{type(exc).__name__}: {exc}")
            return None
        self.hits += check
        try:
            os.utime(where)  # used now: pruning keeps the most recently used entries
        except OSError:
            pass
        return out

    def _damaged(self, where: Path, why: str) -> None:
        self.damaged += 1
        log.warning("field store entry %s is damaged (%s): it is removed and computed again", where, why)
        self._remove(where)

    # -- writing -------------------------------------------------------------------------------------
    def put(self, name: str, dig: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Publish ``arrays`` as entry ``name``/``dig`` and return them mapped read-only from it.

        When another process published the entry first, its (checked) arrays are returned. When the
        directory cannot be written (disk full, read-only), the warning is logged and ``arrays`` are
        returned as given (the process keeps its private copy; routes are unaffected).
        """
        where = self.path(name, dig)
        if not self.writable:
            return arrays
        tmp = where.with_name(f".{dig}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir(parents=True)
            specs = {}
            for aname, a in arrays.items():
                a = np.ascontiguousarray(a)
                np.save(tmp / f"{aname}.npy", a, allow_pickle=False)
                specs[aname] = {"shape": list(a.shape), "dtype": a.dtype.str, "crc32": _crc(a),
                                "file_bytes": (tmp / f"{aname}.npy").stat().st_size}
            (tmp / "meta.json").write_text(json.dumps({"key": self.key, "digest": dig, "arrays": specs}))
            try:
                os.rename(tmp, where)
                self.writes += 1
            except OSError:  # published meanwhile by another process (or a damaged leftover)
                got = self.get(name, dig)
                if got is not None:
                    return got
                os.rename(tmp, where)  # the damaged one was removed: ours takes its place
                self.writes += 1
        except OSError as exc:
            self.writable = False
            log.warning("cannot write the field store's entry %s (%s): from now on this process keeps its own "
                        "copy of what it computes (make the directory writable for this user, and restart)",
                        where, exc)
            return arrays
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            self._published[name] = dig
        got = self.get(name, dig, check=False)  # just written from the arrays the CRC was taken of
        return arrays if got is None else got

    # -- bounds --------------------------------------------------------------------------------------
    def prune(self) -> None:
        """Bound the names published to since the last call to :attr:`keep` entries each (the entry just
        published stays). Separate from :meth:`put` so that a caller can do it once the new state is in
        use: deleting the files of old entries takes as long as writing new ones."""
        with self._lock:
            published, self._published = self._published, {}
        for name, dig in published.items():
            self._prune(self.root / name, keep_also=dig)

    def _prune(self, folder: Path, *, keep_also: str | None = None) -> None:
        """Remove all but the :attr:`keep` most recently used entries of ``folder`` (``keep_also`` never)."""
        try:
            entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
            entries.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        except OSError:
            return
        for p in entries[self.keep:]:
            if p.name != keep_also:
                self._remove(p)

    @staticmethod
    def _remove(where: Path) -> None:
        """Take ``where`` away by rename first (readers find a whole entry or none), then delete it."""
        old = where.with_name(f".{where.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(where, old)
        except OSError:
            return
        shutil.rmtree(old, ignore_errors=True)

    def clean(self) -> None:
        """Prune every name to :attr:`keep` entries and remove directories left by writers that exited."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return
        for folder in folders:
            try:
                left = [p for p in folder.iterdir() if p.name.startswith(".")]
            except OSError:
                continue
            for p in left:
                try:
                    pid = int(p.name.rsplit("-", 2)[-2])
                except (ValueError, IndexError):
                    continue
                if ".old-" in p.name or not _alive(pid):
                    shutil.rmtree(p, ignore_errors=True)
            self._prune(folder)

    def entries(self, name: str) -> list[str]:
        """Digests of the entries of ``name`` (for tests and inspection)."""
        try:
            return sorted(p.name for p in (self.root / name).iterdir() if not p.name.startswith("."))
        except OSError:
            return []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Computed arrays shared by every process of a host: the host-wide field store (issue #21, item 4).

A field's search result (distance, next hop and source row per node, ``16 B`` per node) and a set of
hazard areas' edge factors (``8 B`` per base edge) are the same in every API process that has the same
network and the same hazard state, yet each process used to compute and hold its own copy. A
:class:`FieldStore` keeps them once per host, in files beside the mapped network
(``<network>.npz.mapped/fields/``, see :mod:`evac.mapped`):

* an entry is a directory ``<name>/<digest>/`` of ``.npy`` files and ``meta.json``; ``name`` says what it
  is (``walk-flood-real``, ``mult``) and ``digest`` hashes everything the arrays are computed from
  (:meth:`FieldStore.digest`: :data:`STORE_FORMAT`, the network's mapped key, and the caller's inputs), so
  an entry never goes stale: a new state, network file or algorithm has a new digest;
* :meth:`FieldStore.claim` maps an entry, or hands the caller the duty to compute it under an advisory lock
  (``fcntl.flock`` on ``<name>/.<digest>.lock``): a second process that needs the same entry meanwhile
  waits (at most :attr:`FieldStore.wait_s`, polling, in the caller's thread: the engine runs in an
  executor, never on the event loop) and then maps what the first published. A holder that exits (even
  killed) releases its lock with its descriptors; a waiter that then finds no whole entry computes it;
* :meth:`FieldStore.put` writes the directory aside and renames it into place (a reader sees a whole entry
  or none; when two processes publish the same entry the first rename wins and both map that one), then
  returns the arrays mapped read-only: the caller drops its private copy;
* :meth:`FieldStore.get` maps an entry read-only after checking it: the store key and digest in
  ``meta.json``, each file's size, dtype and shape, and a CRC-32 of its bytes. A damaged entry is
  removed and ``None`` returned (the caller computes and publishes again): nothing unchecked is trusted;
* a failed write (disk full, the directory removed or not writable) pauses publishing for
  :data:`RETRY_MIN_S`, doubling per failure in a row up to :data:`RETRY_MAX_S`; the next result after the
  pause is written again. Meanwhile the process keeps its own copies (routes are unaffected). One warning
  when publishing stops, one notice when it resumes;
* entries are bounded: :meth:`FieldStore.prune` (after a publish) keeps the :attr:`FieldStore.keep` most
  recently published or mapped entries of each name (processes that still map an older one keep their
  pages: a removed file lives on while mapped), and :meth:`FieldStore.clean` (run when an engine starts)
  prunes every name the same way, removes entries of another store key (another :data:`STORE_FORMAT` or
  network file: never read again after an upgrade) and half-written directories whose writer has exited.

Mapped arrays are read-only; whoever changes a field copies it first (the engine's incremental update does).
The store takes disk (page cache) of about :data:`KEEP` x (16 B per node per field in use + 8 B per base
edge): about 1 GB at 3M nodes with four fields.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

log = logging.getLogger("sonae.evac.fieldstore")

#: Part of every entry's digest and store key. Bump it when what an entry holds or how its digest is made
#: changes, and whenever the code that computes a stored array changes what it computes (the search and
#: its tie-breaking, the incremental update, the hazard factors, the source rows' offsets, the blocked or
#: unreachable weights): entries of another format are then never read, and :meth:`FieldStore.clean` removes
#: them. 2: the network's mapped key and the profile's definition joined the digests; locks.
STORE_FORMAT = 2
#: Entries kept per name (per field key, and for edge factors): the current state of each process and a
#: few before it (a process a little behind the others still finds its state).
KEEP = 4
#: Seconds a process waits for another that computes the same entry before computing it itself (a full
#: search takes about 0.5 s per million nodes; an update publishes after all its fields are computed).
LOCK_WAIT_S = 30.0
#: After a failed write, publishing pauses this long (seconds), doubling per failure in a row...
RETRY_MIN_S = 1.0
#: ... up to this long: a store that stays broken costs one failed write per five minutes.
RETRY_MAX_S = 300.0


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


class Claim:
    """What :meth:`FieldStore.claim` found: an entry's arrays, mapped, or the duty to compute it.

    ``arrays`` is the entry when one was published (possibly while the caller waited). Otherwise the caller
    computes the arrays, publishes them (:meth:`FieldStore.put`) and then calls :meth:`release`; while
    ``held``, other processes that need the entry wait for it. Release is idempotent, and a context manager
    releases on exit.
    """

    def __init__(self, arrays: dict[str, np.ndarray] | None = None, fd: int | None = None) -> None:
        self.arrays = arrays
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this holds the entry's lock."""
        return self._fd is not None

    def release(self) -> None:
        """Let other processes have the entry's lock (closing the descriptor drops the ``flock``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a lock file may be removed and made anew)."""
    try:
        st, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


class FieldStore:
    """Entries of mapped arrays under ``root`` for one network (``network_key``: its mapped key).

    Thread-safe (every operation works on whole directories by rename; locks are per open file). Errors
    writing the directory are logged and the caller keeps its private arrays (:meth:`put` returns them
    unchanged); publishing is tried again after a pause (:data:`RETRY_MIN_S` to :data:`RETRY_MAX_S`).
    ``clock`` (seconds, monotonic) times that pause; ``wait_s`` bounds a wait for another process's compute.
    """

    def __init__(self, root: Path | str, network_key: str, *, keep: int = KEEP, wait_s: float = LOCK_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.key = f"{STORE_FORMAT}|{network_key}"
        self.keep = max(1, int(keep))
        self.wait_s = float(wait_s)
        self._clock = clock
        # Counts since this store was made (plain integers, only ever increased, under ``_lock``; read by
        # the API's metrics, api/evacmetrics.py, and by tests; an entry is one directory <name>/<digest>):
        #: entries mapped by :meth:`get` and checked (published by another process, or earlier by this one)
        self.hits = 0
        #: entries this process published (:meth:`put` whose rename won)
        self.writes = 0
        #: entries found damaged by :meth:`get`, removed (then computed again)
        self.damaged = 0
        #: claims that found the entry's lock held by another process and waited for it
        self.waits = 0
        #: of those, the ones that gave up after ``wait_s`` and computed the entry here too
        self.wait_timeouts = 0
        #: :meth:`put` calls whose write failed (publishing then pauses)
        self.write_failures = 0
        #: :meth:`put` calls skipped while publishing paused (the result kept private)
        self.skipped = 0
        #: bytes of the files of the entries this process wrote (the ``.npy`` files, headers included;
        #: written, whether or not its rename then won)
        self.written_bytes = 0
        #: seconds this process spent writing entries (from making the directory aside to its rename
        #: into place, the CRC-32s included; :meth:`put`)
        self.write_s = 0.0
        #: entries this process removed to bound the store (:meth:`prune`, :meth:`clean`: beyond ``keep``
        #: per name, or written under another store key)
        self.pruned = 0
        self._lock = threading.Lock()
        self._failing = 0  # failed writes in a row (0: publishing)
        self._retry_at = 0.0  # ``clock`` time from which a write is tried again
        self._published: dict[str, str] = {}  # name -> digest last published, until :meth:`prune`

    @property
    def writable(self) -> bool:
        """Whether the last write succeeded (False: publishing paused, tried again after the pause)."""
        return self._failing == 0

    def digest(self, *parts: Any) -> str:
        """The digest of an entry computed from ``parts`` for this store: :func:`digest` of the store key
        (:data:`STORE_FORMAT` and the network's mapped key: a new network file is a new entry) and ``parts``."""
        return digest(self.key, *parts)

    def path(self, name: str, dig: str) -> Path:
        """The directory of entry ``name``/``dig``."""
        return self.root / name / dig

    def lock_path(self, name: str, dig: str) -> Path:
        """The lock file of entry ``name``/``dig`` (hidden: not an entry)."""
        return self.root / name / f".{dig}.lock"

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
        except (FileNotFoundError, NotADirectoryError):  # (the store's directory replaced by a file: none)
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
        with self._lock:
            self.hits += check
        try:
            os.utime(where)  # used now: pruning keeps the most recently used entries
        except OSError:
            pass
        return out

    def _damaged(self, where: Path, why: str) -> None:
        with self._lock:
            self.damaged += 1
        log.warning("field store entry damaged: removed, computed again", extra={"entry": str(where), "error": why})
        self._remove(where)

    # -- computing once per host ---------------------------------------------------------------------
    def claim(self, name: str, dig: str, *, wait_s: float | None = None) -> Claim:
        """Entry ``name``/``dig`` mapped (:attr:`Claim.arrays`), or the duty to compute it (usually holding
        its lock: :attr:`Claim.held`).

        When another process holds the lock (it is computing the entry), this waits for it, at most
        ``wait_s`` seconds (default :attr:`wait_s`), in the calling thread (call it from a worker thread or
        executor, never on an event loop), then maps what it published. When that process exited or could
        not publish, the lock is this caller's and it computes; after ``wait_s``, it computes without the
        lock (the first rename still wins: :meth:`put`). While publishing is paused after a failed write,
        or when the lock file cannot be made, nothing is locked: the caller computes for itself.
        """
        got = self.get(name, dig)
        if got is not None:
            return Claim(got)
        with self._lock:
            if self._failing and self._clock() < self._retry_at:
                return Claim()  # nothing of ours will be published: nobody should wait for us
        path = self.lock_path(name, dig)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._acquire(path, self.wait_s if wait_s is None else wait_s)
        except OSError as exc:
            log.debug("field store lock unavailable: computing unlocked", extra={"entry": str(path), "error": str(exc)})
            return Claim()
        got = self.get(name, dig)  # published by the holder we waited for, or just before we locked
        if got is not None:
            if fd is not None:
                os.close(fd)
            return Claim(got)
        return Claim(None, fd)

    def _acquire(self, path: Path, wait_s: float) -> int | None:
        """A descriptor holding an exclusive ``flock`` on ``path`` (made when missing), or ``None`` when
        another holder kept it ``wait_s`` seconds. Polls (1 ms doubling to 50 ms): a blocking ``flock``
        cannot be bounded in time from a thread. Raises ``OSError`` when the file cannot be opened."""
        deadline = time.monotonic() + wait_s
        pause = 0.001
        waited = False
        while True:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        left = deadline - time.monotonic()
                        if not waited:
                            waited = True
                            with self._lock:
                                self.waits += 1
                            log.debug("field store entry being computed by another process: waiting",
                                      extra={"entry": str(path), "wait_s": wait_s})
                        if left <= 0:
                            with self._lock:
                                self.wait_timeouts += 1
                            log.warning("field store entry still being computed by another process: computing "
                                        "it here too", extra={"entry": str(path), "wait_s": wait_s})
                            os.close(fd)
                            return None
                        time.sleep(min(pause, left))
                        pause = min(2 * pause, 0.05)
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                return fd
            os.close(fd)  # removed (pruned) while we waited: lock the file that is there now

    @staticmethod
    def _remove_lock(path: Path) -> None:
        """Remove lock file ``path`` unless someone holds it (removed while held by us: a process that
        opened it meanwhile finds, once it locks, that the path is gone, and locks the new file)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass  # held: its entry is being computed
        finally:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------------------
    def put(self, name: str, dig: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Publish ``arrays`` as entry ``name``/``dig`` and return them mapped read-only from it.

        When another process published the entry first, its (checked) arrays are returned. When the
        directory cannot be written (disk full, removed, read-only), a warning is logged, ``arrays`` are
        returned as given (the process keeps its private copy; routes are unaffected) and publishing
        pauses (:data:`RETRY_MIN_S` doubling to :data:`RETRY_MAX_S`); the first put after the pause tries
        again, and one that succeeds says publishing resumed.
        """
        where = self.path(name, dig)
        with self._lock:
            if self._failing and self._clock() < self._retry_at:
                self.skipped += 1
                return arrays
        tmp = where.with_name(f".{dig}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        fd = None
        t0 = time.perf_counter()
        try:
            tmp.mkdir(parents=True)
            # held while written: clean() leaves a directory alone whose writer lives (a pid from another
            # container's namespace says nothing)
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            specs = {}
            written = 0
            for aname, a in arrays.items():
                a = np.ascontiguousarray(a)
                np.save(tmp / f"{aname}.npy", a, allow_pickle=False)
                size = (tmp / f"{aname}.npy").stat().st_size
                specs[aname] = {"shape": list(a.shape), "dtype": a.dtype.str, "crc32": _crc(a), "file_bytes": size}
                written += size
            (tmp / "meta.json").write_text(json.dumps({"key": self.key, "digest": dig, "arrays": specs}))
            theirs = self._place(tmp, where, name, dig)
            with self._lock:
                self.written_bytes += written
                self.write_s += time.perf_counter() - t0
        except OSError as exc:
            self._write_failed(where, exc)
            return arrays
        finally:
            if fd is not None:
                os.close(fd)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._write_worked()
        if theirs is not None:
            return theirs or arrays  # another process's entry ({}: it went again meanwhile: keep ours)
        with self._lock:
            self.writes += 1
            self._published[name] = dig
        got = self.get(name, dig, check=False)  # just written from the arrays the CRC was taken of
        return arrays if got is None else got

    def _place(self, tmp: Path, where: Path, name: str, dig: str) -> dict[str, np.ndarray] | None:
        """Rename ``tmp`` to ``where``: ``None`` when ours is in place, else the entry another process
        published first (``{}`` when it kept being published and removed under us: a race, not a failure)."""
        for _ in range(3):
            try:
                os.rename(tmp, where)
                return None
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            got = self.get(name, dig)  # published meanwhile by another process (or a damaged leftover)
            if got is not None:
                return got
            # the damaged one was removed, or the published one pruned meanwhile: ours takes its place
        return {}

    def _write_failed(self, where: Path, exc: OSError) -> None:
        with self._lock:
            self._failing += 1
            self.write_failures += 1
            pause = min(RETRY_MIN_S * 2.0 ** min(self._failing - 1, 30), RETRY_MAX_S)
            self._retry_at = self._clock() + pause
            first = self._failing == 1
        extra = {"entry": str(where), "error": str(exc), "retry_s": pause, "failures": self._failing}
        if first:
            log.warning("cannot write the field store: publishing paused, this process keeps its own copy of "
                        "what it computes (check the directory's space and permissions)", extra=extra)
        else:
            log.debug("field store write failed again: publishing still paused", extra=extra)

    def _write_worked(self) -> None:
        with self._lock:
            failed, self._failing = self._failing, 0
        if failed:
            log.info("field store writable again: publishing resumed", extra={"root": str(self.root),
                                                                             "failures": failed})

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
        """Remove all but the :attr:`keep` most recently used entries of ``folder`` (``keep_also`` never),
        and their lock files when nobody holds them."""
        try:
            names = [p for p in folder.iterdir() if not p.name.startswith(".")]
        except OSError:
            return
        entries: list[tuple[int, Path]] = []
        for p in names:
            try:
                entries.append((p.stat().st_mtime_ns, p))
            except OSError:
                continue  # removed meanwhile by another process
        entries.sort(reverse=True)
        for _, p in entries[self.keep:]:
            if p.name != keep_also:
                self._count_pruned(self._remove(p))
                self._remove_lock(folder / f".{p.name}.lock")

    def _count_pruned(self, removed: bool) -> None:
        if removed:
            with self._lock:
                self.pruned += 1

    @staticmethod
    def _remove(where: Path) -> bool:
        """Take ``where`` away by rename first (readers find a whole entry or none), then delete it; whether
        this call took it (False: it was gone already, e.g. removed meanwhile by another process)."""
        old = where.with_name(f".{where.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(where, old)
        except OSError:
            return False
        shutil.rmtree(old, ignore_errors=True)
        return True

    def clean(self) -> None:
        """Remove directories left by writers that exited, lock files of entries that are gone, and entries
        of another store key (another :data:`STORE_FORMAT` or network file: stale after an upgrade; a
        process of the old version that still maps one keeps its pages), then prune every name to
        :attr:`keep` entries."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return
        for folder in folders:
            try:
                items = list(folder.iterdir())
            except OSError:
                continue
            for p in items:
                if not p.name.startswith("."):
                    if self._stale(p):
                        self._count_pruned(self._remove(p))
                elif p.name.endswith(".lock"):
                    if not (folder / p.name[1:-len(".lock")]).exists():
                        self._remove_lock(p)
                elif ".old-" in p.name:
                    shutil.rmtree(p, ignore_errors=True)
                elif ".tmp-" in p.name and not _being_written(p):
                    shutil.rmtree(p, ignore_errors=True)
            self._prune(folder)

    def _stale(self, where: Path) -> bool:
        """Whether entry ``where`` says it was written under another store key (a damaged one is left to
        :meth:`get`, which finds, counts and removes it)."""
        try:
            meta = json.loads((where / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and isinstance(meta.get("key"), str) and meta["key"] != self.key

    def entries(self, name: str) -> list[str]:
        """Digests of the entries of ``name`` (for tests and inspection)."""
        try:
            return sorted(p.name for p in (self.root / name).iterdir() if not p.name.startswith("."))
        except OSError:
            return []


def _being_written(tmp: Path) -> bool:
    """Whether a writer still works on directory ``tmp``: it holds the directory's ``flock``, or (written
    without one) its pid, from the name ``.<digest>.tmp-<pid>-<hex>``, is alive."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    try:
        pid = int(tmp.name.rsplit("-", 2)[-2])
    except (ValueError, IndexError):
        return False
    return _alive(pid)


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

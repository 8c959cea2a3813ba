"""The embedded store's files on disk: who owns the state directory, whether a file is an
extjobs store, an online backup, and a restore.

Theory of operation:

- **Only this user.** The state directory and the socket's directory must belong to the
  user the daemon runs as and be writable by nobody else (:func:`check_private_dir`),
  or the daemon refuses to start naming the path and its owner; store files are mode
  0600, and ones found looser at start are tightened (:func:`secure_store_files`).

- **One owner.** A daemon takes ``fcntl.flock(LOCK_EX)`` on ``<state_dir>/lock`` before it
  opens the store or binds its socket, and holds it for its whole life. The kernel drops
  the lock when the process dies however it dies, so a SIGKILLed daemon never blocks its
  restart, and a second daemon on the same directory cannot start while the first lives.
  The holder's pid is written into the file for the refusal message (information only:
  the lock, not the pid, decides).
- **A store that existed never becomes a new one.** A missing store file means a new
  cluster; a file that is empty, not SQLite, or SQLite without the extjobs schema is
  refused (:func:`check_store_file`) — it is what is left of a store, not a new one. A new
  store is built under a temporary name and renamed into place once its schema is
  committed, so a crash while creating it leaves no half-made store behind.
- **Backup** (:func:`backup_sqlite`) copies the database through SQLite's online backup
  API in one step on a connection of its own: one consistent snapshot, taken while the
  daemon keeps writing (WAL readers do not block the writer). The copy is written under a
  temporary name and linked to its final name, which must not exist.
- **Restore** (:func:`restore_store`) runs with the lock held and no store open: it checks
  the backup, moves the current store files aside (never deleting them) and puts a copy
  of the backup in their place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from extjobs.errors import ConfigError, InputError, StateError, StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"

#: The files SQLite keeps beside a database in WAL mode.
SIDE_SUFFIXES = ("-wal", "-shm")


# -- who may touch the state ------------------------------------------------------------


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_private_dir(path: Path, what: str) -> None:
    """Raise :class:`ConfigError` naming ``path`` and its owner unless it is a directory
    owned by the user this process runs as and not writable by group or others.

    Whoever can write there can replace the store, the lock or the socket under the
    daemon; a directory of another user is someone else's to change."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot use {what} {path}: {exc.strerror}", path=str(path)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path} is not a directory", path=str(path))
    me = os.geteuid()
    if st.st_uid != me:
        raise ConfigError(
            f"{what} {path} is owned by {_user(st.st_uid)}, not by {_user(me)} that runs "
            f"the daemon; give it to that user (chown) or choose another directory",
            path=str(path),
            owner=st.st_uid,
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{what} {path} (owner {_user(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}) "
            "is writable by group or others; remove that (chmod go-w) or choose another "
            "directory",
            path=str(path),
            owner=st.st_uid,
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
        )


def secure_store_files(db_path: Path) -> list[Path]:
    """Make the store files (the database, its ``-wal`` and ``-shm``, the lock) that
    exist mode 0600; the ones that were readable or writable by others. New ones are
    created 0600 (SQLite gives ``-wal`` and ``-shm`` the database's mode). Raises
    :class:`ConfigError` for one owned by another user."""
    tightened = []
    me = os.geteuid()
    names = [db_path, *(Path(f"{db_path}{s}") for s in SIDE_SUFFIXES), db_path.parent / "lock"]
    for path in names:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"store file {path} is not a regular file", path=str(path))
        if st.st_uid != me:
            raise ConfigError(
                f"store file {path} is owned by {_user(st.st_uid)}, not by {_user(me)} "
                "that runs the daemon",
                path=str(path),
                owner=st.st_uid,
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o600)
            tightened.append(path)
    return tightened


# -- the state directory lock ------------------------------------------------------------


class StateDirLock:
    """An exclusive lock on a state directory, held until :meth:`release` (or death)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_state_dir(state_dir: Path) -> StateDirLock:
    """Lock ``state_dir`` for this process.

    Raises :class:`StateError` naming the directory and, when known, the pid of the daemon
    that holds it. The descriptor is close-on-exec, so no child process keeps the lock.
    """
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the lock file {path}: {exc.strerror}", path=str(path)
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"cannot lock {path}: {exc.strerror}", path=str(path)) from exc
        who = f" (pid {holder})" if holder else ""
        raise StateError(
            f"state directory {state_dir} is in use by another extjobs daemon{who}; "
            "stop it first, or give this one another --state-dir",
            path=str(state_dir),
            pid=holder,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateDirLock(path, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# -- is this an extjobs store? -----------------------------------------------------------


def _refuse(path: Path, what: str, *, restore: bool = True) -> StoreError:
    advice = (
        f"restore a backup (extjobs daemon --restore BACKUP), or, to start a new and empty "
        f"cluster on purpose, move {path.name} away"
        if restore
        else "give the file of an extjobs backup"
    )
    return StoreError(f"store file {path} {what}; {advice}", path=str(path))


def check_store_file(path: Path, *, deep: bool = False, restore_advice: bool = True) -> None:
    """Raise :class:`StoreError` unless ``path`` is an extjobs SQLite store.

    Checks the header (:func:`check_store_header`) and the schema
    (:func:`check_store_schema`) on a read-only connection that ignores any ``-wal`` (for
    a closed file such as a backup). ``deep`` adds SQLite's ``quick_check``, which reads
    every page: for a restore, not for every start.
    """
    check_store_header(path, restore_advice=restore_advice)
    # immutable=1: no locks, no journal, nothing written next to the file.
    try:
        db = sqlite3.connect(f"file:{_quote(path)}?immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise _refuse(path, f"cannot be opened: {exc}", restore=restore_advice) from exc
    try:
        check_store_schema(db, path, restore_advice=restore_advice)
        if deep:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise _refuse(path, f"is damaged: {verdict}", restore=restore_advice)
    except sqlite3.Error as exc:
        raise _refuse(path, f"cannot be read: {exc}", restore=restore_advice) from exc
    finally:
        db.close()


def check_store_header(path: Path, *, restore_advice: bool = True) -> None:
    """Raise :class:`StoreError` if the existing file ``path`` is empty or not SQLite."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read store file {path}: {exc.strerror}", path=str(path)) from exc
    if not head:
        raise _refuse(
            path, "is empty (0 bytes): it is not an extjobs store", restore=restore_advice
        )
    if head != SQLITE_MAGIC:
        raise _refuse(path, "is not a SQLite database", restore=restore_advice)


def check_store_schema(db: sqlite3.Connection, path: Path, *, restore_advice: bool = True) -> None:
    """Raise :class:`StoreError` unless ``db`` holds the extjobs tables and a schema
    version (``sqlite3.Error`` passes through)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"meta", "jobs", "log", "journal", "config"} <= tables:
        raise _refuse(path, "has no extjobs schema", restore=restore_advice)
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        raise _refuse(path, "has no extjobs schema version", restore=restore_advice)


def _quote(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()))


# -- backup ------------------------------------------------------------------------------


def check_backup_target(dest: Path) -> None:
    """Raise :class:`StateError` (exists) or :class:`InputError` (bad place) unless
    ``dest`` is an absolute path that does not exist in an existing directory."""
    if not dest.is_absolute():
        raise InputError(f"backup path {dest} must be absolute", field="path")
    if dest.exists() or dest.is_symlink():
        raise StateError(f"backup path {dest} exists; give a new file name", path=str(dest))
    if not dest.parent.is_dir():
        raise InputError(
            f"directory {dest.parent} of backup path {dest} does not exist", field="path"
        )


def backup_sqlite(source: Path, dest: Path) -> dict[str, Any]:
    """Copy the store at ``source`` to the new file ``dest`` (mode 0600), consistently,
    while other connections keep writing. Blocking: call it from a worker thread.

    Returns ``{"path", "bytes", "jobs", "seconds"}``. Raises :class:`StateError` if
    ``dest`` exists, :class:`InputError` if it is not absolute or its directory does not
    exist, :class:`StoreError` if the copy fails (the partial copy is removed).
    """
    check_backup_target(dest)
    started = time.monotonic()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        src = sqlite3.connect(f"file:{_quote(source)}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(str(tmp))
            try:
                # pages=-1: the whole database in one step, so one read snapshot.
                src.backup(dst, pages=-1)
                # One self-contained file: no -wal beside the copy.
                dst.execute("PRAGMA journal_mode=DELETE")
                jobs = int(dst.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrite
        except FileExistsError:
            raise StateError(f"backup path {dest} exists; give a new file name") from None
    except sqlite3.Error as exc:
        raise StoreError(f"backup to {dest} failed: {exc}", path=str(dest)) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(dest.parent)
    return {
        "path": str(dest),
        "bytes": dest.stat().st_size,
        "jobs": jobs,
        "seconds": round(time.monotonic() - started, 3),
    }


# -- restore -----------------------------------------------------------------------------


def restore_store(db_path: Path, backup: Path) -> Path | None:
    """Put a copy of ``backup`` in place of the store at ``db_path``.

    Call it with the state directory locked and no store open. The current store files
    (the database and its ``-wal``/``-shm``) are renamed together to
    ``<name>.replaced-<UTC time>`` — never deleted — and that path is returned (``None``
    when there was no store). Raises :class:`StoreError` (nothing changed) when
    ``backup`` is not a readable, intact extjobs store.
    """
    if not backup.is_file():
        raise StoreError(f"backup file {backup} does not exist", path=str(backup))
    wal = Path(f"{backup}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"backup file {backup} has a write-ahead log beside it ({wal.name}): it is a "
            "live database, not a backup; restore a file written by 'extjobs backup'",
            path=str(backup),
        )
    check_store_file(backup, deep=True, restore_advice=False)
    incoming = db_path.with_name(f".{db_path.name}.restoring")
    shutil.copyfile(backup, incoming)
    os.chmod(incoming, 0o600)
    with incoming.open("rb") as f:
        os.fsync(f.fileno())
    aside = None
    if db_path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = db_path.with_name(f"{db_path.name}.replaced-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = db_path.with_name(f"{db_path.name}.replaced-{stamp}-{n}")
        _fold_wal(db_path)
        db_path.rename(aside)
        for suffix in SIDE_SUFFIXES:
            side = Path(f"{db_path}{suffix}")
            if side.exists():
                side.rename(f"{aside}{suffix}")
    incoming.rename(db_path)
    _fsync_dir(db_path.parent)
    return aside


def _fold_wal(db_path: Path) -> None:
    """Fold the write-ahead log of the (unopened, locked) store into its main file, so
    that the file moved aside is whole by itself. A store SQLite cannot open — often the
    reason for the restore — is moved as it is."""
    try:
        db = sqlite3.connect(str(db_path))
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    except sqlite3.Error:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

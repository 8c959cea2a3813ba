"""The embedded store's files: what is refused at open, the state-directory lock, an
online backup while another connection writes, and a restore (no daemon here; the daemon
processes are in ``tests/integration/test_state_safety.py``)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import attrs
import pytest

from extjobs.errors import InputError, StateError, StoreError
from extjobs.model.jobs import Job, OpState
from extjobs.store.files import backup_sqlite, lock_state_dir, restore_store
from extjobs.store.sqlite import SqliteStore


def job(job_id: int) -> Job:
    return Job(id=job_id, ops=(OpState(0, {"OP_ID": "OP_TEST_DELAY"}),))


def make_store(path: Path, jobs: int = 2) -> None:
    store = SqliteStore(path)
    store.save_jobs([job(n) for n in range(1, jobs + 1)])
    store.close()


def schemaless(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE other(x)")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(lambda p: p.write_bytes(b""), "is empty (0 bytes)", id="empty"),
        pytest.param(
            lambda p: p.write_bytes(b"not a database\n" * 100), "is not a SQLite", id="text"
        ),
        pytest.param(schemaless, "has no extjobs schema", id="other-sqlite"),
    ],
)
def test_a_file_that_is_not_an_extjobs_store_is_refused_not_replaced(
    tmp_path: Path, make: object, says: str
) -> None:
    path = tmp_path / "extjobs.db"
    make(path)  # type: ignore[operator]
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        SqliteStore(path)
    message = caught.value.message
    assert says in message
    assert str(path) in message
    assert "restore a backup" in message
    assert path.read_bytes() == before


def test_a_missing_file_is_a_new_store_made_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "extjobs.db"
    SqliteStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extjobs.db"]
    SqliteStore(path).close()  # and it opens again as a store


def test_a_missing_store_with_its_log_left_behind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "extjobs.db"
    Path(f"{path}-wal").write_bytes(b"x" * 100)
    with pytest.raises(StoreError, match="write-ahead log"):
        SqliteStore(path)
    assert not path.exists()


def test_the_state_directory_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    held = lock_state_dir(tmp_path)
    # flock locks belong to the open file description: a second open in this process
    # conflicts just as another process would.
    with pytest.raises(StateError) as caught:
        lock_state_dir(tmp_path)
    assert caught.value.message.startswith(f"state directory {tmp_path} is in use")
    assert f"(pid {os.getpid()})" in caught.value.message
    held.release()
    lock_state_dir(tmp_path).release()


def test_backup_is_one_consistent_snapshot_while_another_connection_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "extjobs.db"
    make_store(path, jobs=0)
    writer = SqliteStore(path)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # Each job and its log line in one transaction: a copy has both or neither.
            writer.save_jobs([job(n)])

    thread = threading.Thread(target=write)
    thread.start()
    try:
        copies = [backup_sqlite(path, tmp_path / f"copy{i}.db") for i in range(3)]
    finally:
        stop.set()
        thread.join()
        writer.close()
    for answer in copies:
        copy = Path(answer["path"])
        assert copy.stat().st_mode & 0o777 == 0o600
        assert not Path(f"{copy}-wal").exists()
        store = SqliteStore(copy)
        ids = [j.id for j in store.load_jobs()]
        store.close()
        assert ids == list(range(1, len(ids) + 1))
        assert len(ids) == answer["jobs"]
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []


def test_backup_refuses_an_existing_path_and_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "extjobs.db"
    make_store(path)
    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(StateError, match="exists"):
        backup_sqlite(path, tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "keep me"
    with pytest.raises(InputError, match="does not exist"):
        backup_sqlite(path, tmp_path / "nowhere" / "copy.db")
    with pytest.raises(InputError, match="absolute"):
        backup_sqlite(path, Path("relative.db"))


def test_restore_checks_the_backup_and_keeps_the_replaced_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db_path = state / "extjobs.db"
    make_store(tmp_path / "live.db", jobs=3)
    backup = tmp_path / "backup.db"
    backup_sqlite(tmp_path / "live.db", backup)
    db_path.write_bytes(b"")  # the damaged store being replaced
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="is not a SQLite database"):
        restore_store(db_path, bad)
    assert db_path.read_bytes() == b""  # a refused restore changes nothing
    aside = restore_store(db_path, backup)
    assert aside is not None
    assert aside.name.startswith("extjobs.db.replaced-")
    assert aside.read_bytes() == b""
    store = SqliteStore(db_path)
    assert [j.id for j in store.load_jobs()] == [1, 2, 3]
    store.close()
    assert restore_store(db_path, backup) != aside  # a second restore keeps both


def test_restore_refuses_a_live_database_with_its_log(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    writer = SqliteStore(live)
    writer.save_jobs([attrs.evolve(job(1))])
    try:
        with pytest.raises(StoreError, match="write-ahead log"):
            restore_store(tmp_path / "extjobs.db", live)
    finally:
        writer.close()

"""The SQLite write queue (transaction.SQLiteWriterLock): writers exclude each other and leave no files open."""

from __future__ import annotations

import os
import threading
import time

from clinic.services.transaction import SQLiteWriterLock


def test_a_second_writer_waits_until_the_first_has_finished(tmp_path):
    lock = SQLiteWriterLock(str(tmp_path / "db.writer-lock"))
    order, inside = [], threading.Event()

    def first():
        with lock.held():
            order.append("first in")
            inside.set()
            time.sleep(0.2)
            order.append("first out")

    def second():
        inside.wait()
        with lock.held():
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order == ["first in", "first out", "second in"]


def test_the_same_thread_may_nest_and_finished_threads_close_their_file(tmp_path):
    lock = SQLiteWriterLock(str(tmp_path / "db.writer-lock"))

    def nested():
        with lock.held():
            with lock.held():
                pass

    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        thread = threading.Thread(target=nested)
        thread.start()
        thread.join()
    assert len(os.listdir("/proc/self/fd")) <= open_before + 1  # at most the last thread's, not collected yet


def test_the_lock_file_is_readable_by_all_and_holds_with_read_access_only(tmp_path):
    """A lock file another user's command created (an admin command run as root, say) must not lock the app's own
    user out: flock needs only an open file, and the file holds nothing."""
    path = tmp_path / "db.writer-lock"
    lock = SQLiteWriterLock(str(path))
    old_umask = os.umask(0o022)
    try:
        with lock.held():
            pass
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o444)  # no one may write it: the lock still works
    other = SQLiteWriterLock(str(path))
    with other.held():
        pass


def test_a_lock_file_that_cannot_be_opened_raises_its_own_error_and_nothing_else(tmp_path):
    import sys

    import pytest

    unraisable = []
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        lock = SQLiteWriterLock(str(tmp_path / "missing-folder" / "db.writer-lock"))
        with pytest.raises(FileNotFoundError):
            with lock.held():
                pass
        import gc

        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == [], "no error from a half-made lock file's clean-up"



def test_a_writer_gives_up_after_its_wait_and_one_in_time_gets_the_lock_soon_after_it_is_freed(tmp_path):
    """The wait used to have no limit: writers queued behind a stuck one until gunicorn killed their workers."""
    import pytest

    from clinic.services.transaction import DatabaseBusy

    path = str(tmp_path / "db.writer-lock")
    holder = SQLiteWriterLock(path)
    with holder.held():
        started = time.monotonic()
        with pytest.raises(DatabaseBusy):
            with SQLiteWriterLock(path, wait_seconds=0.2).held():
                pass
        assert 0.2 <= time.monotonic() - started < 1
    ready, freed_at = threading.Event(), []

    def hold_then_release():
        with holder.held():
            ready.set()
            time.sleep(0.1)
            freed_at.append(time.monotonic())

    thread = threading.Thread(target=hold_then_release)
    thread.start()
    ready.wait()
    with SQLiteWriterLock(path, wait_seconds=5).held():
        acquired_at = time.monotonic()
    thread.join()
    assert acquired_at - freed_at[0] < 0.05, "a waiter notices the lock is free within milliseconds"

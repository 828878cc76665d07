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

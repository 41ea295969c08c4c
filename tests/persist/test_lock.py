"""One writer per run folder: a second run is refused naming the holder; a killed holder's lock is free."""

import os
import signal
import subprocess
import sys
import time

import pytest

from owlens.persist.lock import LOCK_NAME, FolderLockedError, folder_lock

_HOLD = """
import sys, time
from owlens.persist.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), "--fake-option"], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    child = _holder(tmp_path)
    try:
        with pytest.raises(FolderLockedError, match=rf"in use by another run \(pid {child.pid} on .*--fake-option"):
            with folder_lock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()


def test_a_killed_holder_leaves_a_lock_the_next_run_takes(tmp_path):
    child = _holder(tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (tmp_path / LOCK_NAME).is_file()  # a killed run cannot tidy up: the file stays, its flock does not
    with folder_lock(tmp_path):
        assert str(os.getpid()) in (tmp_path / LOCK_NAME).read_text()
    assert not (tmp_path / LOCK_NAME).exists()


def test_nested_use_in_one_process_is_counted_not_refused(tmp_path):
    with folder_lock(tmp_path), folder_lock(tmp_path / "." ):
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_lock_is_free_again_after_a_refusal(tmp_path):
    child = _holder(tmp_path)
    try:
        with pytest.raises(FolderLockedError):
            with folder_lock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with folder_lock(tmp_path):
                break
        except FolderLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)

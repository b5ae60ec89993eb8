"""The gradebook lock: one nbgrader process at a time writes the gradebook; learners' code runs unlocked.

scripts/autograde_all.py sets GRADING_DB_LOCK to a lock file; each worker holds the lock from its start until it
exits, except while its kernel runs (SandboxedExecute releases and re-takes it). The runner takes the same lock
before it kills a worker, so an interrupted or timed-out worker is never stopped halfway through recording.
"""
import fcntl
import os

_held = {}   # lock path -> open file whose flock we hold


def lock_path():
    """The lock file named by $GRADING_DB_LOCK, or None (no lock: plain nbgrader use)."""
    return os.environ.get("GRADING_DB_LOCK") or None


def acquire(path=None):
    """Block until this process holds the lock at PATH (default $GRADING_DB_LOCK); no-op without one."""
    path = path or lock_path()
    if path and path not in _held:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        _held[path] = f


def release(path=None):
    """Release the lock at PATH (default $GRADING_DB_LOCK) if this process holds it."""
    f = _held.pop(path or lock_path(), None)
    if f is not None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()

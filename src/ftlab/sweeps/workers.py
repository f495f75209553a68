"""How several workers share one study: a lock around "count the trials, add one", a heartbeat on each
running trial, and failing the trials whose worker died (the same machine's by pid, others' by heartbeat)."""

import fcntl
import os
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Optional

from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ftlab.utils.files import sqlite_file

WORKER = "ftlab_worker"  # trial attribute: host:pid of the process running it
BEAT = "ftlab_heartbeat"  # trial attribute: when that process last said it is alive (seconds since epoch)
BEAT_SECONDS, STALE_SECONDS = 30, 300  # a trial on another machine silent this long is taken as dead


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def budget_lock(url: Optional[str], study_name: str):
    """Held while a worker counts the study's trials and adds one. Optuna's storage API has no atomic
    "add a trial if there are fewer than n", so: a file lock beside a SQLite file (one machine), a
    PostgreSQL advisory lock (workers anywhere); other databases go unlocked and may overshoot by a trial
    or two when workers finish at the same moment."""
    db = sqlite_file(url) if url else None
    if not url:
        yield
    elif db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_suffix(".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif url.startswith("postgresql"):
        key = zlib.crc32(f"ftlab-sweep:{study_name}".encode())
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        engine.dispose()
    else:
        yield


class Heartbeat:
    """Stamps the running trial every BEAT_SECONDS, so workers elsewhere can tell a live trial from a dead one."""

    def __init__(self, trial):
        self.trial, self.stop = trial, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while True:
            self.trial.set_user_attr(BEAT, time.time())
            if self.stop.wait(BEAT_SECONDS):
                return

    def __enter__(self):
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def fail_orphans(study, log) -> None:
    """RUNNING trials whose process is gone: this machine's by pid, other machines' by stale heartbeat.
    Call it under budget_lock: a worker asks a trial and stamps it in one locked step, so no trial is
    seen here half-made."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER)
        if worker is None:  # asked by code other than this sweeper: leave it alone
            continue
        if worker.startswith(host + ":") and not _alive(int(worker.split(":")[1])):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted: its sweep process ended")
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            log.info(f"ftlab sweep: trial {t.number} was interrupted; marked FAILED")
        elif not worker.startswith(host + ":") and time.time() - t.user_attrs.get(BEAT, 0) > STALE_SECONDS:
            study._storage.set_trial_user_attr(
                t._trial_id, "fail_reason", f"interrupted: no heartbeat from {worker} for {STALE_SECONDS}s"
            )
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            log.info(f"ftlab sweep: trial {t.number} of {worker} stopped beating; marked FAILED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The job store: one SQLite file (stdlib sqlite3, WAL) under the data dir, so the list of
jobs, their state and their finished files survive a restart or a crash.

Every write is one short transaction behind a lock (the event loop and the worker thread
share one connection). Ids are made here ("video_" + 32 hex digits) and only an id that
has that form ever names a file, so no request value becomes a path.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from kumovideo.utils.errors import KumoInputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one server per data dir is then the user's care
    fcntl = None

ID_PATTERN = re.compile(r"video_[0-9a-f]{32}")
RESTARTED = "server restarted while this job was in progress"
RESTARTED_QUEUED = "server restarted before this job started; submit it again"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    model TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT NOT NULL,
    prompt TEXT NOT NULL,
    spec TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT
)
"""


def new_id() -> str:
    return "video_" + uuid.uuid4().hex


class DataDirInUse(KumoInputError):
    """Another live server holds the data dir."""


class JobStore:
    """Jobs in `data_dir/jobs.sqlite3`, their clips in `data_dir/videos/<id>.mp4`.

    One store (one server) per data dir: it holds an exclusive lock on `data_dir/serve.lock`
    until `close`, since a second server's start-up would fail the first one's live jobs as
    cut off (`fail_interrupted`). The kernel drops the lock when the process dies, so a
    crashed server never blocks the next."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.videos_dir = self.data_dir / "videos"
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._hold_data_dir()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def _hold_data_dir(self):
        handle = open(self.data_dir / "serve.lock", "a+")  # noqa: SIM115 (held until close)
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise DataDirInUse(
                    f"data dir {self.data_dir} is in use by another kumo serve ({holder}); "
                    "stop it or pass another --data-dir"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return handle

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_file.close()  # releases the data dir

    def video_path(self, job_id: str) -> Path:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.videos_dir / f"{job_id}.mp4"

    def source_path(self, job_id: str) -> Path:
        """A remix's own link to its source clip (or an edit's uploaded clip), made when it is
        queued: deleting the source job meanwhile does not take the clip from under it.
        Removed when the job ends."""
        return self.video_path(job_id).with_suffix(".source.mp4")

    def write_source(self, job_id: str, data: bytes) -> None:
        """An edit's uploaded source clip, written atomically to `source_path(job_id)`."""
        from kumovideo.utils.atomic import atomic_file

        with atomic_file(self.source_path(job_id)) as f:
            f.write(data)

    def link_source(self, job_id: str, source_id: str) -> None:
        """Hard-link (or, across file systems, copy) the source's clip to `source_path(job_id)`;
        FileNotFoundError if the source's file is gone."""
        import shutil

        target = self.source_path(job_id)
        try:
            os.link(self.video_path(source_id), target)
        except FileNotFoundError:
            raise
        except OSError:  # no hard links here: a copy, atomically
            partial = target.with_name(f".video_{job_id}.source.mp4")
            shutil.copyfile(self.video_path(source_id), partial)
            os.replace(partial, target)

    # ------------------------------------------------------------------ writes

    def create(self, *, model: str, size: str, seconds: str, prompt: str, spec: dict) -> dict:
        job_id = new_id()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, status, created_at, model, size, seconds, prompt, spec) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, int(time.time()), model, size, seconds, prompt, json.dumps(spec)),
            )
        return self.get(job_id)

    def update(self, job_id: str, **fields) -> bool:
        """Set columns of a running job (a job once failed or completed never changes again);
        False if it is gone (deleted meanwhile) or no longer running."""
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {names} WHERE id = ? AND status = 'in_progress'", (*fields.values(), job_id)
            )
        return cur.rowcount > 0

    def start(self, job_id: str) -> bool:
        """queued -> in_progress; False if the job is gone or no longer queued."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'in_progress', progress = 0 WHERE id = ? AND status = 'queued'", (job_id,)
            )
        return cur.rowcount > 0

    def complete(self, job_id: str) -> bool:
        """in_progress -> completed; False if the job is gone or no longer running."""
        return self.update(job_id, status="completed", progress=100, completed_at=int(time.time()))

    def fail(self, job_id: str, code: str, message: str) -> bool:
        """queued or in_progress -> failed; a finished job keeps its answer."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, completed_at = ? "
                "WHERE id = ? AND status IN ('queued', 'in_progress')",
                (code, message, int(time.time()), job_id),
            )
        if cur.rowcount:  # a failed job never runs: its source (a remix's, an edit's) is not needed
            self.source_path(job_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    def delete(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        if cur.rowcount:
            self.video_path(job_id).unlink(missing_ok=True)
            self.source_path(job_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    def fail_interrupted(self) -> int:
        """At start-up: jobs a crash or kill cut off are failed with a reason, never left
        queued or in_progress forever. Queued ones are failed too (not re-run): a client
        that polls sees a definite answer, and a restart never starts a burst of old work.
        Half-written clips (write_video's hidden temporary files) are removed, and remixes'
        links to their sources (no job that needs one is left to run)."""
        for partial in [*self.videos_dir.glob(".video_*"), *self.videos_dir.glob("video_*.source.mp4")]:
            partial.unlink(missing_ok=True)
        now = int(time.time())
        with self._lock:
            a = self._db.execute(
                "UPDATE jobs SET status = 'failed', error_code = 'server_restarted', error_message = ?, "
                "completed_at = ? WHERE status = 'in_progress'",
                (RESTARTED, now),
            ).rowcount
            b = self._db.execute(
                "UPDATE jobs SET status = 'failed', error_code = 'server_restarted', error_message = ?, "
                "completed_at = ? WHERE status = 'queued'",
                (RESTARTED_QUEUED, now),
            ).rowcount
        return a + b

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> dict | None:
        if not ID_PATTERN.fullmatch(job_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def queued_count(self) -> int:
        """Jobs waiting to start (a deleted one no longer counts, though its id may still sit
        in the worker's queue until the worker skips it)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]

    def exists(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None

    def page(self, *, limit: int, after: str | None = None, newest_first: bool = True) -> tuple[list[dict], bool]:
        """Up to `limit` jobs after the job `after` in the order asked; whether more follow.
        KeyError if `after` is no job's id."""
        where, args = "", []
        if after is not None:
            anchor = self.get(after)
            if anchor is None:
                raise KeyError(after)
            where, args = ("WHERE seq < ?" if newest_first else "WHERE seq > ?"), [anchor["seq"]]
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq {order} LIMIT ?", (*args, limit + 1)
            ).fetchall()
        return [dict(r) for r in rows[:limit]], len(rows) > limit


def video_object(job: dict) -> dict:
    """A job as OpenAI's `Video` object (openai/types/video.py), plus nothing private."""
    remixed_from = json.loads(job["spec"]).get("remixed_from_video_id")
    error = None
    if job["status"] == "failed":
        error = {"code": job["error_code"] or "failed", "message": job["error_message"] or "generation failed"}
    return {
        "id": job["id"],
        "object": "video",
        "status": job["status"],
        "progress": int(job["progress"]),
        "created_at": int(job["created_at"]),
        "completed_at": job["completed_at"],
        "expires_at": None,
        "model": job["model"],
        "size": job["size"],
        "seconds": job["seconds"],
        "prompt": job["prompt"],
        "remixed_from_video_id": remixed_from,
        "error": error,
    }

"""The job store: one SQLite file (stdlib sqlite3, WAL) under the data dir, so the list of
jobs, their state and their finished files survive a restart or a crash.

Every write is one short transaction behind a lock (the event loop and the worker thread
share one connection). Ids are made here ("video_" + 32 hex digits) and only an id that
has that form ever names a file, so no request value becomes a path.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

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


class JobStore:
    """Jobs in `data_dir/jobs.sqlite3`, their clips in `data_dir/videos/<id>.mp4`."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.videos_dir = self.data_dir / "videos"
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def video_path(self, job_id: str) -> Path:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.videos_dir / f"{job_id}.mp4"

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
        """Set columns of one job; False if it is gone (deleted meanwhile)."""
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))
        return cur.rowcount > 0

    def start(self, job_id: str) -> bool:
        """queued -> in_progress; False if the job is gone or no longer queued."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'in_progress', progress = 0 WHERE id = ? AND status = 'queued'", (job_id,)
            )
        return cur.rowcount > 0

    def complete(self, job_id: str) -> bool:
        return self.update(job_id, status="completed", progress=100, completed_at=int(time.time()))

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self.update(
            job_id, status="failed", error_code=code, error_message=message, completed_at=int(time.time())
        )

    def delete(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        if cur.rowcount:
            self.video_path(job_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    def fail_interrupted(self) -> int:
        """At start-up: jobs a crash or kill cut off are failed with a reason, never left
        queued or in_progress forever. Queued ones are failed too (not re-run): a client
        that polls sees a definite answer, and a restart never starts a burst of old work.
        Half-written clips (write_video's hidden temporary files) are removed."""
        for partial in self.videos_dir.glob(".video_*"):
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
        "remixed_from_video_id": None,
        "error": error,
    }

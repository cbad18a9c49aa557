"""Measure `kumo serve` against the targets of issue 21 on this machine.

Starts real `kumo serve` subprocesses on loopback (port 0: a free one, a temporary data dir) and
talks to them only through the public HTTP API (stdlib `http.client`):

  (a) latency: a warm server, one request at a time, submit -> `completed` wall time
      (GET polled every 25 ms), median of N; built-in Turbo (target <= 1.0 s) and the
      base model at its default steps and size (target <= 2.5 s);
  (b) concurrency: after one warm-up job, 24 requests from 4 client threads (each
      submits its 6 back to back, then polls them): every request completes or gets a 429,
      ids unique, every accepted id reaches `completed`, the listing shows exactly the
      accepted ones (and the warm-up); server RSS (VmRSS of the server's process tree)
      after the first job and after all (target: after <= 1.2x after-first);
  (c) crash: two jobs finished and downloaded, a base-model job with many steps in
      progress, `kill -9` of the server, restart on the same data dir: the earlier jobs
      are listed and their files download byte-identical, the interrupted one is `failed`
      with a reason.

    .venv/bin/python scripts/bench_serve.py [--n 5] [--json] [--only a,b,c]

Prints a table (met / missed per target) and, with --json, one JSON object at the end.
Nothing is estimated: a part that could not be measured is reported as "not measured" with its error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"kumo serve: listening on (http://[^\s/]+)")
TERMINAL = ("completed", "failed")


class Server:
    """A `kumo serve` subprocess; `stop()` always kills it (and anything it started)."""

    def __init__(self, data_dir: Path, *, max_queue: int | None = None, extra: list[str] | None = None):
        self.data_dir = Path(data_dir)
        # --port 0: the server binds a free port and prints it in its "listening" line
        cmd = [sys.executable, "-m", "kumovideo.cli", "serve", "--data-dir", str(data_dir), "--port", "0"]
        if max_queue is not None:
            cmd += ["--max-queue", str(max_queue)]
        cmd += extra or []
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.pop("KUMO_API_KEY", None)  # loopback, no key: the requests here carry none
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.base = None
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = LISTENING.search(line)
            if m and not self._ready.is_set():
                self.base = m.group(1)
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from start to the 'listening' line; raises if the server died or hung."""
        if not self._ready.wait(timeout) or self.base is None:
            self.stop()
            raise RuntimeError("kumo serve did not start:\n" + "\n".join(self.lines[-40:]))
        self.host, port = self.base[len("http://") :].rsplit(":", 1)
        self.port = int(port)
        return time.perf_counter() - self.t0

    def request(self, method: str, path: str, body=None, timeout: float = 60.0):
        """(status, parsed JSON or raw bytes, headers)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type", "")
            if "json" in ctype:
                return resp.status, json.loads(raw), dict(resp.getheaders())
            return resp.status, raw, dict(resp.getheaders())
        finally:
            conn.close()

    def submit(self, **body):
        return self.request("POST", "/v1/videos", body)

    def get(self, vid: str):
        return self.request("GET", f"/v1/videos/{vid}")

    def wait(self, vid: str, poll: float = 0.025, timeout: float = 300.0, until=TERMINAL) -> dict:
        end = time.perf_counter() + timeout
        while True:
            status, obj, _ = self.get(vid)
            if status != 200:
                raise RuntimeError(f"GET /v1/videos/{vid} -> {status}: {obj!r}")
            if obj["status"] in until:
                return obj
            if time.perf_counter() > end:
                raise TimeoutError(f"{vid} still {obj['status']} after {timeout} s")
            time.sleep(poll)

    def list_all(self) -> list[dict]:
        out, after = [], None
        for _ in range(1000):
            path = "/v1/videos?limit=100" + (f"&after={after}" if after else "")
            status, page, _ = self.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}: {page!r}")
            data = page["data"]
            out += data
            more = page.get("has_more", len(data) == 100)
            if not data or not more:
                return out
            after = data[-1]["id"]
        raise RuntimeError("listing did not end")

    def rss_kib(self) -> int:
        """VmRSS of the server process and its descendants, KiB."""
        total, todo, seen = 0, [self.pid], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    kids = (task / "children").read_text().split()
                    todo += [int(k) for k in kids]
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:  # the leader is gone (kill -9); anything left in its session goes too
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def error_message(obj: dict) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or "")
    return str(err or "")


def timed_job(server: Server, body: dict, poll: float = 0.025) -> tuple[float, dict]:
    t0 = time.perf_counter()
    status, obj, _ = server.submit(**body)
    if status not in (200, 201, 202):
        raise RuntimeError(f"POST /v1/videos -> {status}: {obj!r}")
    final = server.wait(obj["id"], poll=poll)
    dt = time.perf_counter() - t0
    if final["status"] != "completed":
        raise RuntimeError(f"job {obj['id']} {final['status']}: {error_message(final)}")
    return dt, final


# ---------------------------------------------------------------------------- (a)
def bench_latency(tmp: Path, n: int) -> dict:
    server = Server(tmp / "a")
    try:
        startup = server.wait_ready()
        out = {"startup_s": round(startup, 2), "n": n}
        for name, body, target in (
            ("turbo", {"prompt": "a red circle moving right", "turbo": True, "seed": 0}, 1.0),
            ("base", {"prompt": "a red circle moving right", "turbo": False, "seed": 0}, 2.5),
        ):
            warm_s, _ = timed_job(server, body)  # first request of its kind: not counted
            times = [timed_job(server, dict(body, seed=i + 1))[0] for i in range(n)]
            med = statistics.median(times)
            out[name] = {
                "first_request_s": round(warm_s, 3),
                "times_s": [round(t, 3) for t in times],
                "median_s": round(med, 3),
                "target_s": target,
                "met": med <= target,
            }
        return out
    finally:
        server.stop()


# ---------------------------------------------------------------------------- (b)
def bench_concurrency(tmp: Path, clients: int, per_client: int, max_queue: int | None) -> dict:
    server = Server(tmp / "b", max_queue=max_queue)
    try:
        server.wait_ready()
        _, first = timed_job(server, {"prompt": "a blue square", "turbo": True, "seed": 0})
        rss_first = server.rss_kib()

        def client(c: int) -> dict:
            accepted, refused, other = [], 0, []
            for i in range(per_client):
                status, obj, _ = server.submit(prompt=f"a green triangle {c} {i}", turbo=True, seed=100 * c + i)
                if status in (200, 201, 202):
                    accepted.append(obj["id"])
                elif status == 429:
                    refused += 1
                else:
                    other.append((status, obj))
            finals = {vid: server.wait(vid, poll=0.05)["status"] for vid in accepted}
            return {"accepted": accepted, "refused": refused, "other": other, "finals": finals}

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(client, range(clients)))
        wall = time.perf_counter() - t0
        rss_after = server.rss_kib()

        accepted = [vid for r in results for vid in r["accepted"]]
        finals = {vid: st for r in results for vid, st in r["finals"].items()}
        refused = sum(r["refused"] for r in results)
        other = [o for r in results for o in r["other"]]
        listed = [v["id"] for v in server.list_all()]
        expected = set(accepted) | {first["id"]}
        checks = {
            "all_answered_2xx_or_429": not other and len(accepted) + refused == clients * per_client,
            "ids_unique": len(set(accepted)) == len(accepted),
            "all_accepted_completed": all(finals[v] == "completed" for v in accepted),
            "listing_exact": len(listed) == len(set(listed)) and set(listed) == expected,
        }
        ratio = rss_after / rss_first
        return {
            "requests": clients * per_client,
            "clients": clients,
            "max_queue": max_queue,
            "accepted": len(accepted),
            "refused_429": refused,
            "other_answers": [f"{s}: {o!r}"[:200] for s, o in other],
            "wall_s": round(wall, 2),
            "checks": checks,
            "met_no_loss": all(checks.values()),
            "rss_after_first_mib": round(rss_first / 1024, 1),
            "rss_after_all_mib": round(rss_after / 1024, 1),
            "rss_ratio": round(ratio, 3),
            "met_rss": ratio <= 1.2,
        }
    finally:
        server.stop()


# ---------------------------------------------------------------------------- (c)
def submit_long_base(server: Server) -> dict:
    """A base-model job long enough to be caught in progress (fewer steps if refused)."""
    for steps in (400, 200, 100, 50):
        status, obj, _ = server.submit(prompt="a yellow circle bouncing", turbo=False, steps=steps, seed=7)
        if status in (200, 201, 202):
            return obj
    raise RuntimeError(f"could not submit a long base job: {status} {obj!r}")


def bench_crash(tmp: Path) -> dict:
    data = tmp / "c"
    server = Server(data)
    done = {}
    try:
        server.wait_ready()
        for i in range(2):
            _, obj = timed_job(server, {"prompt": f"a purple square {i}", "turbo": True, "seed": i})
            status, raw, _ = server.request("GET", f"/v1/videos/{obj['id']}/content")
            assert status == 200, (status, raw[:200])
            done[obj["id"]] = hashlib.sha256(raw).hexdigest()
        long = submit_long_base(server)
        seen = server.wait(long["id"], poll=0.02, timeout=120, until=("in_progress", *TERMINAL))
        if seen["status"] != "in_progress":
            raise RuntimeError(f"long job finished before it could be caught in progress: {seen['status']}")
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        server.stop()

    again = Server(data)
    try:
        restart = again.wait_ready()
        status, after, _ = again.get(long["id"])
        listed = {v["id"] for v in again.list_all()}
        same_files = {}
        for vid, digest in done.items():
            status_c, raw, _ = again.request("GET", f"/v1/videos/{vid}/content")
            same_files[vid] = status_c == 200 and hashlib.sha256(raw).hexdigest() == digest
        checks = {
            "earlier_jobs_listed": set(done) <= listed,
            "earlier_files_identical": all(same_files.values()),
            "interrupted_failed": status == 200 and after.get("status") == "failed",
            "interrupted_has_reason": status == 200 and bool(error_message(after).strip()),
        }
        return {
            "restart_to_listening_s": round(restart, 2),
            "interrupted_status": after.get("status") if status == 200 else f"HTTP {status}",
            "interrupted_error": error_message(after) if status == 200 else None,
            "checks": checks,
            "met": all(checks.values()),
        }
    finally:
        again.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5, help="timed requests per model in (a) (default 5)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--per-client", type=int, default=6)
    p.add_argument("--max-queue", type=int, default=None, help="passed to kumo serve in (b) (default: its own)")
    p.add_argument("--only", default="a,b,c", help="which parts to run, e.g. a,c")
    p.add_argument("--json", action="store_true", help="also print one JSON object at the end")
    args = p.parse_args(argv)
    parts = set(args.only.split(","))

    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        for key, fn in (
            ("a", lambda: bench_latency(tmp, args.n)),
            ("b", lambda: bench_concurrency(tmp, args.clients, args.per_client, args.max_queue)),
            ("c", lambda: bench_crash(tmp)),
        ):
            if key in parts:
                try:
                    report[key] = fn()
                except Exception as e:  # a failure is a result, reported as such
                    report[key] = {"error": f"{type(e).__name__}: {e}"[:2000], "met": False}
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    def mark(ok):
        return "met" if ok else "MISSED"

    rows = []
    if "a" in report:
        a = report["a"]
        for name in ("turbo", "base"):
            if name in a:
                r = a[name]
                rows.append(
                    (
                        f"(a) {name}: submit -> completed, median of {a['n']}",
                        f"{r['median_s']:.3f} s",
                        f"<= {r['target_s']} s",
                        mark(r["met"]),
                    )
                )
            else:
                rows.append((f"(a) {name}", "not measured", "", f"MISSED ({a.get('error', '')[:80]})"))
    if "b" in report:
        b = report["b"]
        if "error" in b:
            rows.append(("(b) concurrency", "not measured", "", f"MISSED ({b['error'][:80]})"))
        else:
            rows.append(
                (
                    f"(b) {b['requests']} req, {b['clients']} clients: {b['accepted']} done, {b['refused_429']}x 429",
                    ", ".join(k for k, v in b["checks"].items() if not v) or "none lost or duplicated",
                    "no loss",
                    mark(b["met_no_loss"]),
                )
            )
            rows.append(
                (
                    "(b) RSS after all / after first",
                    f"{b['rss_after_all_mib']} / {b['rss_after_first_mib']} MiB = {b['rss_ratio']}x",
                    "<= 1.2x",
                    mark(b["met_rss"]),
                )
            )
    if "c" in report:
        c = report["c"]
        if "error" in c:
            rows.append(("(c) kill -9 + restart", "not measured", "", f"MISSED ({c['error'][:80]})"))
        else:
            rows.append(
                (
                    f"(c) kill -9 + restart: interrupted job {c['interrupted_status']}",
                    ", ".join(k for k, v in c["checks"].items() if not v) or "all kept, reason given",
                    "kept + failed",
                    mark(c["met"]),
                )
            )
    width = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    print(f"kumo serve bench, {report['date_utc']}, {report['cpus']} CPUs, load {report['loadavg_start']}")
    for r in rows:
        print("  ".join(s.ljust(w) for s, w in zip(r, width)))
    print(f"load average at the end: {report['loadavg_end']}")
    if args.json:
        print(json.dumps(report, indent=2))
    ok = all(
        (report.get("a", {}).get(m, {}).get("met", False) if "a" in parts else True) for m in ("turbo", "base")
    ) and all(report[k].get("met", report[k].get("met_no_loss", False)) for k in ("b", "c") if k in parts)
    if "b" in parts and "met_rss" in report["b"]:
        ok = ok and report["b"]["met_rss"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

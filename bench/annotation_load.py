"""Many annotators judging at once over HTTP: throughput, latency, and proof nothing was lost.

    .venv/bin/python bench/annotation_load.py [--annotators 8,32] [--pairs 600] [--overlap 1]
        [--database postgres://postgres@127.0.0.1:5432/tandem_bench] [--sqlite] [--loops both]
        [--worker-class gthread] [--workers 3] [--threads 4]
        [--duration 60] [--train none,1,2]

With --duration the annotators stop after that many seconds instead of emptying the queue.
With --train, each load run is repeated while a DPO run on the real SmolLM2 trains beside it
(bench/background_dpo.py, the worker's engine) with the given intra-op thread limits ("none":
no training; 0: every core); the DPO's steps/s alone and under the load are printed too.

Each simulated annotator loops `next` then `submit` over HTTP keep-alive against gunicorn on
loopback, until the queue is empty (--loops chained: one submit with lease_next per pair, which
returns the next pair with the stored judgment). Afterwards the database is checked: duplicate
judgments (same annotator, same pair), pairs judged beyond their overlap, and submits the server
acknowledged but did not store must all be 0. Label Studio's figures measured on this kind of
machine (DESIGN.md) are printed beside ours for reference.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PORT = 8765
LABEL_STUDIO = {  # DESIGN.md: Label Studio 1.23, pairwise task, next + submit, this machine kind
    8: {"judgments_per_s": 7.1, "p50_ms": 574, "p99_ms": 5500},
    32: {"judgments_per_s": 4.3, "p50_ms": 3300, "p99_ms": 38000},
}


def django_env(database_url: str) -> dict[str, str]:
    return dict(
        os.environ,
        DATABASE_URL=database_url,
        SECRET_KEY="bench-only-secret",
        DEBUG="0",
        LOG_LEVEL="WARNING",
        VAR_DIR=str(ROOT / "var" / "bench"),
    )


def run_django(args: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load_fixture.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_server(
    env: dict[str, str], worker_class: str, workers: int, threads: int
) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{PORT}",
         "--workers", str(workers), "--worker-class", worker_class, "--threads", str(threads),
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("gunicorn did not start")


def annotator_loop(
    project: int,
    token: str,
    chained: bool,
    latencies: list,
    acknowledged: list,
    errors: list,
    deadline: float,
):
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None):
        started = time.perf_counter()
        connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        return response.status, payload

    try:
        lease = None
        while time.monotonic() < deadline:
            if lease is None:
                status, payload = call("POST", f"/api/projects/{project}/comparisons/next/")
                if status == 204:
                    return
                if status != 200:
                    errors.append((status, payload[:200]))
                    return
                lease = json.loads(payload)
            body = {"choice": "left", "strength": "clear", "time_spent_ms": 1200}
            if chained:
                body["lease_next"] = True
            submit_url = f"/api/assignments/{lease['assignment_id']}/submit/"
            status, payload = call("POST", submit_url, body)
            if status not in (200, 201):
                errors.append((status, payload[:200]))
                return
            answer = json.loads(payload)
            acknowledged.append(answer["id"])
            if not chained:
                lease = None
            elif answer["next"] is None:
                return
            else:
                lease = answer["next"]
    except Exception as error:  # reported, not hidden
        errors.append(("exception", repr(error)))


def cpu_seconds(processes: list[psutil.Process], *, reaped: bool = False) -> float:
    """CPU of these processes; with `reaped`, also of their children that have exited (a
    PostgreSQL backend per connection lives and dies inside the run, and its postmaster
    collects its time)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended since it was listed
            continue
        total += times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
    return total


def cpu_split(server: subprocess.Popen) -> dict[str, float]:
    """CPU seconds so far of the load generator, the web server and the database server."""
    web = psutil.Process(server.pid)
    database = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres",)]
    postmasters = [p for p in database if p.ppid() not in {q.pid for q in database}]
    backends = [p for p in database if p not in postmasters]
    return {
        "client": cpu_seconds([psutil.Process()]),
        "web": cpu_seconds([web, *web.children(recursive=True)]),
        "database": cpu_seconds(backends) + cpu_seconds(postmasters, reaped=True),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BackgroundTraining:
    """bench/background_dpo.py in its own process; counts its optimizer steps as they come."""

    SOLO_SECONDS = 30.0  # its pace alone, measured before the annotators start

    def __init__(self, threads: int, out: Path) -> None:
        self.steps: list[float] = []  # monotonic time of each step
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "background_dpo.py"), str(out),
             "--threads", str(threads)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("step "):
                self.steps.append(float(line.split()[2]))

    def steps_per_s(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.steps) / (end - start)

    def warm_up(self) -> float:
        """Wait for training to start, then return its steps/s alone."""
        deadline = time.monotonic() + 600
        while len(self.steps) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the background DPO run did not start")
            time.sleep(0.5)
        start = time.monotonic()
        time.sleep(self.SOLO_SECONDS)
        return self.steps_per_s(start, time.monotonic())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def run_once(
    database_url: str,
    annotators: int,
    pairs: int,
    overlap: int,
    server_config: tuple[str, int, int],
    chained: bool,
    duration: float | None = None,
    train_threads: int | None = None,
) -> dict:
    env = django_env(database_url)
    tag = f"{annotators}-{int(time.time())}"
    setup = run_django(["setup", str(annotators), str(pairs), str(overlap), tag], env)
    server = start_server(env, *server_config)
    training = None
    if train_threads is not None:
        training = BackgroundTraining(train_threads, ROOT / "var" / "bench" / f"dpo-{tag}")
    latencies: list[float] = []
    acknowledged: list[int] = []
    errors: list = []
    try:
        dpo_alone = training.warm_up() if training is not None else None
        deadline = time.monotonic() + duration if duration else float("inf")
        annotator_threads = [
            threading.Thread(
                target=annotator_loop,
                args=(setup["project"], token, chained, latencies, acknowledged, errors, deadline),
            )
            for token in setup["tokens"]
        ]
        cpu_before = cpu_split(server)
        started = time.perf_counter()
        window_start = time.monotonic()
        for thread in annotator_threads:
            thread.start()
        for thread in annotator_threads:
            thread.join()
        seconds = time.perf_counter() - started
        dpo_loaded = training.steps_per_s(window_start, time.monotonic()) if training else None
        cpu_after = cpu_split(server)
    finally:
        if training is not None:
            training.stop()
        server.terminate()
        server.wait(timeout=30)
    verify = run_django(["verify", str(setup["project"])], env)
    lost = len(set(acknowledged) - set(verify["ids"]))
    stored = len(verify["ids"])
    return {
        "loop": "submit+lease_next" if chained else "next, submit",
        "annotators": annotators,
        "training": "-" if train_threads is None else f"dpo, {train_threads or 'all'} threads",
        "dpo_steps_per_s": (dpo_alone, dpo_loaded),
        "judgments": stored,
        "expected": pairs * overlap if not duration else stored,
        "seconds": seconds,
        "judgments_per_s": stored / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "duplicates": verify["duplicates"],
        "over_quota": verify["over_quota"] + verify["count_mismatch"],
        "lost": lost,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        # Where the two cores went, per stored judgment (SQLite's share is inside "web").
        "cpu_ms": {
            part: (cpu_after[part] - cpu_before[part]) * 1000 / max(stored, 1) for part in cpu_after
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", default="8,32")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument(
        "--worker-class", default="gthread",
        help="gunicorn worker class: gthread (keep-alive, threads share a process) or sync "
        "(one request at a time per process, a new connection per request)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--database", default="postgres://postgres@127.0.0.1:5432/tandem_bench",
        help="PostgreSQL URL (the database is dropped and created afresh)",
    )  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="also run on the embedded SQLite")
    parser.add_argument(
        "--loops", default="classic",
        help="classic (next, then submit: two requests per pair), chained (submit with "
        "lease_next: one request per pair), or both",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, help="seconds of judging per run")
    parser.add_argument(
        "--train", default="none",
        help="comma list: none (no training beside the load) or a DPO thread limit (0: all)",
    )  # fmt: skip
    args = parser.parse_args()
    trainings = [None if t == "none" else int(t) for t in args.train.split(",")]
    chained_modes = {"classic": [False], "chained": [True], "both": [False, True]}[args.loops]
    counts = [int(n) for n in args.annotators.split(",")]
    targets = [("postgresql", args.database)]
    if args.sqlite:
        sqlite_file = ROOT / "var" / "bench" / "load.sqlite3"
        for stale in sqlite_file.parent.glob(f"{sqlite_file.name}*"):
            stale.unlink()
        targets.append(("sqlite", f"sqlite:///{sqlite_file}"))
    if args.database.startswith("postgres"):
        # A fresh database each time: one grown by earlier runs is slower and not comparable.
        name = args.database.rsplit("/", 1)[1]
        for command in ("dropdb", "createdb"):
            subprocess.run([command, "-h", "127.0.0.1", "-U", "postgres", name],
                           capture_output=True)  # fmt: skip
    rows = []
    for backend, url in targets:
        for chained in chained_modes:
            for count in counts:
                for threads in trainings:
                    server_config = (args.worker_class, args.workers, args.threads)
                    result = run_once(url, count, args.pairs, args.overlap, server_config,
                                      chained, args.duration, threads)  # fmt: skip
                    rows.append((backend, result))
                    print(f"  {backend} {result['loop']} {count} annotators, training "
                          f"{result['training']}: {result['judgments_per_s']:.1f} judgments/s",
                          flush=True)  # fmt: skip
    print(
        f"\nAnnotation load, {args.pairs} pairs x overlap {args.overlap}, gunicorn "
        f"{args.worker_class} {args.workers} workers x {args.threads} threads, loopback, "
        f"{os.cpu_count()} cores"
    )
    header = ["system", "db", "loop", "annotators", "training", "judgments", "judg/s", "p50 ms",
              "p99 ms", "dupes", "over-quota", "lost", "errors"]  # fmt: skip
    table = []
    for backend, r in rows:
        table.append(["tandem", backend, r["loop"], r["annotators"], r["training"],
                      f"{r['judgments']}/{r['expected']}",
                      f"{r['judgments_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      r["duplicates"], r["over_quota"], r["lost"], r["errors"]])  # fmt: skip
    for count, ls in LABEL_STUDIO.items():
        table.append(["label-studio*", "sqlite", "next, submit", count, "-", "",
                      f"{ls['judgments_per_s']:.1f}",
                      ls["p50_ms"], ls["p99_ms"], "", "", "", ""])  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=True)]
    for row in [header, ["-" * w for w in widths], *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print("* Label Studio 1.23 as measured on this kind of machine (DESIGN.md), not in this run.")
    print("\nCPU ms per judgment (load generator / web server / PostgreSQL):")
    for backend, r in rows:
        cpu = r["cpu_ms"]
        print(f"  {backend} {r['loop']} {r['annotators']}: {cpu['client']:.1f} / "
              f"{cpu['web']:.1f} / {cpu['database']:.1f}")  # fmt: skip
    for _backend, r in rows:
        alone, loaded = r["dpo_steps_per_s"]
        if alone is not None:
            print(f"DPO steps/s beside {r['annotators']} annotators ({r['training']}): alone "
                  f"{alone:.3f}, under the load {loaded:.3f} ({loaded / alone:.2f}x)")  # fmt: skip
    for backend, r in rows:
        if r["first_error"]:
            print(f"first error ({backend}, {r['loop']}, {r['annotators']}): {r['first_error']}")


if __name__ == "__main__":
    main()

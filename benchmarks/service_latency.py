"""Latency of single-file `POST /api/v1/grade` on loopback: 8 concurrent clients, 2,000 requests.

Starts `grader serve` on a free loopback port with a fresh data folder, warms it up, then sends rounds of
2,000 requests from 8 client threads. Every request is a distinct file (the bundled correct
submission plus a unique comment), so each one is stored and graded in the sandbox for real.
Prints, for each of --rounds rounds of --requests requests on the same service, p50/p90/p99/max
latency, errors, throughput, CPU per request and the service's memory (RSS) at each quarter; the
service's memory before and after all of them; how quick the machine was (`python -c "import
numpy"`); and, for each round, the lowest p50 any service could reach at the CPU the sandbox alone
took per request (with every client always in flight, p50 is about clients / throughput, and the
cores bound throughput). The targets are judged on the median round.

    python benchmarks/service_latency.py [--requests 2000] [--rounds 3] [--clients 8] [--client stdlib|httpx] [--json F]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from _common import children, percentile, process_cpu

ROOT = Path(__file__).resolve().parent.parent
http_client_errors = http.client.HTTPException
SOURCE = (ROOT / "submissions" / "examples" / "correct.py").read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sandbox_cpu(pid: int) -> float:
    """CPU of a process's children (the zygotes), of theirs (the forkers) and of the runs those reaped."""
    zygotes = children(pid)
    return sum(process_cpu(z)[0] for z in zygotes) + sum(sum(process_cpu(f)) for z in zygotes for f in children(z))


def sandbox_rss(pid: int) -> float:
    """RSS (MB) of the zygotes and their forkers, summed (pages they share count in each)."""
    zygotes = children(pid)
    return sum(rss_mb(z) for z in zygotes) + sum(rss_mb(f) for z in zygotes for f in children(z))


def sample_rss(pid: int, samples: list[float], done: threading.Event) -> None:
    while not done.wait(0.5):
        samples.append(rss_mb(pid))


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADER_DATA_DIR": str(data_dir), "GRADER_API_TOKENS": "",
           "OPENBLAS_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("grader serve did not start within 60 s")


BOUNDARY = "----grader-benchmark-boundary"


class StdlibClient:
    """One keep-alive connection with the standard library's http.client and a multipart body built
    by hand: the same requests as httpx sends, for a fraction of the client's CPU (the clients share
    the two cores with the service here; an LMS would call from another machine)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def post(self, body: bytes) -> tuple[int, bytes]:
        payload = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"layers.py\"\r\n"
                   "Content-Type: text/x-python\r\n\r\n").encode() + body + f"\r\n--{BOUNDARY}--\r\n".encode()
        self.connection.request("POST", self.path, payload,
                                {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


class HttpxClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=60)

    def post(self, body: bytes) -> tuple[int, bytes]:
        response = self.http.post(self.url, files={"file": ("layers.py", body)})
        return response.status_code, response.content

    def close(self) -> None:
        self.http.close()


CLIENTS: dict[str, type[HttpxClient | StdlibClient]] = {"httpx": HttpxClient, "stdlib": StdlibClient}


def run_clients(
    url: str, total: int, clients: int, offset: int, kind: str = "httpx"
) -> tuple[list[float], list[str], list[float]]:
    latencies: list[float] = []
    errors: list[str] = []
    grading: list[float] = []  # the engine's own time per request, as the report states it
    counter = iter(range(offset, offset + total))
    lock = threading.Lock()

    def client() -> None:
        http = CLIENTS[kind](url)
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                body = SOURCE + f"\n# request {n}\n".encode()
                started = time.perf_counter()
                try:
                    status, content = http.post(body)
                    problem = ""
                except (httpx.HTTPError, OSError, http_client_errors) as error:
                    status, content, problem = 0, b"", f"{error.__class__.__name__}: {error}"
                elapsed = time.perf_counter() - started  # the body is read by now; parsing it is not timed
                seconds = None
                if not problem:
                    payload = json.loads(content) if status == 200 else {}
                    if payload.get("score") == 10:
                        seconds = float(payload["seconds"])
                    else:
                        problem = f"HTTP {status}: {content[:120]!r}"
                with lock:
                    latencies.append(elapsed)
                    if seconds is not None:
                        grading.append(seconds)
                    if problem:
                        errors.append(problem)
        finally:
            http.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, grading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="stdlib",
                        help="the clients' HTTP library: the standard library's http.client (the default: the "
                             "lightest, so the clients take least of the two cores from the service), or httpx")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure this many rounds of --requests each, one after another on the same service; "
                             "the targets are judged on the median round (single rounds vary on a shared VM)")
    args = parser.parse_args()

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = start_server(Path(folder) / "data", port)
        url = f"http://127.0.0.1:{port}/api/v1/grade"
        try:
            run_clients(url, args.warmup, args.clients, offset=0, kind=args.client)
            rss_start = rss_mb(server.pid)
            zygotes_start = sandbox_rss(server.pid)
            for number in range(args.rounds):
                rounds.append(measure_round(server.pid, url, args, offset=args.warmup + number * args.requests))
            rss_end = rss_mb(server.pid)
            zygotes_end = sandbox_rss(server.pid)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)

    median = sorted(rounds, key=lambda r: r["p50_ms"])[len(rounds) // 2]
    results = {
        "requests_per_round": args.requests,
        "clients": args.clients,
        "client_library": args.client,
        "rounds": [{key: value for key, value in r.items() if key != "errors_seen"} for r in rounds],
        "median_round": {key: value for key, value in median.items() if key != "errors_seen"},
        "errors": sum(r["errors"] for r in rounds),
        "service_rss_mb_start": round(rss_start, 1),
        "service_rss_mb_end": round(rss_end, 1),
        "sandbox_rss_mb_start": round(zygotes_start, 1),
        "sandbox_rss_mb_end": round(zygotes_end, 1),
        # how quick the machine is right now: the same code measures very differently from hour to hour
        "numpy_start_ms": numpy_start_ms(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(results, indent=2))
    for error in [e for r in rounds for e in r["errors_seen"]][:5]:
        print("error:", error, file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print("p50 by round:", ", ".join(f"{r['p50_ms']} ms" for r in rounds))
    print("the floor the sandbox's CPU alone sets (clients x its CPU per request / cores), by round:",
          ", ".join(f"{r['p50_floor_sandbox_only_ms']} ms" for r in rounds))
    targets_met = median["p50_ms"] <= 50 and max(r["p99_ms"] for r in rounds) <= 200 and not results["errors"]
    print("targets (median round's p50 <= 50 ms, every round's p99 <= 200 ms, no errors):",
          "met" if targets_met else "NOT met")


def measure_round(pid: int, url: str, args: argparse.Namespace, offset: int) -> dict[str, Any]:
    service_cpu_start, sandbox_cpu_start = process_cpu(pid)[0], sandbox_cpu(pid)
    client_cpu_start = sum(os.times()[:2])
    started = time.perf_counter()
    sampling = threading.Event()
    samples: list[float] = []  # the service's RSS every half second: flat, or still growing?
    sampler = threading.Thread(target=sample_rss, args=(pid, samples, sampling))
    sampler.start()
    try:
        latencies, errors, grading = run_clients(url, args.requests, args.clients, offset=offset, kind=args.client)
    finally:
        sampling.set()
        sampler.join()
    wall = time.perf_counter() - started
    client_cpu = sum(os.times()[:2]) - client_cpu_start  # these clients share the 2 cores
    service_cpu = process_cpu(pid)[0] - service_cpu_start
    sandbox_cpu_used = sandbox_cpu(pid) - sandbox_cpu_start
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "errors_seen": errors,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "throughput_per_s": round(len(latencies) / wall, 1),
        "grading_p50_ms": round(percentile(grading, 50) * 1000, 1) if grading else None,
        "service_cpu_ms_per_request": round(service_cpu / len(latencies) * 1000, 2),
        "sandbox_cpu_ms_per_request": round(sandbox_cpu_used / len(latencies) * 1000, 2),
        "client_cpu_ms_per_request": round(client_cpu / len(latencies) * 1000, 2),
        # Little's law with every client always in flight: mean latency = clients / throughput, and the
        # cores bound throughput by CPU per request. What the sandbox alone takes sets a floor no
        # service-side work can go under on this machine at this moment.
        "p50_floor_sandbox_only_ms": round(args.clients * sandbox_cpu_used / len(latencies) / (os.cpu_count() or 1)
                                           * 1000, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "service_rss_mb_by_quarter": [round(samples[min(len(samples) - 1, len(samples) * q // 4)], 1)
                                      for q in (1, 2, 3, 4)] if samples else [],
    }


def numpy_start_ms(times: int = 9) -> float:
    """The median wall time of `python -c "import numpy"` (one BLAS thread), one at a time."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    spans = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], env=env, check=True)
        spans.append(time.perf_counter() - started)
    return round(statistics.median(spans) * 1000, 1)


if __name__ == "__main__":
    main()

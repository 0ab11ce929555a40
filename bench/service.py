"""Benchmark: the HTTP service (face-match-age serve) under concurrent local clients, against the same photos
through FaceAnalyzer in one process.

    uv run python -m bench.service                         # 8 clients, 24 /compare requests, 3 turns, CPU
    uv run python -m bench.service --clients 16 --requests 96 --batch-wait-ms 10

Starts `face-match-age serve` as a subprocess on a free 127.0.0.1 port (models loaded before timing, one warm-up
request), then sends the same POST /compare requests (two photos each: the astronaut, shifted, scaled to 400-490
pixels and mirrored, no two alike) twice: from --clients concurrent clients (threads, each with its own
connection), then from one client, one request after another; and FaceAnalyzer in this process compares the
same pairs one after another (load_image and analyze_many on each pair, as pair mode does). The three take turns
--repeats times, so that a busy machine slows them alike. Prints requests/s (median turn), p50/p95 latency
(every turn) and the CPU time per request of the answering process (the service's; this one's for FaceAnalyzer)
of each, the ratios, and how the service batched the concurrent requests (/health). The clients send
a bounded number of requests (2 x --requests x --repeats, and two warm-ups), only to 127.0.0.1, and stop.

FaceAnalyzer is built in the main thread and runs in one other thread, as the service's models are: on the
shared 2-core build machine under a load of 12 to 18, the same pair through a FaceAnalyzer built and run in one
thread (torch's 2 threads) took 6 to 20 times the CPU time it took when run in a thread other than the one that
built it, or with 1 torch thread; this benchmark compares the service, not that (REPORT.md).

Where the VGGFace2 weights or an age checkpoint are missing, random ones with the real layout
(bench.model_files.ensure_models) are used: speed does not depend on weight values.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.cli import benchmark_parser, run_benchmark
from bench.model_files import ensure_models
from bench.photos import WHOLE_PHOTO, write_astronaut_variants

EXAMPLES = (
    "uv run python -m bench.service                         # 8 clients, 24 /compare requests, 3 turns, CPU",
    "uv run python -m bench.service --clients 16 --requests 96 --batch-wait-ms 10",
    "uv run python -m bench.service --device cuda --clients 32 --requests 256",
)
SERVING = re.compile(r"serving on (http://\S+?)/ ")
START_TIMEOUT_S = 600  # models load on a busy 2-core machine in well under this


def percentile(samples: list[float], share: float) -> float:
    """The `share` quantile of `samples` (linear between the nearest ranks)."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


class Run:
    """Requests/s and latencies (seconds) of one way of answering the same requests, and the CPU seconds per
    request of the process that answered them (the service's, or this one's for FaceAnalyzer)."""

    def __init__(self, label: str, wall_s: float, latencies: list[float], requests: int, cpu_s: float | None) -> None:
        self.label, self.wall_s, self.latencies, self.requests, self.cpu_s = label, wall_s, latencies, requests, cpu_s

    @property
    def rate(self) -> float:
        """Requests per second over the median run."""
        return self.requests / self.wall_s

    def row(self) -> str:
        p50, p95 = (percentile(self.latencies, q) * 1000 for q in (0.5, 0.95))
        cpu = "-" if self.cpu_s is None else f"{self.cpu_s * 1000:.0f}"
        return f"{self.label:<34}{self.rate:>8.2f}{p50:>10.0f}{p95:>10.0f}{cpu:>14}"


def start_service(checkpoint: Path, device: str, batch_wait_ms: float, log: Path) -> tuple[subprocess.Popen, str]:
    """`face-match-age serve` on a free port of 127.0.0.1; (the process, its base URL) once it listens."""
    command = [
        sys.executable,
        "-c",
        "import sys; from face_match_age.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
        "--port",
        "0",
        "--ckpt",
        str(checkpoint),
        "--device",
        device,
        "--batch-wait-ms",
        str(batch_wait_ms),
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited ({process.returncode}) before serving: {log.read_text()[-800:]}")
        found = SERVING.search(log.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the service did not start within {START_TIMEOUT_S} s: {log.read_text()[-800:]}")


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Clients:
    """HTTP clients of the service, each thread with its own connection."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.local = threading.local()

    def compare(self, pair: tuple[bytes, bytes]) -> float:
        """One POST /compare; its latency in seconds."""
        import requests

        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        started = time.perf_counter()
        files = {"image1": ("a.jpg", pair[0], "image/jpeg"), "image2": ("b.jpg", pair[1], "image/jpeg")}
        response = self.local.session.post(f"{self.base_url}/compare", files=files, timeout=600)
        response.raise_for_status()
        if response.json()["verification"] is None:
            raise SystemExit(f"no decision on a benchmark pair: {response.json()['error']}")
        return time.perf_counter() - started

    def batching(self) -> dict:
        import requests

        return requests.get(f"{self.base_url}/health", timeout=60).json()["batching"]

    def concurrent(self, pairs: list[tuple[bytes, bytes]], clients: int) -> tuple[float, list[float]]:
        with ThreadPoolExecutor(clients) as pool:
            started = time.perf_counter()
            latencies = list(pool.map(self.compare, pairs))
        return time.perf_counter() - started, latencies

    def sequential(self, pairs: list[tuple[bytes, bytes]]) -> tuple[float, list[float]]:
        started = time.perf_counter()
        latencies = [self.compare(pair) for pair in pairs]
        return time.perf_counter() - started, latencies


class InProcess:
    """The same pairs through FaceAnalyzer in this process, one after another, as pair mode compares them; built
    in the main thread and run in one other thread, as the service's models are (see the module's docstring)."""

    def __init__(self, checkpoint: Path, device: str) -> None:
        from face_match_age.inference.analyzer import FaceAnalyzer

        self.analyzer = FaceAnalyzer(age_checkpoint=checkpoint, device=device)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="analyzer")

    def compare(self, pair: tuple[bytes, bytes]) -> float:
        return self.worker.submit(self._compare, pair).result()

    def _compare(self, pair: tuple[bytes, bytes]) -> float:
        from face_match_age.detection.imaging import load_image
        from face_match_age.inference.analyzer import pair_result
        from face_match_age.match_rule import MatchRule

        started = time.perf_counter()
        first, second = self.analyzer.analyze_many([load_image(pair[0]), load_image(pair[1])])
        pair_result(first, second, MatchRule(self.analyzer.config.verification_threshold))
        return time.perf_counter() - started

    def sequential(self, pairs: list[tuple[bytes, bytes]]) -> tuple[float, list[float]]:
        started = time.perf_counter()
        latencies = [self.compare(pair) for pair in pairs]
        return time.perf_counter() - started, latencies


def measure(
    clients: Clients, in_process: InProcess, pairs, concurrency: int, repeats: int, service_pid: int
) -> tuple[list[Run], dict]:
    """The three ways taking turns within each repeat (a busy machine slows them alike): the median wall time
    of each, every latency of the repeats, and the CPU time per request of the answering process over all
    repeats (what a loaded machine's scheduling does not change). Also how the service batched the concurrent
    requests."""
    clients.compare(pairs[0]), in_process.compare(pairs[0])  # warm-up: lazy imports, first calls
    walls: dict[str, list[float]] = {"concurrent": [], "sequential": [], "analyzer": []}
    latencies: dict[str, list[float]] = {key: [] for key in walls}
    cpu: dict[str, float | None] = dict.fromkeys(walls, 0.0)
    batching = {"batches": 0, "requests": 0, "largest": 0}
    for _ in range(repeats):
        before = clients.batching()
        for key, run in (
            ("concurrent", lambda: clients.concurrent(pairs, concurrency)),
            ("sequential", lambda: clients.sequential(pairs)),
            ("analyzer", lambda: in_process.sequential(pairs)),
        ):
            pid = os.getpid() if key == "analyzer" else service_pid
            cpu_before = cpu_seconds(pid)
            wall, times = run()
            cpu_after = cpu_seconds(pid)
            if cpu[key] is not None and cpu_before is not None and cpu_after is not None:
                cpu[key] += (cpu_after - cpu_before) / len(pairs) / repeats
            else:
                cpu[key] = None
            walls[key].append(wall)
            latencies[key] += times
            if key == "concurrent":
                after = clients.batching()
                batching["batches"] += after["batches"] - before["batches"]
                batching["requests"] += after["requests"] - before["requests"]
                batching["largest"] = after["largest_batch_requests"]
    labels = {
        "concurrent": f"service, {concurrency} concurrent clients",
        "sequential": "service, 1 client (sequential)",
        "analyzer": "FaceAnalyzer, one process",
    }
    runs = [Run(labels[key], statistics.median(walls[key]), latencies[key], len(pairs), cpu[key]) for key in walls]
    return runs, batching


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.service", __doc__, EXAMPLES)
    parser.group("data").add_argument(
        "--requests", type=int, default=24, help="/compare requests in each run (each a distinct pair of photos)"
    )
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    hardware = parser.group("hardware")
    hardware.add_argument("--device", default="cpu", help="cpu, cuda...; the service and FaceAnalyzer use it alike")
    hardware.add_argument("--batch-wait-ms", type=float, default=5.0, help="the service's --batch-wait-ms")
    benchmark = parser.group("benchmark")
    benchmark.add_argument("--clients", type=int, default=8, help="concurrent clients of the first run (at most 64)")
    benchmark.add_argument("--repeats", type=int, default=3, help="turns of the three ways; the median is shown")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 10_000 or not 1 <= args.repeats <= 20:
        parser.error("--clients must lie in 1..64, --requests in 1..10000 and --repeats in 1..20")
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)  # sets TORCH_HOME for the service too when needed
        print("".join(f"note: {note}\n" for note in notes), end="")
        photos = write_astronaut_variants(
            scratch / "photos", 2 * args.requests, WHOLE_PHOTO, sides=(400, 430, 460, 490)
        )
        data = [path.read_bytes() for path in photos]
        pairs = list(zip(data[0::2], data[1::2]))
        process, base_url = start_service(checkpoint, args.device, args.batch_wait_ms, scratch / "service.log")
        try:
            in_process = InProcess(checkpoint, args.device)
            runs, batching = measure(Clients(base_url), in_process, pairs, args.clients, args.repeats, process.pid)
        finally:
            stop_service(process)
    concurrent, sequential, alone = runs
    print(
        f"\ndevice {args.device}; {args.requests} POST /compare requests (two 400-490 px photos each) per run, "
        f"{args.repeats} turns (median requests/s; latencies of every turn); "
        f"service batch wait {args.batch_wait_ms:g} ms"
    )
    print(f"{'way':<34}{'req/s':>8}{'p50 ms':>10}{'p95 ms':>10}{'CPU ms/req':>14}")
    for run in runs:
        print(run.row())
    print(f"concurrent / sequential requests/s: {concurrent.rate / sequential.rate:.2f}")
    print(f"concurrent / FaceAnalyzer requests/s: {concurrent.rate / alone.rate:.2f}")
    print(f"sequential / FaceAnalyzer requests/s: {sequential.rate / alone.rate:.2f}")
    if all(run.cpu_s for run in runs):
        print(
            f"CPU per request, concurrent / sequential: {concurrent.cpu_s / sequential.cpu_s:.2f}; "
            f"sequential / FaceAnalyzer: {sequential.cpu_s / alone.cpu_s:.2f}"
        )
    print(
        f"batches of the concurrent runs: {batching['requests']} requests in {batching['batches']} batches "
        f"({batching['requests'] / max(1, batching['batches']):.1f} per batch; largest {batching['largest']})"
    )
    return 0


if __name__ == "__main__":
    run_benchmark(main)

"""Serving at load: queries/s and p50/p99 latency of ``GET /search`` with N concurrent HTTP clients, with and
without micro-batching of query encodings (`search.batching`), and with the batches encoded in a child process
(`search.encoder_process`).

Three ``vitrine serve`` processes are started on copies of one index: "batched" with micro-batching as
configured (``VITRINE_SEARCH__BATCH_WINDOW_MS``, default the setting's 2 ms), "unbatched" with it off (``=0``:
each query encoded in its own request thread) and "process", batched with the encoder calls in a child process
(``VITRINE_SEARCH__ENCODER_PROCESS=true``: the model does not wait for the GIL the request threads hold). Two
more take the process mode and undo one setting each, to measure it: "threaded" ranks each search in a worker
thread (``VITRINE_SEARCH__RANK_ON_LOOP=false``, against the default: on the event loop), "ungated" also lets up to
64 of those threads compute at once (``VITRINE_SEARCH__PARALLEL_SEARCHES=64``, against the default 1), "pooled"
gives the embedded engine's search pool one thread per CPU (``VITRINE_STORE__SEARCH_THREADS``, against the
default 1). All have the query cache off (``VITRINE_SEARCH__CACHE_SIZE=0``) and get distinct shoppers' queries
(the demo's text queries, each with shopper-style additions: "... for women under 50 euros"), so every search
really runs the encoder. ``--clients`` threads (one ``httpx.Client`` each) send searches back to back for
``--duration`` seconds after ``--warmup`` seconds not counted; the servers are measured in turn, rotating which
goes first, for ``--rounds`` rounds (the idle ones wait). Prints a table (mode, clients, q/s, p50, p99, errors,
mean encoder batch, where the server's time went) and the ratios batched / unbatched, process / batched,
process / threaded, threaded / ungated and process / pooled (``--modes`` picks the servers; the default is the
first three).

Where the time goes comes from each server's own ``/metrics`` (differences over the measured window):
encoder calls (`vitrine_encode_seconds`, per query and per call), store calls (`vitrine_store_seconds`) and the
request time inside the app (`vitrine_http_request_duration_seconds`); the rest of the latency the clients see
is queueing for the server's thread pool, HTTP and JSON. The server process's CPU seconds
(`process_cpu_seconds_total`, plus the CPU of its child processes from ``/proc``: the encoder process) give the
CPU cost of a query ("CPU ms/q") and the CPUs the server got ("CPUs used"): on a machine shared with other work,
queries/s follows the share of the CPUs the server gets, CPU ms per query does not. The 1-minute load average at
the start of each run is printed beside.

The index: with ``--model demo`` (default) the demo index in ``.vitrine`` (``make index-demo``) when it is there,
copied so that a ``vitrine serve`` running on it does not lock it out; otherwise, and for any other model, the
first ``--products`` products of the demo catalog are indexed into a temporary home with that model. A larger
encoder with no download: ``--model open_clip:ViT-B-32/random`` (random weights: search results are noise, the
cost of encoding is real).

Run::

    .venv/bin/python bench/serve.py                                         # demo encoder, 16 clients, 20 s
    .venv/bin/python bench/serve.py --model open_clip:ViT-B-32/random --clients 16 --duration 20
    .venv/bin/python bench/serve.py --clients 1,4,16 --duration 10 --rounds 1
    .venv/bin/python bench/serve.py --modes batched,process --torch-threads 1
    .venv/bin/python bench/serve.py --modes process,threaded,ungated,pooled --torch-threads 1

Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
DEMO_HOME = ROOT / ".vitrine"
VITRINE = Path(sys.executable).parent / "vitrine"
READY_TIMEOUT_S = 300.0
MODES = ("batched", "unbatched", "process", "threaded", "ungated", "pooled")
MODE_ENV = {"process": {"VITRINE_SEARCH__ENCODER_PROCESS": "true"},
            "threaded": {"VITRINE_SEARCH__ENCODER_PROCESS": "true", "VITRINE_SEARCH__RANK_ON_LOOP": "false"},
            "ungated": {"VITRINE_SEARCH__ENCODER_PROCESS": "true", "VITRINE_SEARCH__RANK_ON_LOOP": "false",
                        "VITRINE_SEARCH__PARALLEL_SEARCHES": "64"},
            "pooled": {"VITRINE_SEARCH__ENCODER_PROCESS": "true",
                       "VITRINE_STORE__SEARCH_THREADS": str(os.cpu_count() or 1)}}
"""Settings of a mode besides its batch window (unbatched: 0, the others: ``--window-ms``)."""

WHO = ("", "for women", "for men", "for kids", "for girls", "for boys", "unisex", "for teens", "for my mum",
       "for my dad")
HOW = ("", "in black", "in white", "in navy", "cheap", "premium", "lightweight", "warm", "cotton", "leather",
       "on sale", "size M", "size 42", "casual", "formal", "classic", "vintage", "for summer", "for winter",
       "for running")
WHEN = ("", "under 50 euros", "with free delivery", "best seller", "new season", "gift idea", "for travel",
        "for the office", "for the weekend", "for a wedding")


def log(message: str) -> None:
    """Progress, on stderr (tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shopper_queries(seed: int = 0) -> list[str]:
    """Distinct shoppers' queries: each demo text query with additions of who, how and when, shuffled."""
    rows = [json.loads(line) for line in (DEMO / "queries.jsonl").read_text().splitlines() if line]
    bases = [row["query"] for row in rows if row.get("query")]  # the text queries (the others are images)
    out = [" ".join(w for w in (base, how, who, when) if w) for base in bases for who in WHO for how in HOW
           for when in WHEN]
    random.Random(seed).shuffle(out)
    return list(dict.fromkeys(out))


# -- the index and the servers -----------------------------------------------------------------------

def prepare_home(folder: Path, model: str, products: int) -> Path:
    """A VITRINE_HOME holding an index built with ``model`` (see the module's docstring); returns it."""
    if model == "demo" and (DEMO_HOME / "store" / "aliases.json").is_file():
        log(f"using the demo index of {DEMO_HOME} (copied for each server)")
        return DEMO_HOME
    home = folder / "home"
    rows = [json.loads(line) for line in (DEMO / "catalog.jsonl").read_text().splitlines()[:products]]
    for row in rows:
        row["image"] = str(DEMO / row["image"])
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows))
    log(f"indexing {len(rows)} demo products with {model} into {home}")
    env = {**os.environ, "VITRINE_HOME": str(home), "VITRINE_IMAGES__THUMBNAILS": "false",
           "VITRINE_INDEXER__IMAGE_ROOTS": json.dumps([str(DEMO)])}
    subprocess.run([str(VITRINE), "index", str(catalog), "--model", model, "--no-progress"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return home


def descendants_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of the live processes descended from ``pid`` (the encoder process of a
    "process" server), from ``/proc``; 0.0 where there is none."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    total, todo = 0.0, [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                total += times[child]
                todo.append(child)
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A ``vitrine serve`` child process."""

    mode: str
    url: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The server's /metrics samples, by name and labels."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


@contextmanager
def serving(home: Path, folder: Path, mode: str, *, window_ms: float, max_batch: int,
            extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``vitrine serve`` on a copy of ``home`` with the given batch window; stop it after."""
    own = folder / mode
    own.mkdir()
    # the store's files are sparse (mostly unwritten pages): keep them so, a plain copy is 6x larger
    subprocess.run(["cp", "-r", "--sparse=always", str(home / "store"), str(own / "store")], check=True)
    (own / "store" / ".lock").unlink(missing_ok=True)
    port = free_port()
    env = {**os.environ, "VITRINE_HOME": str(own), "VITRINE_SEARCH__BATCH_WINDOW_MS": str(window_ms),
           "VITRINE_SEARCH__MAX_BATCH": str(max_batch), "VITRINE_SEARCH__CACHE_SIZE": "0",
           "VITRINE_IMAGES__THUMBNAILS": "false", "VITRINE_RERANK__BACKEND": "none", **(extra_env or {})}
    log_file = folder / f"{mode}.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen([str(VITRINE), "--log-level", "WARNING", "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    server = Server(mode, f"http://127.0.0.1:{port}", process, log_file)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {mode} server did not become ready:\n{log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        log(f"{mode} server ready on {server.url} (batch window {window_ms} ms)")
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the load ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One measured window of one server."""

    mode: str
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    server: dict[str, float] = field(default_factory=dict)
    load: float = 0.0
    """The machine's 1-minute load average when the run started (other work on the machine shows here)."""

    @property
    def qps(self) -> float:
        return len(self.latencies_ms) / self.seconds


def drive(server: Server, clients: int, *, warmup: float, duration: float, queries: Iterator[str]) -> Run:
    """``clients`` threads search back to back; requests that start after the warm-up and end before the end
    are counted (errors: any status but 200, or a transport error)."""
    run = Run(server.mode, clients, duration, load=os.getloadavg()[0])
    lock = threading.Lock()
    started_at = time.perf_counter()
    counted_from, stop_at = started_at + warmup, started_at + warmup + duration
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    gate = threading.Event()
    children_cpu: list[float] = []

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while True:
                with lock:
                    query = next(queries)
                begin = time.perf_counter()
                if begin >= stop_at:
                    return
                try:
                    ok = http.get("/search", params={"q": query, "limit": 10}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                end = time.perf_counter()
                if begin >= counted_from and end <= stop_at:
                    with lock:
                        if ok:
                            run.latencies_ms.append((end - begin) * 1000.0)
                        else:
                            run.errors += 1

    def snapshot() -> None:
        time.sleep(max(0.0, counted_from - time.perf_counter()))
        before.update(server.metrics())
        children_cpu.append(descendants_cpu_s(server.process.pid))
        gate.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    watcher = threading.Thread(target=snapshot, daemon=True)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join(warmup + duration + 120)
    gate.wait(30)
    after = server.metrics()
    run.server = server_time(before, after)
    if children_cpu:  # the encoder process's CPU is the server's too
        run.server["cpu_s"] += descendants_cpu_s(server.process.pid) - children_cpu[0]
    return run


def server_time(before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                after: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Sums over the window from the server's metrics: encoder calls and seconds, queries encoded, store
    seconds, search requests and their seconds in the app."""

    def grown(name: str, **labels: str) -> float:
        return sum(value - before.get(key, 0.0) for key, value in after.items()
                   if key[0] == name and all(dict(key[1]).get(k) == v for k, v in labels.items()))

    return {
        "encode_calls": grown("vitrine_encode_batch_size_count", kind="text"),
        "encoded": grown("vitrine_encode_batch_size_sum", kind="text"),
        "encode_s": grown("vitrine_encode_seconds_sum", kind="text"),
        "queue_wait_s": grown("vitrine_encode_queue_wait_seconds_sum"),
        "store_s": grown("vitrine_store_seconds_sum"),
        "requests": grown("vitrine_http_request_duration_seconds_count", route="/search"),
        "request_s": grown("vitrine_http_request_duration_seconds_sum", route="/search"),
        "cpu_s": grown("process_cpu_seconds_total"),
    }


# -- the report ----------------------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))] if ordered else float("nan")


def summarise(runs: Sequence[Run]) -> list[str]:
    """One table row of the runs of one mode and client count."""
    latencies = [ms for run in runs for ms in run.latencies_ms]
    total = {key: sum(run.server.get(key, 0.0) for run in runs) for key in runs[0].server}
    requests = max(total["requests"], 1.0)
    calls = max(total["encode_calls"], 1.0)
    qps = [run.qps for run in runs]
    return [runs[0].mode, str(runs[0].clients), f"{statistics.mean(qps):.1f}",
            f"{min(qps):.1f}-{max(qps):.1f}", f"{pct(latencies, 50):.1f}", f"{pct(latencies, 99):.1f}",
            str(sum(run.errors for run in runs)), f"{total['encoded'] / calls:.1f}",
            f"{1000 * total['encode_s'] / calls:.1f}", f"{1000 * total['encode_s'] / requests:.1f}",
            f"{1000 * total['queue_wait_s'] / max(total['encoded'], 1.0):.1f}",
            f"{1000 * total['store_s'] / requests:.1f}", f"{1000 * total['request_s'] / requests:.1f}",
            f"{1000 * total['cpu_s'] / requests:.1f}", f"{total['cpu_s'] / sum(run.seconds for run in runs):.2f}",
            "/".join(f"{run.load:.1f}" for run in runs)]


HEADER = ["mode", "clients", "q/s", "q/s range", "p50 ms", "p99 ms", "errors", "batch", "ms/call", "encode ms/q",
          "queue ms/q", "store ms/q", "in-app ms/q", "CPU ms/q", "CPUs used", "load"]


def table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="demo", help="encoder (default %(default)s)")
    parser.add_argument("--clients", default="16", help="concurrent clients, or a comma-separated list "
                        "(default %(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each run not counted "
                        "(default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rotations of the modes (default %(default)s)")
    parser.add_argument("--window-ms", type=float, default=2.0, help="batch window of the batched servers "
                        "(default %(default)s, the setting's default)")
    parser.add_argument("--max-batch", type=int, default=32, help="max batch of the batched servers "
                        "(default %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=None, help="OMP_NUM_THREADS and MKL_NUM_THREADS of "
                        "every server (and its encoder process) (default: torch's, one per core)")
    parser.add_argument("--modes", default=",".join(MODES[:3]), help="servers to compare, of "
                        f"{', '.join(MODES)} (default %(default)s)")
    parser.add_argument("--products", type=int, default=500, help="products indexed when the index is built here "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    clients = [int(c) for c in str(args.clients).split(",") if c]
    modes = [m for m in str(args.modes).split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes {args.modes!r}: expected a comma-separated list of {', '.join(MODES)}")
    queries = itertools.cycle(shopper_queries())
    log(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}, model {args.model}")
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-serve-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        home = prepare_home(folder, args.model, args.products)
        threads = {} if args.torch_threads is None else \
            {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
        servers = {
            mode: stack.enter_context(serving(home, folder, mode, window_ms=0.0 if mode == "unbatched" else
                                              args.window_ms, max_batch=args.max_batch,
                                              extra_env={**threads, **MODE_ENV.get(mode, {})}))
            for mode in modes
        }
        runs: dict[tuple[str, int], list[Run]] = {}
        for n in clients:
            for round_number in range(args.rounds):
                shift = round_number % len(modes)
                order = modes[shift:] + modes[:shift]
                for mode in order:
                    run = drive(servers[mode], n, warmup=args.warmup, duration=args.duration, queries=queries)
                    log(f"round {round_number + 1} {mode:9} {n:3} clients: {run.qps:7.1f} q/s, p50 "
                        f"{pct(run.latencies_ms, 50):6.1f} ms, p99 {pct(run.latencies_ms, 99):6.1f} ms, "
                        f"{run.errors} errors, {1000 * run.server['cpu_s'] / max(run.server['requests'], 1):.1f} CPU "
                        f"ms/q, load {run.load:.1f}")
                    runs.setdefault((mode, n), []).append(run)
    print(f"\nmodel {args.model}; {args.duration:g} s per run after {args.warmup:g} s warm-up, {args.rounds} "
          f"round(s) rotated; batched and process: window {args.window_ms:g} ms, max batch {args.max_batch}; "
          f"query cache off; torch threads {args.torch_threads or 'default'}\n")
    print(table([summarise(runs[(mode, n)]) for n in clients for mode in modes]))
    print()
    for n in clients:
        for mode, baseline in (("batched", "unbatched"), ("process", "batched"), ("process", "threaded"),
                               ("threaded", "ungated"), ("process", "pooled")):
            if mode in modes and baseline in modes:
                ratio = statistics.mean(r.qps for r in runs[(mode, n)]) / \
                    max(statistics.mean(r.qps for r in runs[(baseline, n)]), 1e-9)
                print(f"{n} clients: {mode} / {baseline} queries/s = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

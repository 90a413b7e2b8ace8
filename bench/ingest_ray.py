"""Ingestion engines side by side: the in-process pipeline against Ray Data on a local cluster, same catalog.

Indexes the first ``--products`` demo products (real photos, the demo encoder, the demo vocabulary's tags,
thumbnails; ``tests/demo_shop.demo_subset``) into a fresh home per run, with each engine in turn, ``--rounds``
times, alternating which goes first. Ray runs on a local cluster started once (``num_cpus=--cpus``, its
start-up time printed apart); each Ray run still starts its own embedding actor (one model load), as a real
job does. Prints rows/s per engine and the ratio Ray / in-process; asserts nothing about time.

On one small machine Ray can only lose: the same cores do the same work, plus the object store, the actor and
the scheduling. The point of the engine is a cluster (many CPU nodes decoding, one actor per GPU); this number
says what that machinery costs where there is nothing to spread over.

Run (needs ``pip install 'vitrine[ray]'``)::

    .venv/bin/python bench/ingest_ray.py                  # 300 products, 1 round (about 2 min on 2 cores)
    .venv/bin/python bench/ingest_ray.py --products 600 --rounds 2
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.settings import EmbedSettings, Settings, load_settings  # noqa: E402
from embed import build_encoder  # noqa: E402
from indexer.pipeline import index_catalog  # noqa: E402
from indexer.ray_engine import import_ray, index_catalog_ray  # noqa: E402
from store.factory import open_store  # noqa: E402
from tests.demo_shop import DEMO, demo_subset  # noqa: E402


def settings_for(home: Path, *, block_rows: int) -> Settings:
    return load_settings(home=home, indexer={"image_roots": [str(DEMO / "images")]},
                         tags={"vocabulary": DEMO / "vocabulary.toml"}, ray={"block_rows": block_rows})


def run_in_process(catalog: Path, home: Path, block_rows: int) -> float:
    settings = settings_for(home, block_rows=block_rows)
    store = open_store(settings)
    try:
        summary = index_catalog(catalog, settings=settings, encoder=build_encoder(EmbedSettings(), "demo"),
                                store=store, progress=False)
    finally:
        store.close()
    return summary.rate


def run_ray(catalog: Path, home: Path, block_rows: int) -> float:
    return index_catalog_ray(catalog, settings_for(home, block_rows=block_rows), progress=False).rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    parser.add_argument("--block-rows", type=int, default=50, help="settings ray.block_rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ray = import_ray()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"Ray {ray.__version__}; {args.products} demo products, demo encoder, tags and thumbnails on")
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"local Ray cluster ({args.cpus} CPUs) started in {time.perf_counter() - start:.1f} s (not counted)")
    rates: dict[str, list[float]] = {"in-process": [], "ray": []}
    runners = {"in-process": run_in_process, "ray": run_ray}
    try:
        with tempfile.TemporaryDirectory(prefix="vitrine-bench-ray-") as folder:
            catalog = demo_subset(Path(folder), args.products)
            for round_ in range(args.rounds):
                order = ["in-process", "ray"] if round_ % 2 == 0 else ["ray", "in-process"]
                for engine in order:
                    rate = runners[engine](catalog, Path(folder) / f"home-{engine}-{round_}", args.block_rows)
                    rates[engine].append(rate)
                    print(f"round {round_ + 1}: {engine:<10} {rate:7.1f} rows/s", flush=True)
    finally:
        ray.shutdown()
    print()
    print(f"{'engine':<12}{'rows/s (median)':>16}")
    for engine, values in rates.items():
        print(f"{engine:<12}{statistics.median(values):>16.1f}")
    ratio = statistics.median(rates["ray"]) / statistics.median(rates["in-process"])
    print(f"ratio ray / in-process: {ratio:.2f}x")


if __name__ == "__main__":
    main()

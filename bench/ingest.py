"""Ingestion benchmark: end-to-end indexer throughput vs the model's own forward throughput, same run.

The catalog is a few hundred real-size photo-like JPEGs (smooth gradients, shapes and sensor-like noise,
1000x800 by default), each product with a title, generated into a temporary folder (or ``--images-dir``,
reused between runs). Two measurements, alternated: model, indexer, model, indexer, ..., model; each
indexer run is compared with the mean of the model runs just before and after it (so that a machine
shared with other work, whose load drifts, disturbs the ratio less), and the median trial is reported:

* **model**: ``embed_pixels`` on pre-made (already decoded and preprocessed) tensors plus ``embed_texts``
  on the titles: the work the model must do per product, with nothing else;
* **indexer**: ``index_catalog`` on the catalog into a fresh embedded store (reading, fetching, decoding,
  preprocessing in worker processes, both embeddings, upserts, hashes and report), the same loaded model.
  The model is loaded before timing in both; the indexer's time includes starting its worker processes.

The ratio indexer/model is the share of the model's speed the pipeline keeps (target >= 0.85 on 2 cores:
decoding must hide behind the model).

Example::

    .venv/bin/python bench/ingest.py                     # ViT-B-32 random weights, 300 images
    .venv/bin/python bench/ingest.py --images 100 --model /path/to/tiny_open_clip --repeat 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from common.images import decode_image
from common.settings import load_settings
from embed import Encoder, build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from store.factory import open_store

COLOURS = ["red", "blue", "green", "black", "white", "beige", "navy", "olive"]
KINDS = ["sneaker", "dress", "backpack", "jacket", "mug", "lamp", "watch", "scarf"]


def photo(index: int, width: int, height: int) -> Image.Image:
    """A photo-like picture: a lit background gradient, a few soft shapes, and sensor noise."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 220, 3).astype(np.float32)
    light = (x / width * rng.uniform(-60, 60) + y / height * rng.uniform(-60, 60))[..., None]
    image = Image.fromarray(np.clip(base + light, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 8)):
        x0, y0 = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
        x1, y1 = x0 + int(rng.integers(60, width // 2)), y0 + int(rng.integers(60, height // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def make_catalog(folder: Path, count: int, width: int, height: int) -> Path:
    """Write ``count`` JPEGs and a JSONL catalog naming them (existing images are reused)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        path = folder / "img" / f"{i:05d}.jpg"
        if not path.exists():
            photo(i, width, height).save(path, "JPEG", quality=90)
        rows.append({"id": f"b{i}", "title": f"{COLOURS[i % 8]} {KINDS[(i // 8) % 8]} model {i}",
                     "brand": "bench", "image": f"img/{path.name}", "price": 10 + i % 90})
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return catalog


@dataclass(frozen=True)
class Trial:
    """One indexer run, bracketed by model-only runs just before and just after it."""

    n: int
    images_s: float
    texts_s: float
    summary: IndexSummary

    @property
    def model_rate(self) -> float:
        """Products per second of the model alone (image + text forward)."""
        return self.n / (self.images_s + self.texts_s)

    @property
    def index_rate(self) -> float:
        """Products per second of the whole indexing job."""
        return self.n / self.summary.seconds

    @property
    def ratio(self) -> float:
        """indexer / model."""
        return self.index_rate / self.model_rate


def model_only(encoder: Encoder, pixels: NDArray[np.float32], texts: list[str]) -> tuple[float, float]:
    """Seconds of (image forward, text forward) on pre-made inputs."""
    start = time.perf_counter()
    encoder.embed_pixels(pixels)
    images_s = time.perf_counter() - start
    start = time.perf_counter()
    encoder.embed_texts(texts)
    return images_s, time.perf_counter() - start


def indexer_run(catalog: Path, encoder: Encoder, home: Path, *, workers: int, batch: int,
                thumbnails: bool) -> IndexSummary:
    """One indexing job into a fresh embedded store under ``home`` (making thumbnails and previews or not)."""
    settings = load_settings(home=home, indexer={"workers": workers, "batch_size": batch},
                             images={"thumbnails": thumbnails})
    store = open_store(settings)
    try:
        return index_catalog(catalog, settings=settings, encoder=encoder, store=store, progress=False)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="open_clip:ViT-B-32/random", help="encoder (default %(default)s)")
    parser.add_argument("--images", type=int, default=300, help="catalog size (default %(default)s)")
    parser.add_argument("--size", default="1000x800", help="image size WxH (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="indexer worker processes (default: settings)")
    parser.add_argument("--batch", type=int, default=None, help="indexer batch size (default: settings)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions, best kept")
    parser.add_argument("--images-dir", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=True,
                        help="make thumbnails and previews as vitrine index does by default (default %(default)s)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))

    settings = load_settings()
    workers = settings.indexer.workers if args.workers is None else args.workers
    batch = settings.indexer.batch_size if args.batch is None else args.batch
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-") as tmp:
        folder = args.images_dir or Path(tmp) / "catalog"
        start = time.perf_counter()
        catalog = make_catalog(folder, args.images, width, height)
        took = time.perf_counter() - start
        print(f"catalog: {args.images} JPEGs of {width}x{height} in {folder} ({took:.1f} s)")

        encoder = build_encoder(settings.embed, args.model)
        encoder.load()
        import torch

        rows = [json.loads(line) for line in catalog.read_text(encoding="utf-8").splitlines()]
        transform = encoder.image_transform
        pixels = np.stack([transform(decode_image((folder / row["image"]).read_bytes(),
                                                  max_pixels=settings.indexer.max_image_pixels,
                                                  draft_size=encoder.image_size)) for row in rows])
        texts = [". ".join([row["title"], row["brand"]]) for row in rows]
        encoder.embed_pixels(pixels[: settings.embed.batch_size])  # warm-up
        print(f"model: {encoder.name}, dim {encoder.dim}, input {encoder.image_size} px, "
              f"{settings.embed.device}/{settings.embed.dtype}, embed batch {settings.embed.batch_size}, "
              f"torch threads {torch.get_num_threads()}; indexer: {workers} worker(s), batch {batch}, "
              f"thumbnails {'on' if args.thumbnails else 'off'}")

        n = len(rows)
        trials: list[Trial] = []
        images_s, texts_s = model_only(encoder, pixels, texts)
        for attempt in range(args.repeat):
            home = Path(tmp) / f"home{attempt}"
            summary = indexer_run(catalog, encoder, home, workers=workers, batch=batch, thumbnails=args.thumbnails)
            if summary.indexed != n:
                print(f"indexer indexed {summary.indexed} of {n} products: {summary.as_dict()}")
                return 1
            after_images_s, after_texts_s = model_only(encoder, pixels, texts)
            trial = Trial(n, (images_s + after_images_s) / 2, (texts_s + after_texts_s) / 2, summary)
            trials.append(trial)
            before, after = n / (images_s + texts_s), n / (after_images_s + after_texts_s)
            print(f"  trial {attempt + 1}: model {before:.2f}/s before, {after:.2f}/s after; indexer "
                  f"{trial.index_rate:.2f}/s; ratio {trial.ratio:.3f}")
            images_s, texts_s = after_images_s, after_texts_s

    trial = sorted(trials, key=lambda t: t.ratio)[(len(trials) - 1) // 2]  # the median (lower) trial
    table = [
        ("model only: image forward", f"{n / trial.images_s:8.2f} images/s"),
        ("model only: text forward", f"{n / trial.texts_s:8.2f} texts/s"),
        ("model only: image + text per product", f"{trial.model_rate:8.2f} products/s"),
        ("indexer end to end", f"{trial.index_rate:8.2f} products/s"),
        ("ratio indexer / model", f"{trial.ratio:8.3f}   (target >= 0.85)"),
    ]
    print(f"\nmedian of {len(trials)} trial(s):")
    for label, value in table:
        print(f"{label:<40}{value}")
    print("indexer stage totals (s): " + ", ".join(f"{k} {v:.2f}" for k, v in trial.summary.timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

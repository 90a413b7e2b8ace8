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

**Device mode** (``--device cuda``; `device_mode`): images only, at GPU speed, nothing downloaded (random
open_clip weights) and nothing on disk: ``--distinct`` synthetic photo-like JPEGs are made in memory and cycled
to ``--count`` images. Three measurements, one after the other on the same batches:

* **decode**: JPEG bytes -> the model's input on the device. ``--decode gpu``: the indexer's
  `indexer.gpu_decode.DeviceDecoder` (``torchvision.io.decode_jpeg`` on a list of tensors, nvJPEG on CUDA,
  then resize/crop/normalise there); ``--decode cpu``: Pillow (draft decoding) and the model's transform in
  worker processes, as ``indexer.decode=cpu`` does, then a pinned, non-blocking copy;
* **encode**: the model alone on those inputs (the baseline);
* **end to end**: bytes -> vectors, decoding batch i+1 (a thread, or the worker processes) while the model
  embeds batch i; the ratio end to end / encode is the share of the model's speed kept.

The batch size is the largest that fits (doubling from 64 to 4096 until CUDA runs out of memory), or
``--embed-batch``. Targets on one H200-class GPU: ViT-B-32 >= 5,000 images/s end to end, ViT-L-14 >= 1,500.
Without CUDA it runs on the CPU with small counts and says so.

Example::

    .venv/bin/python bench/ingest.py                     # ViT-B-32 random weights, 300 images
    .venv/bin/python bench/ingest.py --images 100 --model /path/to/tiny_open_clip --repeat 1
    .venv/bin/python bench/ingest.py --device cuda --model open_clip:ViT-L-14/random --decode gpu
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from common.images import decode_image
from common.settings import EmbedSettings, load_settings
from embed import Encoder, build_encoder
from embed.device_preprocess import DeviceEncoder, device_encoder
from embed.protocol import ImageTransform
from indexer.gpu_decode import DeviceDecoder
from indexer.pipeline import IndexSummary, index_catalog
from indexer.worker import init_worker
from store.factory import open_store

if TYPE_CHECKING:
    import torch

NO_GPU = "no GPU: ran on CPU; the targets (5,000 / 1,500 images/s) need a GPU"
TARGETS = {"ViT-B-32": 5000, "ViT-L-14": 1500}

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


# --- device mode -------------------------------------------------------------------------------------


def jpeg_bytes(index: int, width: int, height: int) -> bytes:
    """A synthetic photo-like JPEG (`photo`), made in memory."""
    buffer = io.BytesIO()
    photo(index, width, height).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _cpu_prepare(blobs: Sequence[bytes], transform: ImageTransform, draft: int) -> NDArray[np.float32]:
    """Worker process: Pillow decode (draft size) and the model's transform, as ``indexer.decode=cpu`` does."""
    return np.stack([transform(decode_image(data, max_pixels=100_000_000, draft_size=draft)) for data in blobs])


class CpuDecoder:
    """Pillow in ``workers`` processes (``spawn``, idle CPU priority, as the indexer's), one piece of each batch
    per worker, then a pinned, non-blocking copy to the device."""

    def __init__(self, transform: ImageTransform, draft: int, device: torch.device, workers: int) -> None:
        import multiprocessing

        self.transform, self.draft, self.device, self.workers = transform, draft, device, workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=init_worker, initargs=("idle",))  # as the indexer's workers

    def decode(self, blobs: Sequence[bytes]) -> torch.Tensor:
        import torch

        size = max(1, -(-len(blobs) // self.workers))
        parts = [blobs[i : i + size] for i in range(0, len(blobs), size)]
        arrays = list(self.pool.map(_cpu_prepare, parts, [self.transform] * len(parts), [self.draft] * len(parts)))
        batch = torch.from_numpy(np.concatenate(arrays))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def auto_batch(encoder: DeviceEncoder, size: tuple[int, int], device: torch.device, cap: int = 4096) -> int:
    """The largest batch (64, 128, ... ``cap``) the model runs without running out of CUDA memory."""
    import torch

    if device.type != "cuda":
        return 32
    best = 0
    batch = 64
    while batch <= cap:
        try:
            encoder.embed_tensor(torch.zeros((batch, 3, *size), device=device))
            best = batch
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch *= 2
    return max(best, 1)


def _batches(blobs: Sequence[bytes], count: int, batch: int) -> Iterator[list[bytes]]:
    """``count`` images in batches, cycling through ``blobs``."""
    for start in range(0, count, batch):
        yield [blobs[i % len(blobs)] for i in range(start, min(count, start + batch))]


def _timed(run: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def device_mode(args: argparse.Namespace) -> int:
    """Decode, encode and end-to-end images/s on ``--device`` (see the module's notes)."""
    import torch

    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    if args.device.startswith("cuda") and not cuda:
        print(NO_GPU)
    device = torch.device(args.device if cuda else "cpu")
    count = args.count or (8192 if cuda else 64)
    distinct = min(args.distinct or (256 if cuda else 32), count)
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    decode = args.decode if args.decode != "auto" else ("gpu" if cuda else "cpu")
    width, height = (int(v) for v in args.size.lower().split("x"))
    settings = EmbedSettings(device=str(device), dtype=dtype, batch_size=4096, compile=args.compile)
    start = time.perf_counter()
    if distinct > 16:  # photo() takes ~0.1-0.4 s each
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            blobs = list(pool.map(jpeg_bytes, range(distinct), [width] * distinct, [height] * distinct))
    else:
        blobs = [jpeg_bytes(i, width, height) for i in range(distinct)]
    print(f"{distinct} synthetic JPEGs of {width}x{height} in memory ({np.mean([len(b) for b in blobs]) / 1e3:.0f} kB "
          f"each, {time.perf_counter() - start:.1f} s), cycled to {count} images")
    built = build_encoder(settings, args.model)
    built.load()
    encoder = device_encoder(built)
    if encoder is None:
        print(f"encoder {built.name} cannot embed device batches (no preprocessing spec); use an open_clip model")
        return 2
    spec = encoder.preprocess_spec
    assert spec is not None
    batch = min(count, args.embed_batch or auto_batch(encoder, spec.size, device))
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    if decode == "gpu":
        on_device = DeviceDecoder(spec, device, max_pixels=100_000_000)

        def decoder(part: Sequence[bytes]) -> torch.Tensor:
            pixels = on_device.decode(part).pixels
            assert pixels is not None
            return pixels

        how = f"torchvision.io.decode_jpeg on {device} (batched), resize/crop/normalise there"
    else:
        on_cpu = CpuDecoder(built.image_transform, built.image_size, device, workers)
        decoder = on_cpu.decode  # type: ignore[assignment]
        how = f"Pillow (draft) + transform in {workers} worker process(es), pinned copy to {device}"
    print(f"model {built.name}, input {spec.size[0]} px, {device}/{dtype}, compile {'on' if args.compile else 'off'}, "
          f"batch {batch}{' (auto)' if not args.embed_batch else ''}, torch threads {torch.get_num_threads()}; "
          f"decode: {how}")
    try:
        warm = next(_batches(blobs, batch, batch))
        encoder.embed_tensor(decoder(warm))  # warm-up: kernels, worker processes, compilation

        decoded: list[torch.Tensor] = []

        def encode_all() -> None:
            for pixels in decoded:
                encoder.embed_tensor(pixels)

        decode_s = _timed(lambda: decoded.extend(decoder(part) for part in _batches(blobs, count, batch)), device)
        encode_s = _timed(encode_all, device)
        decoded.clear()
        end_s = _timed(lambda: pipelined(decoder, encoder, _batches(blobs, count, batch)), device)
    finally:
        if decode == "cpu":
            on_cpu.close()
    arch = next((name for name in TARGETS if name in built.name), None)
    target = f"   (target >= {TARGETS[arch]:,} on one H200-class GPU)" if arch else ""
    rows = [
        (f"decode ({'torchvision on ' + device.type if decode == 'gpu' else 'Pillow in workers'})",
         f"{count / decode_s:10.1f} images/s"),
        ("encode (model alone)", f"{count / encode_s:10.1f} images/s"),
        ("end to end (decode overlapped)", f"{count / end_s:10.1f} images/s{target}"),
        ("ratio end to end / encode", f"{encode_s / end_s:10.3f}"),
    ]
    print(f"\n{count} images:")
    for label, value in rows:
        print(f"{label:<40}{value}")
    if not cuda:
        print(NO_GPU)
    return 0


def pipelined(decoder: Callable[[Sequence[bytes]], torch.Tensor], encoder: DeviceEncoder,
              batches: Iterator[list[bytes]], depth: int = 2) -> None:
    """Embed every batch while a thread decodes the next ones (``depth`` ahead)."""
    ready: queue.Queue[torch.Tensor | BaseException | None] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for part in batches:
                ready.put(decoder(part))
        except BaseException as e:  # handed to the consumer, which raises it
            ready.put(e)
            return
        ready.put(None)

    thread = threading.Thread(target=produce, name="bench-decode", daemon=True)
    thread.start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        encoder.embed_tensor(item)
    thread.join()


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
    device = parser.add_argument_group("device mode (images/s of decode, encode and both; see above)")
    device.add_argument("--device", default=None, help="run the device mode on this torch device (cuda, cuda:1, cpu)")
    device.add_argument("--decode", choices=("gpu", "cpu", "auto"), default="auto",
                        help="gpu: torchvision batch decode on the device; cpu: Pillow in worker processes "
                             "(default auto: gpu on CUDA)")
    device.add_argument("--count", type=int, default=None, help="images (default 8192 on CUDA, 64 on CPU)")
    device.add_argument("--distinct", type=int, default=None, help="distinct JPEGs, cycled (default 256 / 32)")
    device.add_argument("--embed-batch", type=int, default=None, help="model batch (default: largest that fits)")
    device.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="model dtype (default bf16 on CUDA, fp32 on CPU)")
    device.add_argument("--compile", action="store_true", help="torch.compile the image tower")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device is not None:
        return device_mode(args)
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

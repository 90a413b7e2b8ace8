"""A/B: ``vitrine index`` against clip-retrieval's ``clip-retrieval inference``, same JPEGs, same checkpoint.

Both tools embed the same folder of synthetic product-like JPEGs (bench/ingest.py's generator, 800x1000 by
default: 500 photos, and their mirror images up to 2,000) with the same randomly initialised open_clip ViT-B-32
checkpoint (one file, fixed seed), on the CPU in fp32, and are timed end to end as the command line a user would
type (process start, imports, model load, reading, decoding, preprocessing, inference, writing). The runs
alternate, clip-retrieval then Vitrine, for ``--repeat`` rounds in one session, so that load from other work on
the machine hits both alike; the medians are compared (target: Vitrine >= 1.25x clip-retrieval).

Like with like:

* clip-retrieval writes image embeddings only (``--enable_text False --enable_metadata False``) to .npy files;
  Vitrine gets a catalog of ``{"id", "image"}`` rows (no title, so no text is embedded) and
  ``VITRINE_IMAGES__THUMBNAILS=false`` (no thumbnails or previews), but it still writes every vector and
  payload to its embedded Qdrant store (and builds its index): work clip-retrieval does not do;
* the same batch size (clip-retrieval ``--batch_size``; Vitrine ``indexer.batch_size`` and
  ``embed.batch_size``) and the same number of preprocessing worker processes (``--num_prepro_workers``;
  ``indexer.workers``); ``CUDA_VISIBLE_DEVICES=`` for both, so both run on the CPU.

clip-retrieval cannot share Vitrine's environment (it pins transformers 4.x and open_clip 2.x): it runs from
its own virtual environment (``--venv``, made with ``pip install -c constraints.txt clip-retrieval
'setuptools<81'`` when missing: its clip-anytorch dependency imports ``pkg_resources``). After the rounds the
script checks that each tool produced one embedding per image and that they agree image by image (cosine >
0.99; a random model maps all images close together, so the cosine between *different* images is printed too,
as the bar the same-image cosine must clear).

Example::

    .venv/bin/python bench/clip_retrieval_ab.py                       # 2,000 images, 3 rounds
    .venv/bin/python bench/clip_retrieval_ab.py --images 200 --repeat 1 --batch 32 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import photo  # noqa: E402  (bench/ingest.py's image generator)

ARCH = "ViT-B-32"
SEED = 0
TARGET = 1.25
SAME_IMAGE_COSINE = 0.99


@dataclass
class Run:
    """One timed run of one tool."""

    tool: str
    round: int
    seconds: float
    images: int
    load_before: float
    inner: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Images per second, end to end."""
        return self.images / self.seconds


def ensure_venv(venv: Path, constraints: Path) -> Path:
    """The ``clip-retrieval`` executable of ``venv``, installing it there first when missing."""
    exe = venv / "bin" / "clip-retrieval"
    if exe.exists():
        return exe
    print(f"making {venv} and installing clip-retrieval (-c {constraints}); this takes minutes")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # clip-anytorch (a clip-retrieval dependency) imports pkg_resources, which setuptools 81 dropped
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), "clip-retrieval",
                    "setuptools<81"], check=True)
    if not exe.exists():
        raise SystemExit(f"pip installed clip-retrieval into {venv} but {exe} is missing")
    return exe


def picture(index: int, distinct: int, folder: Path, width: int, height: int) -> Image.Image:
    """Image ``index``: bench/ingest.py's photo ``index`` when below ``distinct``, else the JPEG of photo
    ``index % distinct`` mirrored and flipped by ``index // distinct`` (a photo takes a while to make)."""
    if index < distinct:
        return photo(index, width, height)
    with Image.open(folder / f"{index % distinct:05d}.jpg") as base:
        image = base.convert("RGB")
    variant = (index // distinct) % 4
    if variant in (1, 3):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if variant in (0, 2, 3):
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def make_images(folder: Path, count: int, distinct: int, width: int, height: int) -> list[Path]:
    """``count`` JPEGs ``00000.jpg``... in ``folder`` (existing ones are kept); extra JPEGs there are an error."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(count)]
    made = 0
    start = time.perf_counter()
    for i, path in enumerate(paths):
        if not path.exists():
            part = path.with_suffix(".part")
            picture(i, distinct, folder, width, height).save(part, "JPEG", quality=90)
            part.rename(path)
            made += 1
    extra = sorted(set(folder.glob("*.jpg")) - set(paths))
    if extra:
        raise SystemExit(f"{folder} holds {len(extra)} JPEG(s) besides the {count} asked (e.g. {extra[0].name}); "
                         "clip-retrieval would embed them too: use another --work folder or --images")
    print(f"images: {count} JPEGs of {width}x{height} ({distinct} photos, mirrored and flipped) in {folder} "
          f"({made} made, {time.perf_counter() - start:.1f} s)")
    return paths


def make_checkpoint(path: Path) -> Path:
    """One randomly initialised open_clip ViT-B-32 (seed 0) saved as a state dict, made once."""
    if path.exists():
        return path
    import open_clip
    import torch

    torch.manual_seed(SEED)
    model = open_clip.create_model(ARCH, pretrained=None)
    part = path.with_suffix(".part")
    torch.save(model.state_dict(), part)
    part.rename(path)
    print(f"checkpoint: random {ARCH} (seed {SEED}) saved to {path}")
    return path


def write_catalog(path: Path, images: Sequence[Path]) -> Path:
    """A catalog of ``{"id", "image"}`` rows: no text, so Vitrine embeds the images only."""
    rows = [{"id": image.stem, "image": image.relative_to(path.parent).as_posix()} for image in images]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of both tools: CPU only, offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def warm_files(paths: Sequence[Path]) -> None:
    """Read the inputs once so that neither tool's first round pays for a cold page cache."""
    for path in paths:
        with path.open("rb") as file:
            while file.read(1 << 22):
                pass


def run_clip_retrieval(exe: Path, images: Path, out: Path, checkpoint: Path, *, batch: int, workers: int,
                       round_: int, count: int) -> Run:
    """``clip-retrieval inference`` on the image folder, timed."""
    command = [str(exe), "inference", "--input_dataset", str(images), "--output_folder", str(out),
               "--input_format", "files", "--enable_text", "False", "--enable_metadata", "False",
               "--batch_size", str(batch), "--num_prepro_workers", str(workers), "--use_jit", "False",
               "--clip_model", f"open_clip:{ARCH}/{checkpoint}"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env=child_env(), cwd=out.parent, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"clip-retrieval failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    inner: dict[str, float] = {}
    for stats in (out / "stats").glob("*.json"):
        data = json.loads(stats.read_text(encoding="utf-8"))
        for key in ("read_duration", "inference_duration", "write_duration"):
            inner[key.removesuffix("_duration")] = inner.get(key.removesuffix("_duration"), 0.0) + float(
                data.get(key, 0.0))
    return Run("clip-retrieval", round_, seconds, count, load, inner)


def run_vitrine(home: Path, catalog: Path, checkpoint: Path, *, batch: int, workers: int, round_: int,
                count: int) -> Run:
    """``vitrine index`` of the catalog into a fresh ``VITRINE_HOME``, timed."""
    home.mkdir(parents=True)
    command = [str(Path(sys.executable).parent / "vitrine"), "--log-level", "WARNING", "index", str(catalog),
               "--model", f"open_clip:{ARCH}/{checkpoint}", "--vocabulary", "none", "--no-progress", "--json"]
    env = child_env(VITRINE_HOME=str(home), VITRINE_IMAGES__THUMBNAILS="false", VITRINE_EMBED__DEVICE="cpu",
                    VITRINE_EMBED__DTYPE="fp32", VITRINE_EMBED__BATCH_SIZE=str(batch),
                    VITRINE_INDEXER__BATCH_SIZE=str(batch), VITRINE_INDEXER__WORKERS=str(workers),
                    VITRINE_INDEXER__DECODE="cpu")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"vitrine index failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    if summary.get("indexed") != count:
        raise SystemExit(f"vitrine indexed {summary.get('indexed')} of {count} images: {summary}")
    inner = {"job": float(summary["seconds"])}
    inner.update({key: float(value) for key, value in summary.get("timings", {}).items() if value})
    stages = {name: {"seconds": float(stage["seconds"]), "count": float(stage["count"])}
              for name, stage in summary.get("stages", {}).items() if stage.get("count")}
    return Run("vitrine", round_, seconds, count, load, inner, stages)


def clip_retrieval_vectors(out: Path) -> dict[str, NDArray[np.float32]]:
    """Image embeddings written by clip-retrieval, by file stem."""
    import pyarrow.parquet as pq

    vectors: dict[str, NDArray[np.float32]] = {}
    for emb in sorted((out / "img_emb").glob("img_emb_*.npy")):
        part = emb.name.removeprefix("img_emb_").removesuffix(".npy")
        names = pq.read_table(out / "metadata" / f"metadata_{part}.parquet").column("image_path").to_pylist()
        matrix = np.load(emb).astype(np.float32)
        for name, vector in zip(names, matrix, strict=True):
            vectors[Path(name).stem] = vector
    return vectors


def vitrine_vectors(home: Path) -> dict[str, NDArray[np.float32]]:
    """Image embeddings stored by ``vitrine index``, by product id (= file stem)."""
    from common.settings import load_settings
    from store.factory import open_store
    from store.protocol import IMAGE

    settings = load_settings(home=home)
    store = open_store(settings)
    try:
        return {point.product_id: point.vectors[IMAGE]
                for point in store.scroll(settings.store.collection, fields=["id"], with_vectors=[IMAGE])}
    finally:
        store.close()


def compare(ours: dict[str, NDArray[np.float32]], theirs: dict[str, NDArray[np.float32]], count: int) -> bool:
    """Print counts and the cosine agreement of the two tools' embeddings; True when they agree."""
    print(f"\nembeddings: vitrine {len(ours)}, clip-retrieval {len(theirs)} (expected {count} each)")
    keys = sorted(set(ours) & set(theirs))
    if len(ours) != count or len(theirs) != count or len(keys) != count:
        print(f"  MISMATCH: {len(keys)} images embedded by both")
        return False

    def unit(vectors: dict[str, NDArray[np.float32]]) -> NDArray[np.float32]:
        matrix = np.stack([vectors[key] for key in keys]).astype(np.float32)
        normed: NDArray[np.float32] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return normed

    a, b = unit(ours), unit(theirs)
    same = np.sum(a * b, axis=1)
    other_a, other_b = np.sum(a * np.roll(a, 1, axis=0), axis=1), np.sum(b * np.roll(b, 1, axis=0), axis=1)
    print(f"  same image, vitrine vs clip-retrieval: cosine min {same.min():.4f}, median {np.median(same):.4f}, "
          f"max {same.max():.4f}; {int(np.sum(same > SAME_IMAGE_COSINE))} of {count} above {SAME_IMAGE_COSINE}")
    print(f"  different images (each vs the next), for scale: vitrine median {np.median(other_a):.4f}, "
          f"clip-retrieval median {np.median(other_b):.4f}")
    worst = keys[int(np.argmin(same))]
    agree = bool(same.min() > SAME_IMAGE_COSINE)
    print(f"  {'agree' if agree else 'DIFFER'} (least similar: {worst}, {same.min():.4f})")
    return agree


def main(argv: list[str] | None = None) -> int:
    """Run the A/B rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench-venvs" / "clip-retrieval",
                        help="clip-retrieval's virtual environment, made when missing (default %(default)s)")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench-venvs" / "clip-ab",
                        help="images, checkpoint and run folders (kept between runs; default %(default)s)")
    parser.add_argument("--images", type=int, default=2000, help="number of JPEGs (default %(default)s)")
    parser.add_argument("--size", default="800x1000", help="image size WxH (default %(default)s)")
    parser.add_argument("--distinct", type=int, default=500,
                        help="different photos generated; the others are their mirror images (default %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both tools (default %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="preprocessing worker processes of both tools (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="alternated rounds (default %(default)s)")
    parser.add_argument("--only", choices=("vitrine", "clip-retrieval"), default=None,
                        help="run one tool only (for profiling; no ratio)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = args.work.resolve()

    exe = ensure_venv(args.venv.resolve(), ROOT / "constraints.txt")
    images = make_images(work / "images", args.images, min(args.distinct, args.images), width, height)
    checkpoint = make_checkpoint(work / f"{ARCH.lower()}-random-seed{SEED}.pt")
    catalog = write_catalog(work / "catalog.jsonl", images)
    warm_files([*images, checkpoint])
    runs_dir = work / "runs"
    import shutil

    shutil.rmtree(runs_dir, ignore_errors=True)
    print(f"both: {ARCH} random weights from {checkpoint.name}, CPU fp32, torch default threads "
          f"({os.cpu_count()} cores), batch {args.batch}, {args.workers} preprocessing worker(s); "
          "vitrine: thumbnails off, no text (catalog rows are id + image), embedded Qdrant store\n")
    tools = [t for t in ("clip-retrieval", "vitrine") if args.only in (None, t)]
    runs: list[Run] = []
    print(f"{'tool':<16}{'round':>6}{'seconds':>10}{'images/s':>10}{'load':>7}  inner timings (s)")
    for round_ in range(1, args.repeat + 1):
        for tool in tools:
            folder = runs_dir / f"{tool}-{round_}"
            if tool == "clip-retrieval":
                folder.mkdir(parents=True)
                run = run_clip_retrieval(exe, work / "images", folder / "out", checkpoint, batch=args.batch,
                                         workers=args.workers, round_=round_, count=len(images))
            else:
                run = run_vitrine(folder, catalog, checkpoint, batch=args.batch, workers=args.workers,
                                  round_=round_, count=len(images))
            runs.append(run)
            inner = ", ".join(f"{key} {value:.1f}" for key, value in run.inner.items())
            print(f"{run.tool:<16}{run.round:>6}{run.seconds:>10.1f}{run.rate:>10.2f}{run.load_before:>7.1f}  {inner}",
                  flush=True)

    last_vitrine = [run for run in runs if run.tool == "vitrine"][-1:]
    if last_vitrine:
        print("vitrine stages, last run (seconds, images/s; fetch, decode and preprocess summed over the workers): "
              + ", ".join(f"{name} {stage['seconds']:.1f} s ({stage['count'] / max(stage['seconds'], 1e-9):.0f}/s)"
                          for name, stage in last_vitrine[0].stages.items()))
    medians = {tool: statistics.median(run.rate for run in runs if run.tool == tool) for tool in tools}
    print("\nmedian images/s: " + ", ".join(f"{tool} {rate:.2f}" for tool, rate in medians.items()))
    ok = True
    if len(tools) == 2:
        ratio = medians["vitrine"] / medians["clip-retrieval"]
        ok = ratio >= TARGET
        print(f"ratio vitrine / clip-retrieval: {ratio:.2f}x (target >= {TARGET}x): {'met' if ok else 'NOT met'}")
        last = args.repeat
        ok = compare(vitrine_vectors(runs_dir / f"vitrine-{last}"),
                     clip_retrieval_vectors(runs_dir / f"clip-retrieval-{last}" / "out"), len(images)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

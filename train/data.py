"""What ``vitrine train`` learns from: images, each with a group and a pool of captions to draw from.

Two sources:

- ``fashion-mnist[:train|:test]``: the Debian package's IDX files; the group is the class, the captions are
  the class's phrasings (`train.captions.class_captions`);
- a catalog file (JSON Lines, CSV, Parquet, read by `indexer.readers`): one pair per product with an image;
  the captions are the product's own text (what the text index embeds) plus phrasings of its category; the
  group is the value of ``group_by`` (default ``category``), else the product's own text.

Items of one group are positives of each other in the loss and relevant to each other in the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import InvalidInput, VitrineError
from common.images import decode_image
from common.settings import Settings
from train import fashion_mnist
from train.captions import FASHION_NOUNS, class_captions, generic_captions

logger = logging.getLogger(__name__)

FASHION_PREFIX = "fashion-mnist"
EVAL_CAPTIONS_PER_GROUP = 8


@dataclass
class PairData:
    """Images with groups and caption pools.

    Attributes:
        name: where the data came from (for logs and the manifest).
        load_image: decoded RGB (or grey) image of item i; raises a `VitrineError` for a bad one.
        groups: group id of each item (n,).
        group_names: the name of each group (a class or category, or a caption).
        captions: the caption bank.
        pools: caption indices (into ``captions``) of each pool.
        pool_of: pool of each item (n,).
        own_caption: each item's own caption (catalog pairs), for pair recall; None for class data.
        raw_pixels: Fashion-MNIST arrays (n, 28, 28), when the data is Fashion-MNIST (a faster path).
    """

    name: str
    load_image: Callable[[int], Image.Image]
    groups: NDArray[np.int64]
    group_names: list[str]
    captions: list[str]
    pools: list[NDArray[np.int64]]
    pool_of: NDArray[np.int64]
    own_caption: NDArray[np.int64] | None = None
    raw_pixels: NDArray[np.uint8] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.groups)

    def eval_queries(self) -> tuple[list[int], NDArray[np.int64]]:
        """(caption indices, their groups): the first captions of each group's first pool, as text queries."""
        indices: list[int] = []
        query_groups: list[int] = []
        seen: set[int] = set()
        for item, group in enumerate(self.groups.tolist()):
            if group in seen:
                continue
            seen.add(group)
            for caption in self.pools[int(self.pool_of[item])][:EVAL_CAPTIONS_PER_GROUP].tolist():
                indices.append(int(caption))
                query_groups.append(group)
        return indices, np.asarray(query_groups, dtype=np.int64)


class _CaptionBank:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


def load_fashion_mnist(spec: str, *, captions_per_class: int = 240, seed: int = 0,
                       folder: Path | None = None) -> PairData:
    """Fashion-MNIST as pairs: ``fashion-mnist`` or ``fashion-mnist:train`` (train split), ``:test``.

    Raises:
        InvalidInput: an unknown split.
    """
    split = spec.partition(":")[2] or "train"
    if split not in ("train", "test"):
        raise InvalidInput(f"data {spec!r}: unknown Fashion-MNIST split {split!r}; expected "
                           f"{FASHION_PREFIX}:train or {FASHION_PREFIX}:test")
    images, labels = fashion_mnist.load_split(split, folder)  # type: ignore[arg-type]
    bank = _CaptionBank()
    pools = [np.asarray([bank.add(text) for text in class_captions(name, count=captions_per_class,
                                                                   seed=seed)])
             for name in fashion_mnist.CLASS_NAMES]

    def load(i: int) -> Image.Image:
        return Image.fromarray(images[i], "L")

    return PairData(name=f"{FASHION_PREFIX}:{split}", load_image=load, groups=labels.copy(),
                    group_names=list(fashion_mnist.CLASS_NAMES), captions=bank.texts, pools=pools,
                    pool_of=labels.copy(), raw_pixels=images)


def load_catalog(path: Path, *, settings: Settings, group_by: str = "category", captions_per_class: int = 48,
                 seed: int = 0) -> PairData:
    """A catalog file as pairs: each product with an image and some text.

    Rows that fail validation, or have no image or no text, are skipped (and counted in the log).

    Raises:
        NotFound, InvalidInput: the file is missing or not a catalog; no usable pair in it.
    """
    from indexer.fetch import FetchConfig, ImageFetcher
    from indexer.readers import ValidRow, iter_products

    bank = _CaptionBank()
    refs: list[str] = []
    group_ids: dict[str, int] = {}
    group_names: list[str] = []
    groups: list[int] = []
    pools: list[NDArray[np.int64]] = []
    own: list[int] = []
    class_pools: dict[str, list[int]] = {}
    skipped = 0
    for row in iter_products(path):
        if not isinstance(row, ValidRow) or not row.product.image_refs or not row.product.embedding_text():
            skipped += 1
            continue
        product = row.product
        text = product.embedding_text()
        value = getattr(product, group_by, None)
        if value is None:
            value = (product.model_extra or {}).get(group_by, product.attributes.get(group_by))
        key = str(value) if value not in (None, "") else f"caption:{text}"
        if key not in group_ids:
            group_ids[key] = len(group_names)
            group_names.append(key.removeprefix("caption:"))
        pool = [bank.add(text)]
        if not key.startswith("caption:"):
            if key not in class_pools:
                phrasings = (class_captions(key, count=captions_per_class, seed=seed) if key in FASHION_NOUNS
                             else generic_captions(key))
                class_pools[key] = [bank.add(p) for p in phrasings]
            pool += [c for c in class_pools[key] if c != pool[0]]
        refs.append(product.image_refs[0])
        groups.append(group_ids[key])
        pools.append(np.asarray(pool, dtype=np.int64))
        own.append(pool[0])
    if skipped:
        logger.warning("%s: skipped %d rows without a valid product, an image or any text", path, skipped)
    if not refs:
        raise InvalidInput(f"catalog {str(path)!r} has no product with both an image and some text to "
                           "train on")
    fetch_config = FetchConfig.from_settings(settings, base_dir=path.resolve().parent)
    max_pixels = settings.indexer.max_image_pixels

    def load(i: int) -> Image.Image:
        with ImageFetcher(fetch_config) as fetcher:
            return decode_image(fetcher.fetch(refs[i]), max_pixels=max_pixels, source=refs[i])

    return PairData(name=str(path), load_image=load, groups=np.asarray(groups, dtype=np.int64),
                    group_names=group_names, captions=bank.texts, pools=pools,
                    pool_of=np.arange(len(refs), dtype=np.int64), own_caption=np.asarray(own, dtype=np.int64))


def load_pairs(spec: str, *, settings: Settings, group_by: str = "category", captions_per_class: int = 240,
               seed: int = 0) -> PairData:
    """Pairs from ``fashion-mnist[:split]`` or a catalog file path."""
    if spec == FASHION_PREFIX or spec.startswith(FASHION_PREFIX + ":"):
        return load_fashion_mnist(spec, captions_per_class=captions_per_class, seed=seed)
    return load_catalog(Path(spec), settings=settings, group_by=group_by,
                        captions_per_class=min(captions_per_class, 48), seed=seed)


def subset(data: PairData, items: NDArray[np.int64]) -> PairData:
    """The pairs of ``items`` only (groups and caption bank kept whole, so ids stay comparable)."""
    load = data.load_image
    picked = items.tolist()
    return PairData(
        name=data.name, load_image=lambda i: load(picked[i]), groups=data.groups[items],
        group_names=data.group_names, captions=data.captions, pools=data.pools, pool_of=data.pool_of[items],
        own_caption=None if data.own_caption is None else data.own_caption[items],
        raw_pixels=None if data.raw_pixels is None else data.raw_pixels[items],
    )


def split_holdout(data: PairData, fraction: float, *, seed: int) -> tuple[PairData, PairData | None]:
    """(train, held-out) by a seeded random permutation; no held-out part when ``fraction`` is 0."""
    if not 0 <= fraction < 1:
        raise InvalidInput(f"holdout fraction {fraction} must be in [0, 1)")
    count = round(len(data) * fraction)
    if count == 0:
        return data, None
    order = np.random.default_rng(seed).permutation(len(data)).astype(np.int64)
    return subset(data, np.sort(order[count:])), subset(data, np.sort(order[:count]))


def limit(data: PairData, count: int | None, *, seed: int) -> PairData:
    """A seeded random sample of ``count`` items (all when ``count`` is None or not smaller)."""
    if count is None or count >= len(data):
        return data
    order = np.random.default_rng(seed + 1).permutation(len(data))[:count]
    return subset(data, np.sort(order).astype(np.int64))


def safe_load(data: PairData, i: int) -> Image.Image | None:
    """Item i's image, or None (logged) when it cannot be fetched or decoded."""
    try:
        return data.load_image(i)
    except VitrineError as e:
        logger.warning("skipping an image that cannot be used: %s", e)
        return None

"""Build the bundled demo catalog ``data/demo/`` from the Debian package dataset-fashion-mnist.

Products are the first ``--count`` pictures of the Fashion-MNIST **test** split (the demo model is trained on
the train split only). Each gets a display picture (dark product on white, 112 px, 16 grey levels, PNG) and
synthetic shop data, deterministic from ``--seed``: brand, price, stock, colour, material and a model number.
Titles are realistic rather than perfect: about a third descriptive (with a description), a third terse, a
third only a SKU-like model number, so that the image index matters.

The development query set ``queries.jsonl`` is written too: shopper-style text queries and image queries
whose pictures come from the Fashion-MNIST **train** split (saved under ``queries/``); relevance is the class.

Usage: python scripts/make_demo_catalog.py [--out data/demo] [--count 5000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from demo_vocabulary import (
    BRANDS,
    CATEGORY_WORDS,
    COMPOSED_QUERIES,
    IDENTIFIER_QUERIES,
    IMAGE_QUERIES_PER_CLASS,
    TEXT_QUERIES,
    colour_of,
)
from numpy.typing import NDArray

from train.fashion_mnist import CLASS_NAMES, display_png, load_split

ROOT = Path(__file__).resolve().parents[1]

CURRENCY = "EUR"
IN_STOCK_RATE = 0.85


def _price(rng: random.Random, low: float, high: float) -> float:
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    ending = rng.choice((0.99, 0.99, 0.95, 0.0, 0.5))
    return round(max(1.0, math.floor(value) + ending), 2)


def _model_number(rng: random.Random, brand_code: str, class_code: str, colour_code: str,
                  used: set[str]) -> str:
    while True:
        code = f"{brand_code}-{class_code}{rng.randint(1000, 9999)}-{colour_code}"
        if code not in used:
            used.add(code)
            return code


def make_product(index: int, label: int, pixels: NDArray[np.uint8], rng: random.Random,
                 used: set[str]) -> dict[str, Any]:
    """One synthetic product around a Fashion-MNIST picture."""
    category = CLASS_NAMES[label]
    words = CATEGORY_WORDS[category]
    brand, brand_code = rng.choice(BRANDS)
    colour, colour_code = colour_of(pixels, rng)
    noun = rng.choice(words["nouns"])
    style = rng.choice(words["styles"])
    material = rng.choice(words["materials"])
    gender = rng.choice(words["genders"])
    model = _model_number(rng, brand_code, words["code"], colour_code, used)
    product_id = f"fm-{index:05d}"
    kind = rng.choices(("descriptive", "terse", "sku"), weights=(1, 1, 1))[0]
    description: str | None = None
    if kind == "descriptive":
        title = f"{brand} {gender} {style} {colour} {noun}".replace("  ", " ")
        detail = rng.choice(words["details"])
        description = (f"{style.capitalize()} {noun} in {colour} {material}. {detail} "
                       f"Model {model}.")
    elif kind == "terse":
        title = rng.choice((f"{colour.capitalize()} {noun}", noun.capitalize(),
                            f"{noun.capitalize()} {style}"))
    else:
        title = model
    product: dict[str, Any] = {"id": product_id, "title": title}
    if description:
        product["description"] = description
    product |= {
        "image": f"images/{product_id}.png",
        "price": _price(rng, *words["price"]),
        "currency": CURRENCY,
        "category": category,
        "brand": brand,
        "in_stock": rng.random() < IN_STOCK_RATE,
        "url": f"https://shop.example.com/products/{product_id}",
        "attributes": {"colour": colour, "material": material,
                       "gender": gender.removesuffix("'s").rstrip("'"),
                       "model_number": model, "title_style": kind, "source": f"fashion-mnist test #{index}",
                       "synthetic": True},
    }
    return product


def write_catalog(out: Path, *, count: int, seed: int) -> dict[str, int]:
    """Write ``catalog.jsonl`` and ``images/``; return counts by title style."""
    images, labels = load_split("test")
    if not 1 <= count <= len(images):
        raise SystemExit(f"--count {count} must be between 1 and {len(images)}")
    rng = random.Random(seed)
    used: set[str] = set()
    folder = out / "images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    styles: dict[str, int] = {}
    products = []
    for index in range(count):
        product = make_product(index, int(labels[index]), images[index], rng, used)
        (folder / f"{product['id']}.png").write_bytes(display_png(images[index]))
        products.append(product)
        style = product["attributes"]["title_style"]
        styles[style] = styles.get(style, 0) + 1
    with (out / "catalog.jsonl").open("w", encoding="utf-8") as file:
        for product in assign_groups(products):
            file.write(json.dumps(product, ensure_ascii=False) + "\n")
    return styles


def assign_groups(products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Products sharing a brand and a title become variants of one article (in the demo: other colours and
    pictures of it): they get the same ``group_id``, placed after ``brand``. Products alone keep none."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, product in enumerate(products):
        groups.setdefault((product["brand"], product["title"]), []).append(i)
    out = [dict(product) for product in products]
    for (brand, title), members in groups.items():
        if len(members) < 2:
            continue
        slug = "-".join("".join(c for c in word if c.isalnum()) for word in f"{brand} {title}".lower().split())
        for i in members:
            fields = list(out[i].items())
            at = next(n for n, (key, _) in enumerate(fields) if key == "brand") + 1
            out[i] = dict([*fields[:at], ("group_id", slug), *fields[at:]])
    return out


def write_queries(out: Path, *, seed: int) -> int:
    """Write ``queries.jsonl`` and ``queries/``: text queries, then image queries from the train split."""
    images, labels = load_split("train")
    rng = np.random.default_rng(seed)
    folder = out / "queries"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines = [{"id": f"t{n:02d}", "query": text, "relevant_where": {"category": category}}
             for n, (text, category) in enumerate(TEXT_QUERIES, start=1)]
    for label, category in enumerate(CLASS_NAMES):
        picked = rng.choice(np.flatnonzero(labels == label), size=IMAGE_QUERIES_PER_CLASS, replace=False)
        for index in sorted(int(i) for i in picked):
            name = f"train-{index:05d}.png"
            (folder / name).write_bytes(display_png(images[index]))
            lines.append({"id": f"i{len(lines) - len(TEXT_QUERIES) + 1:02d}", "image": f"queries/{name}",
                          "relevant_where": {"category": category}})
    with (out / "queries.jsonl").open("w", encoding="utf-8") as file:
        for line in lines:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(lines)


def write_identifier_and_composed_queries(out: Path, *, seed: int) -> int:
    """Append to ``queries.jsonl``: queries naming one product by brand and model number (or the model number
    alone), picked from ``catalog.jsonl``, and the composed queries of `COMPOSED_QUERIES`."""
    products = [json.loads(line) for line in (out / "catalog.jsonl").read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = []
    for n, product in enumerate(rng.sample(products, IDENTIFIER_QUERIES), start=1):
        model = product["attributes"]["model_number"]
        text = model if n % 2 else f"{product['brand']} {model}"
        lines.append({"id": f"s{n:02d}", "kind": "identifier", "query": text, "relevant": [product["id"]]})
    for n, (text, parts, category) in enumerate(COMPOSED_QUERIES, start=1):
        lines.append({"id": f"c{n:02d}", "query": text, "parts": list(parts), "relevant_where": {"category": category}})
    with (out / "queries.jsonl").open("a", encoding="utf-8") as file:
        for line in lines:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--count", type=int, default=5000, help="products (first N of the test split)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    styles = write_catalog(args.out, count=args.count, seed=args.seed)
    queries = write_queries(args.out, seed=args.seed)
    queries += write_identifier_and_composed_queries(args.out, seed=args.seed)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    counts = ", ".join(f"{v} {k}" for k, v in sorted(styles.items()))
    print(f"{args.count} products ({counts}), {queries} queries, {size / 1e6:.1f} MB in {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()

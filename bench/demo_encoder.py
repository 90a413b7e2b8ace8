"""Quality and speed of a demo-style encoder on the Fashion-MNIST test split used as a catalog.

Exact search over the encoder's own embeddings (no store), so it measures the encoder alone:

- ``class names``: precision@10 of the 10 class names as queries (relevant: images of that class);
- ``paraphrases``: precision@10 of 50 shopper phrasings (5 per class), none of them a training caption;
- ``image->image``: precision@10 of 1,000 test images as queries against the others;
- ``zero-shot``: accuracy of labelling each image with its nearest class name;
- speed: images embedded per second (preprocessing included, and the model alone).

With ``--display``, images first go through the demo catalog's display encoding (inverted to a white
background, upscaled to 112 px, 16 grey levels, PNG round trip): what the indexer sees for data/demo.

Usage: python bench/demo_encoder.py [MODEL ...] [--limit N] [--display] [--threads 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from common.settings import EmbedSettings
from embed.registry import build_encoder
from train.captions import class_captions
from train.fashion_mnist import CLASS_NAMES, display_png, load_split
from train.metrics import image_precision, text_precision, zero_shot_accuracy

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("short sleeve cotton tee for summer", "basic crew neck top",
                    "sleeveless tank for the gym", "plain white t shirt", "casual top with short sleeves"),
    "Trouser": ("slim fit jeans", "blue denim pants for men", "comfortable trousers for the office",
                "high waisted leggings", "pants with straight legs"),
    "Pullover": ("warm knitted sweater for winter", "cozy wool jumper", "long sleeve knit top",
                 "chunky knit pullover", "crew neck sweatshirt"),
    "Dress": ("floral summer dress", "little black dress for a party", "long evening gown",
              "knee length dress", "sleeveless dress for a wedding"),
    "Coat": ("warm winter jacket", "waterproof rain jacket", "long wool overcoat", "padded parka with hood",
             "jacket with zip and pockets"),
    "Sandal": ("open toe summer sandals", "flip flops for the beach", "strappy flat sandals",
               "sandals with a heel", "slides for the pool"),
    "Shirt": ("button down office shirt", "checked flannel shirt", "long sleeve blouse for work",
              "collared shirt for men", "plaid cotton shirt"),
    "Sneaker": ("shoes for running", "white trainers", "comfortable shoes for jogging", "canvas sneakers",
                "shoes for the gym"),
    "Bag": ("leather handbag", "small purse", "tote bag for shopping", "shoulder bag for women",
            "backpack for school"),
    "Ankle boot": ("chelsea style boots", "short leather boots", "boots with a block heel",
                   "boots that stop above the ankle",
                   "suede booties"),
}


def display_version(pixels: np.ndarray) -> Image.Image:
    """The demo catalog's picture of a Fashion-MNIST array, decoded back (a PNG round trip)."""
    return Image.open(io.BytesIO(display_png(pixels))).convert("RGB")


def run(model: str, *, limit: int, display: bool, batch_size: int) -> dict[str, float]:
    images, labels = load_split("test")
    images, labels = images[:limit], labels[:limit]
    encoder = build_encoder(EmbedSettings(batch_size=batch_size), model)
    encoder.load()
    pictures = [display_version(a) if display else Image.fromarray(a, "L") for a in images]
    started = time.perf_counter()
    pixels = np.stack([encoder.image_transform(p) for p in pictures])
    prep = time.perf_counter() - started
    encoder.embed_pixels(pixels[: 2 * batch_size])  # warm-up: the first batches pick their kernels
    started = time.perf_counter()
    vectors = encoder.embed_pixels(pixels)
    model_s = time.perf_counter() - started
    names = encoder.embed_texts(list(CLASS_NAMES))
    phrases = [(text, c) for c, name in enumerate(CLASS_NAMES) for text in PARAPHRASES[name]]
    phrase_vectors = encoder.embed_texts([t for t, _ in phrases])
    phrase_groups = np.asarray([c for _, c in phrases])
    return {
        "class names P@10": text_precision(vectors, labels, names, np.arange(10)),
        "paraphrases P@10": text_precision(vectors, labels, phrase_vectors, phrase_groups),
        "image->image P@10": image_precision(vectors, labels, max_queries=1000),
        "zero-shot acc": zero_shot_accuracy(vectors, labels, names),
        "images/s (all)": len(images) / (prep + model_s),
        "images/s (model)": len(images) / model_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["demo"])
    parser.add_argument("--limit", type=int, default=10_000, help="test images used as the catalog")
    parser.add_argument("--display", action="store_true", help="go through the demo catalog's PNG encoding")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=EmbedSettings().batch_size,
                        help="images per forward pass (default: the setting's default, what the indexer uses)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    training = {c for name in CLASS_NAMES for c in class_captions(name)}
    overlap = sum(p in training for ps in PARAPHRASES.values() for p in ps)
    print(f"{overlap} of 50 paraphrases are also training captions verbatim")
    rows = {model: run(model, limit=args.limit, display=args.display, batch_size=args.batch_size)
            for model in args.models}
    keys = list(next(iter(rows.values())))
    print(f"| model | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for model, row in rows.items():
        cells = [f"{row[k]:.0f}" if k.startswith("images") else f"{row[k]:.3f}" for k in keys]
        print(f"| {model} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

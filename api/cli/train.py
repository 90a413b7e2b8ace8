"""``vitrine train``: fine-tune an image tower (or a projection head) against a frozen text tower.

Examples::

    vitrine train fashion-mnist:train --out data/demo_model --base cnn --epochs 4
    vitrine train catalog.jsonl --out models/shop --base demo --train tower --epochs 2
    vitrine train catalog.jsonl --out models/clip-head --base open_clip:ViT-B-32/laion2b_s34b_b79k \
        --train head
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common.settings import Settings


def _stages(text: str) -> tuple[tuple[int, int], ...]:
    """``32x1,64x2,128x2`` -> ((32, 1), (64, 2), (128, 2))."""
    try:
        pairs = [part.strip().split("x") for part in text.split(",") if part.strip()]
        stages = tuple((int(width), int(convs)) for width, convs in pairs)
    except ValueError:
        raise argparse.ArgumentTypeError(f"stages {text!r} must look like 32x1,64x2,128x2 (width x convs per "
                                         "stage)") from None
    if not stages or any(w < 1 or c < 1 for w, c in stages):
        raise argparse.ArgumentTypeError(f"stages {text!r} must name at least one stage of positive sizes")
    return stages


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train", help="fine-tune an image tower against a frozen text tower",
        description="Contrastive LiT-style alignment: the text tower stays frozen, the image tower (or a "
                    "projection head) learns to land each image on the text embedding of its caption. "
                    "Writes an encoder folder (vitrine_encoder.json + weights) usable as --model FOLDER. "
                    "Running the same command again resumes an interrupted run.")
    parser.add_argument("data", help="a catalog file (JSONL, CSV, Parquet) of products with images and text, "
                                     "or fashion-mnist:train / fashion-mnist:test (the Debian package)")
    parser.add_argument("--out", type=Path, required=True, help="encoder folder to write")
    parser.add_argument("--base", default="cnn",
                        help="cnn (new small CNN), efficientnet_lite0 (frozen ImageNet backbone + head), or "
                             "an encoder to start from: demo, a folder, open_clip:..., hf:... (default: cnn)")
    parser.add_argument("--train", choices=["tower", "head"], default="tower",
                        help="what learns: the whole image tower (for open_clip and hf encoders: their own, "
                             "written back in their format), or a projection head on frozen image "
                             "embeddings (default: tower)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data (default: 3)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per step (default: 256)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate, AdamW (default: 3e-3 for new towers and heads, 1e-5 to "
                             "fine-tune the image tower of an open_clip or hf encoder)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    parser.add_argument("--temperature", type=float, default=0.07, help="initial temperature (default: 0.07)")
    parser.add_argument("--fixed-temperature", action="store_true", help="do not learn the temperature")
    parser.add_argument("--hard-negatives", type=float, default=0.0, metavar="BETA",
                        help="re-weight in-batch negatives towards the hardest, exp(BETA*similarity); 0: off")
    parser.add_argument("--image-loss", type=float, default=0.0, metavar="W",
                        help="add W x an image-image contrastive loss (same group = positive), meant to "
                             "sharpen image-to-image search; 0: off (default)")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="share of pairs held out for the retrieval metrics (default: 0.1)")
    parser.add_argument("--limit", type=int, default=None, help="train on a random sample of N pairs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--captions-per-class", type=int, default=240,
                        help="phrasings drawn per class or category (default: 240)")
    parser.add_argument("--group-by", default="category",
                        help="catalog field whose equal values count as positives (default: category)")
    parser.add_argument("--text-model", default=None,
                        help="folder of the MiniLM text tower for new towers (default: the bundled package)")
    parser.add_argument("--stages", type=_stages, default=None,
                        help="CNN stages as WIDTHxCONVS,... (default: 32x1,64x2,128x2)")
    parser.add_argument("--hidden", type=int, default=0, help="hidden width of the head; 0: linear (default)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout in the head (default: 0)")
    parser.add_argument("--augment", choices=["none", "flip", "full"], default="flip",
                        help="image changes while training a tower: flip (left-right flips and brightness; "
                             "default), full (also zooms and shifts), none")
    parser.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                        help="also save the run state every STEPS steps (default: each epoch)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="run state folder (default: under VITRINE_HOME/train/)")
    parser.add_argument("--restart", action="store_true", help="ignore a saved run state and start over")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Train, then print where the encoder went and its held-out metrics."""
    from train.options import TrainOptions  # torch: imported only when training, not for every command
    from train.trainer import train_encoder

    options = TrainOptions(
        data=args.data, out=args.out, base=args.base, train=args.train, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, temperature=args.temperature,
        learn_temperature=not args.fixed_temperature, hard_negatives=args.hard_negatives,
        image_loss=args.image_loss,
        holdout=args.holdout, limit=args.limit, seed=args.seed, captions_per_class=args.captions_per_class,
        group_by=args.group_by,
        text_model=args.text_model, stages=args.stages, hidden=args.hidden, dropout=args.dropout,
        augment=args.augment, save_every=args.save_every, state_dir=args.state_dir,
        restart=args.restart, progress=not args.no_progress, threads=args.threads,
        command="vitrine " + shlex.join(sys.argv[1:]) if "train" in sys.argv[1:] else "",
    )
    result = train_encoder(options, settings=settings)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    resumed = "" if result.resumed_from_epoch is None else f", resumed from epoch {result.resumed_from_epoch}"
    print(f"trained {result.items} pairs for {result.epochs} epochs ({result.steps} steps) in "
          f"{result.seconds:.1f} s{resumed}")
    print(f"encoder written to {result.out} (use --model {result.out})")
    if result.metrics:
        print("held-out (" + str(result.held_out) + " pairs): " +
              ", ".join(f"{key} {value:.3f}" for key, value in result.metrics.items()))
    return 0

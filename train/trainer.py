"""``vitrine train``: align an image tower (or a projection head) with a frozen text tower, LiT-style.

Each step draws a batch of images, one caption per image from its pool, embeds both (text frozen, from a
cache) and minimises a symmetric multi-positive InfoNCE with a learnable temperature (`train.loss`), plus,
with ``image_loss``, the same loss among the batch's images. The run state (weights, optimiser, schedule,
position) is saved every epoch, or every ``save_every`` steps, to a state folder; running the same command
again resumes from it. The encoder folder (``vitrine_encoder.json`` +
weights) is rewritten after every epoch, so it always holds the latest usable model, with held-out metrics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from tqdm import tqdm

from common.errors import ConfigError
from common.settings import Settings
from embed.torch_utils import torch_device
from train.data import PairData, limit, load_pairs, split_holdout
from train.inputs import cache_key, caption_embeddings, prepare_inputs
from train.loss import LogitScale, contrastive_loss, image_image_loss
from train.metrics import retrieval_report
from train.models import Plan, build_plan
from train.options import TrainOptions, TrainResult

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
LOG_EVERY = 50  # steps between log lines when the progress bar is off
WARMUP_FRACTION = 0.05


def default_state_dir(settings: Settings, out: Path) -> Path:
    """Where the run state of ``out`` lives by default: under VITRINE_HOME, keyed by the output folder."""
    resolved = out.expanduser().resolve()
    return settings.home / "train" / f"{resolved.name}-{cache_key(str(resolved))[:8]}"


def warmup_cosine(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over the first 5 % of steps, then a cosine down to zero."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def augment(pixels: torch.Tensor, generator: torch.Generator, *, level: str = "flip") -> torch.Tensor:
    """Random changes of normalised images; the background (each image's minimum) stays the background.

    Levels: ``flip`` (left-right) and brightness (0.75-1.25); ``full`` adds zoom (0.9-1.1) and shift (±8 %);
    ``none`` returns the images as they are. Zooms and shifts undo the trimming and centring of Fashion-style
    preprocessing and measurably hurt short runs (see data/demo_model/README.md).
    """
    if level == "none":
        return pixels
    n = pixels.shape[0]
    background = pixels.amin(dim=(1, 2, 3), keepdim=True)
    x = pixels - background
    flip = torch.rand(n, generator=generator) < 0.5
    brightness = torch.empty(n, 1, 1, 1).uniform_(0.75, 1.25, generator=generator).to(x.device)
    if level == "full":
        scale = torch.empty(n).uniform_(0.9, 1.1, generator=generator)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) / scale
        theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = torch.empty(n, 2).uniform_(-0.08, 0.08, generator=generator)
        grid = functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = functional.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    else:
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    return x * brightness + background


@dataclass
class Split:
    """One side of the data, ready for the loop: model inputs, and each kept item's group and captions."""

    data: PairData
    inputs: torch.Tensor
    kept: torch.Tensor

    @property
    def groups(self) -> torch.Tensor:
        return torch.from_numpy(self.data.groups[self.kept.numpy()])


class _Run:
    """One training run: the module, the optimiser and everything needed to resume it."""

    def __init__(self, options: TrainOptions, plan: Plan, *, train: Split, held: Split | None,
                 captions: torch.Tensor, names: torch.Tensor, device: torch.device, state_dir: Path) -> None:
        self.options, self.plan, self.train, self.held = options, plan, train, held
        self.captions, self.names, self.device = captions, names, device
        self.state_path = state_dir / STATE_FILE
        self.module = plan.module.to(device)
        self.scale = LogitScale(options.temperature, learnable=options.learn_temperature).to(device)
        if plan.logit_scale is not None:  # fine-tuning: start from the checkpoint's temperature
            with torch.no_grad():
                self.scale.value.fill_(plan.logit_scale)
        self.optimizer = torch.optim.AdamW([
            {"params": [p for p in self.module.parameters() if p.requires_grad],
             "weight_decay": options.weight_decay},
            {"params": list(self.scale.parameters()), "weight_decay": 0.0},
        ], lr=options.lr if options.lr is not None else plan.default_lr)
        self.batch = min(options.batch_size, len(train.kept))
        self.steps_per_epoch = max(1, len(train.kept) // self.batch)
        self.total_steps = self.steps_per_epoch * options.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(self.total_steps))
        self.groups = train.groups
        self.pools = [torch.from_numpy(train.data.pools[int(p)])
                      for p in train.data.pool_of[train.kept.numpy()]]

    def resume(self) -> tuple[int, int] | None:
        """Load the saved state, if any; (epoch, step) to continue from.

        Raises:
            ConfigError: the state belongs to a run with other options.
        """
        if not self.state_path.is_file() or self.options.restart:
            return None
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != self.options.fingerprint():
            raise ConfigError(f"state folder {str(self.state_path.parent)!r} holds a run with other options; "
                              "rerun with --restart to start over, or pick another --out / --state-dir")
        self.module.load_state_dict(state["module"])
        self.scale.load_state_dict(state["scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        logger.info("resuming from epoch %d, step %d (%s)", state["epoch"], state["step"], self.state_path)
        return int(state["epoch"]), int(state["step"])

    def save(self, epoch: int, step: int) -> None:
        """Save the state atomically: after ``step`` steps of epoch ``epoch`` (0-based)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        torch.save({"fingerprint": self.options.fingerprint(), "module": self.module.state_dict(),
                    "scale": self.scale.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "epoch": epoch, "step": step}, tmp)
        tmp.replace(self.state_path)

    def step(self, items: torch.Tensor, generator: torch.Generator) -> float:
        """One optimiser step on ``items``; returns the loss."""
        x = self.train.inputs[items].float()
        if self.plan.featurize is None:
            x = augment(x, generator, level=self.options.augment)
        picks = [pool[int(torch.randint(len(pool), (1,), generator=generator))]
                 for pool in (self.pools[int(i)] for i in items)]
        text = self.captions[torch.stack(picks)].to(self.device)
        image = functional.normalize(self.module(x.to(self.device)), dim=-1)
        groups, scale = self.groups[items].to(self.device), self.scale()
        loss = contrastive_loss(image, text, groups, scale, hard_negatives=self.options.hard_negatives)
        if self.options.image_loss:
            loss = loss + self.options.image_loss * image_image_loss(
                image, groups, scale, hard_negatives=self.options.hard_negatives)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def epoch(self, epoch: int, first_step: int) -> float:
        """Run one epoch from ``first_step``; returns the mean loss."""
        options = self.options
        rng = np.random.default_rng([options.seed, epoch])
        order = torch.from_numpy(rng.permutation(len(self.train.kept)))
        losses: list[float] = []
        self.module.train()
        with tqdm(total=self.steps_per_epoch, initial=first_step, desc=f"epoch {epoch + 1}/{options.epochs}",
                  unit="step", disable=not options.progress, mininterval=1.0) as bar:
            for step in range(first_step, self.steps_per_epoch):
                generator = torch.Generator().manual_seed(options.seed * 1_000_003 + epoch * 10_007 + step)
                losses.append(self.step(order[step * self.batch : (step + 1) * self.batch], generator))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", t=f"{self.temperature:.3f}")
                if not options.progress and (step + 1) % LOG_EVERY == 0:
                    logger.info("epoch %d step %d/%d: loss %.4f", epoch + 1, step + 1, self.steps_per_epoch,
                                float(np.mean(losses[-LOG_EVERY:])))
                if options.save_every and (step + 1) % options.save_every == 0 \
                        and step + 1 < self.steps_per_epoch:
                    self.save(epoch, step + 1)
        self.save(epoch + 1, 0)
        return float(np.mean(losses)) if losses else float("nan")

    @property
    def temperature(self) -> float:
        return 1 / float(self.scale().detach())

    def evaluate(self) -> dict[str, float]:
        """Held-out retrieval metrics (see `train.metrics`); empty without a held-out split."""
        if self.held is None or not len(self.held.kept):
            return {}
        self.module.eval()
        with torch.inference_mode():
            images = torch.cat([functional.normalize(self.module(chunk.to(self.device).float()), dim=-1).cpu()
                                for chunk in torch.split(self.held.inputs, 1024)]).numpy()
        data, kept = self.held.data, self.held.kept.numpy()
        query_ids, query_groups = data.eval_queries()
        own = None if data.own_caption is None else self.captions[data.own_caption[kept]].numpy()
        return retrieval_report(images, data.groups[kept], queries=self.captions[query_ids].numpy(),
                                query_groups=query_groups, names=self.names.numpy(), pair_texts=own)


Prepared = tuple[Plan, Split, Split | None, torch.Tensor, torch.Tensor]


def _prepare(options: TrainOptions, settings: Settings, state_dir: Path) -> Prepared:
    """(plan, train split, held-out split, caption embeddings, group-name embeddings)."""
    data = limit(load_pairs(options.data, settings=settings, group_by=options.group_by,
                            captions_per_class=options.captions_per_class, seed=options.seed),
                 options.limit, seed=options.seed)
    train_data, held_data = split_holdout(data, options.holdout, seed=options.seed)
    arch: dict[str, Any] = {"hidden": options.hidden, "dropout": options.dropout}
    if options.stages:
        arch["stages"] = [list(stage) for stage in options.stages]
    plan = build_plan(options.base, options.train, embed=settings.embed, text_model=options.text_model,
                      arch=arch, hidden=options.hidden)
    logger.info("training %s on %s: %d pairs (+%d held out), %d captions", plan.description, data.name,
                len(train_data), len(held_data) if held_data else 0, len(data.captions))
    key = cache_key(options.data, options.limit, options.seed, options.holdout, options.base, options.train,
                    options.text_model, options.group_by, options.captions_per_class)

    def split(part: PairData, label: str) -> Split:
        inputs, kept = prepare_inputs(part, transform=plan.transform, featurize=plan.featurize,
                                      cache=state_dir / f"{label}-{key}.pt", progress=options.progress,
                                      label=label)
        return Split(part, inputs, kept)

    train = split(train_data, "train")
    if len(train.kept) < 2:
        raise ConfigError(f"vitrine train: only {len(train.kept)} usable image(s) in {data.name!r}; "
                          "need at least 2")
    held = split(held_data, "held-out") if held_data is not None else None
    captions = caption_embeddings(data.captions, embed=plan.embed_texts,
                                  cache=state_dir / f"captions-{key}.pt")
    names = torch.from_numpy(np.asarray(plan.embed_texts(data.group_names), dtype=np.float32))
    return plan, train, held, captions, names


def train_encoder(options: TrainOptions, *, settings: Settings) -> TrainResult:
    """Run (or resume) a training run and write the encoder folder ``options.out``.

    Raises:
        ConfigError: bad options, or a state folder holding a run with other options (without ``restart``).
        NotFound, InvalidInput: the data cannot be read.
    """
    options.check()
    started = time.perf_counter()
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    device = torch_device(settings.embed.device)
    state_dir = options.state_dir or default_state_dir(settings, options.out)
    plan, train, held, captions, names = _prepare(options, settings, state_dir)
    run = _Run(options, plan, train=train, held=held, captions=captions, names=names, device=device,
               state_dir=state_dir)
    position = run.resume()
    start_epoch, start_step = position or (0, 0)
    metrics = run.evaluate() if start_epoch >= options.epochs else {}
    for epoch in range(start_epoch, options.epochs):
        loss = run.epoch(epoch, start_step if epoch == start_epoch else 0)
        metrics = run.evaluate()
        logger.info("epoch %d/%d: loss %.4f, temperature %.4f, held-out %s", epoch + 1, options.epochs, loss,
                    run.temperature, metrics or "-")
        training = {
            "command": options.command, "data": train.data.name, "base": options.base, "train": options.train,
            "items": len(train.kept), "held_out": len(held.kept) if held else 0, "epochs": epoch + 1,
            "seed": options.seed, "lr": run.optimizer.defaults["lr"],
            "seconds": round(time.perf_counter() - started, 1),
            "held_out_metrics": metrics,
        }
        plan.write(options.out, float(torch.log(run.scale()).item()), training)
    return TrainResult(out=options.out, epochs=options.epochs, steps=run.total_steps,
                       seconds=round(time.perf_counter() - started, 1), items=len(train.kept),
                       held_out=len(held.kept) if held else 0,
                       resumed_from_epoch=position[0] if position else None, metrics=metrics)

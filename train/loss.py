"""The contrastive losses of ``vitrine train``: symmetric InfoNCE over a batch with a learnable temperature.

Rows are images, columns are the captions drawn for them. Items of the same group (same caption, or same
class) are positives of each other, not negatives; everything else in the batch is a negative. Optionally
the negatives are re-weighted towards the hardest ones (Robinson et al., 2021, "Contrastive learning with
hard negative samples"): weight ∝ exp(beta · similarity), normalised to a mean of one.

`image_image_loss` is the same multi-positive InfoNCE among the batch's images (supervised contrastive
learning, Khosla et al., 2020): it pulls images of one group together, which image-to-image search needs and
image-to-caption alignment alone does not fully give.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)
_MASKED = -1e9  # finite, so that rows without negatives give no NaN


class LogitScale(nn.Module):
    """The learnable inverse temperature, kept as its logarithm and clamped to at most 100."""

    def __init__(self, temperature: float = 0.07, *, learnable: bool = True) -> None:
        super().__init__()
        if not 0 < temperature <= 10:
            raise ValueError(f"temperature must be in (0, 10], got {temperature}")
        self.value = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)

    def forward(self) -> torch.Tensor:
        return self.value.clamp(max=MAX_LOGIT_SCALE).exp()


def _one_side(logits: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor,
              beta: float) -> torch.Tensor:
    """Mean over rows of the mean over each row's positives of -log softmax (negatives maybe re-weighted)."""
    negatives = ~positives
    weighted = logits
    if beta > 0:
        similarity = (logits / scale).detach()
        hard = (beta * similarity).masked_fill(positives, _MASKED)
        count = negatives.sum(dim=1, keepdim=True).clamp(min=1)
        log_weights = hard - (torch.logsumexp(hard, dim=1, keepdim=True) - count.log())
        weighted = torch.where(negatives, logits + log_weights, logits)
    # Each positive competes with all negatives (not with the other positives): SupCon's "out" form.
    negative_mass = torch.logsumexp(weighted.masked_fill(positives, _MASKED), dim=1, keepdim=True)
    per_positive = torch.logaddexp(logits, negative_mass) - logits
    per_row = (per_positive * positives).sum(dim=1) / positives.sum(dim=1).clamp(min=1)
    return per_row.mean()


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, groups: torch.Tensor, scale: torch.Tensor, *,
                     hard_negatives: float = 0.0) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE.

    Args:
        image: L2-normalised image embeddings (B, D).
        text: L2-normalised caption embeddings (B, D), row i drawn for image i.
        groups: group id of each item (B,); equal ids are positives.
        scale: the inverse temperature (a scalar tensor, `LogitScale()`).
        hard_negatives: beta of the hard-negative re-weighting (0: plain InfoNCE).

    Returns:
        The scalar loss.
    """
    if image.shape != text.shape or image.shape[0] != groups.shape[0]:
        raise ValueError(f"contrastive_loss needs matching shapes, got image {tuple(image.shape)}, "
                         f"text {tuple(text.shape)}, groups {tuple(groups.shape)}")
    logits = scale * image @ text.T
    positives = groups[:, None] == groups[None, :]
    return (_one_side(logits, positives, scale, hard_negatives)
            + _one_side(logits.T, positives.T, scale, hard_negatives)) / 2


def image_image_loss(image: torch.Tensor, groups: torch.Tensor, scale: torch.Tensor, *,
                     hard_negatives: float = 0.0) -> torch.Tensor:
    """Multi-positive InfoNCE among images: the other images of one's group are positives (self excluded).

    Rows without another image of their group do not count; a batch without any such pair gives 0.
    """
    if image.shape[0] != groups.shape[0]:
        raise ValueError(f"image_image_loss needs one group per image, got image {tuple(image.shape)}, "
                         f"groups {tuple(groups.shape)}")
    self_mask = torch.eye(len(groups), dtype=torch.bool, device=image.device)
    logits = (scale * image @ image.T).masked_fill(self_mask, _MASKED)
    positives = (groups[:, None] == groups[None, :]) & ~self_mask
    rows = positives.any(dim=1)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    return _one_side(logits[rows], positives[rows], scale, hard_negatives)

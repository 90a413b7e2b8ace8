"""The contrastive loss: aligned pairs cost less, same-group items are not negatives, hard negatives weigh."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from train.loss import LogitScale, contrastive_loss, image_image_loss


def unit(rows: torch.Tensor) -> torch.Tensor:
    return F.normalize(rows, dim=-1)


def test_aligned_pairs_cost_less_than_shuffled() -> None:
    torch.manual_seed(0)
    text = unit(torch.randn(8, 16))
    groups = torch.arange(8)
    scale = LogitScale(0.1)().detach()
    aligned = contrastive_loss(text, text, groups, scale)
    shuffled = contrastive_loss(text.roll(1, dims=0), text, groups, scale)
    assert float(aligned) < 0.1 < float(shuffled)


def test_same_group_items_are_positives_not_negatives() -> None:
    """Two copies of one item in one group: no penalty for their similarity; in two groups, a large one."""
    torch.manual_seed(0)
    text = unit(torch.randn(3, 16))
    batch = torch.cat([text[:1], text])  # item 0 twice
    scale = LogitScale(0.05)().detach()
    together = contrastive_loss(batch, batch, torch.tensor([0, 0, 1, 2]), scale)
    apart = contrastive_loss(batch, batch, torch.tensor([0, 3, 1, 2]), scale)
    assert float(together) < 0.01
    assert float(apart) > math.log(2) / 2 * 0.9  # rows 0 and 1 each pay log 2, rows 2 and 3 nothing


def test_hard_negatives_weigh_the_closest_negative_more() -> None:
    text = unit(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    image = unit(torch.tensor([[1.0, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))  # image 0 near text 1
    groups = torch.arange(3)
    scale = LogitScale(0.5)().detach()
    plain = contrastive_loss(image, text, groups, scale)
    hard = contrastive_loss(image, text, groups, scale, hard_negatives=5.0)
    assert float(hard) > float(plain)


def test_a_batch_of_one_group_gives_a_finite_loss_and_gradient() -> None:
    image = unit(torch.randn(4, 8)).requires_grad_()
    loss = contrastive_loss(image, unit(torch.randn(4, 8)), torch.zeros(4, dtype=torch.long), LogitScale()(),
                            hard_negatives=1.0)
    loss.backward()  # type: ignore[no-untyped-call]
    assert torch.isfinite(loss)
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_temperature_is_learnable_and_clamped() -> None:
    scale = LogitScale(0.07)
    assert scale.value.requires_grad
    assert float(scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        scale.value.fill_(10.0)
    assert float(scale().detach()) == pytest.approx(100.0)
    assert not LogitScale(0.07, learnable=False).value.requires_grad


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"image \(2, 4\), text \(3, 4\)"):
        contrastive_loss(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2), LogitScale()())


def test_image_image_loss_pulls_a_group_together() -> None:
    torch.manual_seed(0)
    groups = torch.tensor([0, 0, 1, 1, 2])
    centres = unit(torch.randn(3, 16))
    clustered = unit(centres[groups] + 0.01 * torch.randn(5, 16))
    scattered = unit(torch.randn(5, 16))
    scale = LogitScale(0.1)().detach()
    tight, loose = image_image_loss(clustered, groups, scale), image_image_loss(scattered, groups, scale)
    assert float(tight) < 0.05 < float(loose)


def test_image_image_loss_without_pairs_is_zero() -> None:
    image = unit(torch.randn(3, 8)).requires_grad_()
    loss = image_image_loss(image, torch.tensor([0, 1, 2]), LogitScale()().detach())
    loss.backward()  # type: ignore[no-untyped-call]
    assert float(loss.detach()) == 0.0

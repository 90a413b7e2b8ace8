"""The numpy mirror of CLIP's and SigLIP's image processors, checked against transformers' own PIL backend."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from PIL import Image

from embed.hf_transform import ProcessorTransform, ResizeCropNormalize, image_transform_for, mirror


def processors() -> dict[str, Any]:
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    return {
        "clip-224": CLIPImageProcessorPil(),
        "clip-crop-larger-than-resize": CLIPImageProcessorPil(
            size={"shortest_edge": 20}, crop_size={"height": 24, "width": 28}
        ),
        "clip-no-crop": CLIPImageProcessorPil(size={"shortest_edge": 30}, do_center_crop=False),
        "clip-exact-size": CLIPImageProcessorPil(
            size={"height": 30, "width": 40}, crop_size={"height": 24, "width": 24}
        ),
        "siglip-384": SiglipImageProcessorPil(size={"height": 384, "width": 384}),
        "siglip-bilinear-no-normalise": SiglipImageProcessorPil(
            size={"height": 32, "width": 48}, resample=2, do_normalize=False
        ),
    }


def images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    out = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(300, 200), (200, 300), (224, 224), (13, 7), (31, 64)]
    ]
    out.append(Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), mode="L"))
    out.append(Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), mode="RGBA"))
    out.append(Image.new("P", (20, 30), 7))
    return out


@pytest.mark.parametrize("name", list(processors()))
def test_mirror_matches_transformers(name: str) -> None:
    processor = processors()[name]
    transform = mirror(processor.to_dict())
    assert isinstance(transform, ResizeCropNormalize)
    for image in images():
        expected = processor(images=[image], return_tensors="np")["pixel_values"][0]
        got = transform(image)
        assert got.dtype == np.float32
        assert got.shape == expected.shape, (image.size, image.mode)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"{image.size} {image.mode}")


def test_image_sizes() -> None:
    clip = image_transform_for(processors()["clip-224"], default_size=999)
    siglip = image_transform_for(processors()["siglip-384"], default_size=999)
    assert clip[1] == 224
    assert siglip[1] == 384


def test_other_processors_run_as_they_are_and_pickle() -> None:
    from transformers import CLIPImageProcessorPil, ViTImageProcessorPil

    for processor in (
        ViTImageProcessorPil(size={"height": 20, "width": 20}),
        CLIPImageProcessorPil(size={"shortest_edge": 20, "longest_edge": 40}),
    ):
        transform, side = image_transform_for(processor, default_size=77)
        assert isinstance(transform, ProcessorTransform)
        image = images()[0]
        out = pickle.loads(pickle.dumps(transform))(image)
        assert out.dtype == np.float32
        assert out.shape == (3, side, side)
        np.testing.assert_allclose(out, processor(images=[image], return_tensors="np")["pixel_values"][0])


def test_mirror_refuses_what_it_does_not_mirror() -> None:
    base = processors()["clip-224"].to_dict()
    assert mirror({**base, "image_processor_type": "ViTImageProcessor"}) is None
    assert mirror({**base, "do_pad": True}) is None
    assert mirror({**base, "size": {"shortest_edge": 224, "longest_edge": 448}}) is None
    assert mirror({**base, "do_center_crop": True, "crop_size": None}) is None
    assert mirror({**base, "size": 224}) is None
    assert mirror({**base, "crop_size": 20}) == mirror({**base, "crop_size": {"height": 20, "width": 20}})

"""The recolor backend on real pictures: the product's hue moves to the target, the background stays, shading
survives; instructions that are not colour changes are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from common.errors import InvalidInput
from generate.colours import COLOURS, find_colours, lab_to_rgb, parse_colour, rgb_to_lab
from generate.protocol import GenerationRequest, Generator
from generate.recolor import RecolorGenerator, border_connected, product_mask
from tests.unit.generate.photos import demo_image, far_from, inner, lab, shaded_product


def _recolour(image: Image.Image, instruction: str, **options: object) -> list[Image.Image]:
    request = GenerationRequest(instruction=instruction, prompt="unused", image=image, **options)  # type: ignore[arg-type]
    return RecolorGenerator().generate(request)


def _hue_deg(values: np.ndarray) -> float:
    return math.degrees(math.atan2(float(values[..., 2].mean()), float(values[..., 1].mean())))


def _grey_mask(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 200


def test_it_is_a_generator() -> None:
    generator = RecolorGenerator()
    assert isinstance(generator, Generator)
    assert generator.name == "recolor"
    assert generator.describe()["colours"] == len(COLOURS)


@pytest.mark.parametrize(("instruction", "name"), [
    ("in red", "red"), ("make it dark green", "dark green"), ("red version", "red"),
    ("the same sneaker in NAVY", "navy"),
    ("a burgundy one", "burgundy"), ("khaki please", "khaki"), ("in olive", "olive"), ("beige", "beige"),
    ("teal colour", "teal"), ("navy-blue", "navy blue"), ("the red dress in light blue", "light blue"),
    ("in #1f4fbf", "#1f4fbf"), ("off-white", "off white"), ("in grey", "grey"), ("pale pink", "pale pink"),
])
def test_parses_the_target_colour(instruction: str, name: str) -> None:
    assert parse_colour(instruction).name == name


def test_modifiers_shift_lightness() -> None:
    green, dark, light = (parse_colour(f"in {word}green").lab[0] for word in ("", "deep ", "light "))
    assert dark < green < light
    assert parse_colour("dark red").lab[0] < parse_colour("red").lab[0]


def test_the_last_colour_named_wins() -> None:
    assert [c.name for c in find_colours("turn the blue one into red")] == ["blue", "red"]
    assert parse_colour("turn the blue one into red").name == "red"


@pytest.mark.parametrize(("instruction", "says"), [
    ("on a beach", "'on'"), ("as a boot", "'as'"), ("make it bigger", "'bigger'"),
    ("the same, but nicer", "names no colour"),
    ("in red with white laces", "'with'"), ("turn it into a sandal", "'into a'"), ("in red on a beach", "'beach'"),
])
def test_refuses_what_is_not_a_colour_change(instruction: str, says: str) -> None:
    image, _ = shaded_product(64)
    with pytest.raises(InvalidInput) as caught:
        _recolour(image, instruction)
    message = str(caught.value)
    assert "only changes the product's colour" in message
    assert says in message
    assert repr(instruction) in message
    assert "'in red'" in message  # examples


def test_refuses_text_to_image() -> None:
    with pytest.raises(InvalidInput, match="recolor needs a product image"):
        RecolorGenerator().generate(GenerationRequest(instruction="in red", prompt="a red dress"))


def test_refuses_a_picture_without_a_product() -> None:
    with pytest.raises(InvalidInput, match="found no product"):
        _recolour(Image.new("RGB", (64, 64), (250, 250, 250)), "in red")


def test_lab_round_trip() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(50, 3)).astype(np.float32)
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)) - rgb).max() < 0.5
    ours = rgb_to_lab(np.asarray([[[211, 47, 47]]], np.float32))[0, 0]
    theirs = lab(Image.new("RGB", (1, 1), (211, 47, 47)))[0, 0]
    assert np.abs(ours - theirs).max() < 3.0  # ImageCms: D50 and 8-bit rounding


def test_border_connected_leaves_enclosed_regions() -> None:
    candidate = np.ones((9, 9), bool)
    candidate[2:7, 2:7] = False
    candidate[4, 4] = True  # a hole inside the ring
    reached = border_connected(candidate)
    assert reached[0, 0] and reached[8, 8] and reached[1, 4]
    assert not reached[4, 4]


def test_shaded_product_turns_red_and_the_background_stays() -> None:
    image, mask = shaded_product(256)
    [out] = _recolour(image, "the same in red", seed=3, strength=0.6)
    assert out.size == image.size and out.mode == "RGB"
    before, after = lab(image), lab(out)
    product = inner(mask, 3)
    assert _hue_deg(before[product]) < -60  # blue: hue about -70 degrees
    assert after[product][..., 1].mean() > 30  # a* strongly positive
    assert abs(_hue_deg(after[product]) - _hue_deg(lab(Image.new("RGB", (1, 1), COLOURS["red"])))) < 20
    background = far_from(mask, 4)
    assert np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16))[background].max() <= 2
    shading = np.corrcoef(before[product][..., 0], after[product][..., 0])[0, 1]
    assert shading > 0.95


def test_grey_demo_garment_turns_red() -> None:
    image = demo_image("fm-00000")  # a grey ankle boot on white
    [out] = _recolour(image, "in red", seed=0)
    garment = inner(_grey_mask(image), 2)
    before, after = lab(image), lab(out)
    assert abs(before[garment][..., 1].mean()) < 2 and abs(before[garment][..., 2].mean()) < 2  # grey
    assert after[garment][..., 1].mean() > 25
    assert -10 < _hue_deg(after[garment]) < 70  # red, not magenta or orange
    background = far_from(np.asarray(image.convert("L")) < 250, 4)
    assert background.mean() > 0.3
    assert np.abs(np.asarray(out, np.int16) - np.asarray(image, np.int16))[background].max() <= 2
    assert np.corrcoef(before[garment][..., 0], after[garment][..., 0])[0, 1] > 0.9


def test_dark_hoodie_keeps_its_white_print() -> None:
    image = demo_image("fm-00001")  # a black hoodie with a white print on white
    [out] = _recolour(image, "make it navy", seed=0)
    mask = product_mask(np.asarray(image))
    assert mask[112, 112] > 0.9  # the print is enclosed by the hoodie: product, not background
    after = lab(out)
    hoodie = inner(np.asarray(image.convert("L")) < 60, 2)
    assert after[hoodie][..., 2].mean() < -10  # navy: b* negative
    print_ = inner(np.asarray(image.convert("L")) > 230, 1) & (mask > 0.99)
    assert print_.sum() > 20
    assert after[print_][..., 0].mean() > 85 and np.abs(after[print_][..., 1:]).mean() < 12  # still whitish


def test_strength_scales_the_move() -> None:
    image, mask = shaded_product(96)
    product = inner(mask, 2)
    chroma = []
    for strength in (0.0, 0.2, 1.0):
        [out] = _recolour(image, "in red", seed=1, strength=strength)
        chroma.append(lab(out)[product][..., 1].mean())
    assert chroma[0] < chroma[1] < chroma[2]
    [unchanged] = _recolour(image, "in red", seed=1, strength=0.0)
    assert np.abs(np.asarray(unchanged, np.int16) - np.asarray(image, np.int16)).max() <= 2


def test_n_and_seed_are_deterministic() -> None:
    image, _ = shaded_product(64)
    first = _recolour(image, "in teal", n=3, seed=7)
    again = _recolour(image, "in teal", n=3, seed=7)
    other = _recolour(image, "in teal", n=1, seed=8)
    assert len(first) == 3
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert len({im.tobytes() for im in first}) == 3  # slight variations
    assert other[0].tobytes() != first[0].tobytes()

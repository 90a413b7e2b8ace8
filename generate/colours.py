"""Named colours for the recolouring backend: the table, reading the target colour out of an instruction, and
sRGB <-> CIELAB (D65) conversion.

``parse_colour("make it dark green")`` gives the `TargetColour` "dark green". The table holds CSS/X11-like names
and the words shops use (navy, burgundy, khaki, olive, beige, teal, camel, ...), with the shop sense where the two
differ (shop khaki is a greyish tan, not CSS's pale yellow). A modifier just before a name (dark, deep, light,
pale, bright, pastel, muted, dusty) shifts it in CIELAB; ``#rrggbb`` and ``#rgb`` codes work too. When an
instruction names several colours, the last one wins ("the red dress in blue" -> blue).

An instruction that names no colour, or that asks for more than a colour change ("on a beach", "as a boot",
"with white laces"), is refused with `InvalidInput`: recolouring cannot honour it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInput

FloatArray = npt.NDArray[np.float32]

_HEX: dict[str, str] = {
    # neutrals
    "black": "141414", "white": "f7f7f7", "off white": "f4f1e8", "ivory": "fffff0", "cream": "f3ecd2",
    "grey": "808080", "gray": "808080", "charcoal": "36454f", "silver": "c0c0c0", "graphite": "41424c",
    "ecru": "cdc2a5", "stone": "a59a8b", "taupe": "8b7d6b", "nude": "e3bc9a",
    # reds and pinks
    "red": "d32f2f", "crimson": "dc143c", "scarlet": "ff2400", "cherry": "c2185b", "ruby": "9b111e",
    "burgundy": "800020", "maroon": "800000", "wine": "722f37", "oxblood": "4a0000", "rust": "b7410e",
    "brick": "a33a2a", "coral": "ff7f50", "salmon": "fa8072", "pink": "f4a6c0", "hot pink": "ff69b4",
    "baby pink": "f4c2c2", "blush": "de98a5", "rose": "e7a3b0", "fuchsia": "e0218a", "magenta": "d81b9c",
    # oranges, yellows, browns
    "orange": "ff8c00", "tangerine": "f28500", "peach": "ffcba4", "apricot": "fbceb1", "amber": "ffbf00",
    "yellow": "f5d000", "lemon": "fff44f", "mustard": "e1ad01", "gold": "d4af37", "golden": "d4af37",
    "beige": "d8c3a5", "sand": "c2b280", "tan": "d2b48c", "camel": "c19a6b", "khaki": "c3b091",
    "brown": "7b4a2a", "chocolate": "5c3317", "cognac": "9a463d", "chestnut": "954535", "mocha": "6f4e37",
    "coffee": "6f4e37", "caramel": "af6f09", "bronze": "cd7f32", "copper": "b87333",
    # greens
    "green": "2e7d32", "dark green": "1b4d1e", "lime": "32cd32", "mint": "aaf0d1", "sage": "9caf88",
    "olive": "708238", "olive green": "708238", "army green": "4b5320", "khaki green": "8a865d",
    "emerald": "50c878", "forest green": "228b22", "bottle green": "006a4e", "jade": "00a86b",
    "teal": "008080", "turquoise": "40e0d0", "aqua": "00bcd4", "cyan": "00bcd4",
    # blues and purples
    "blue": "1f4fbf", "navy": "1f2a44", "navy blue": "1f2a44", "royal blue": "4169e1", "cobalt": "0047ab",
    "cobalt blue": "0047ab", "sky blue": "87ceeb", "baby blue": "89cff0", "powder blue": "b0e0e6",
    "denim blue": "1560bd", "petrol": "005f6a", "petrol blue": "005f6a", "indigo": "3f2a8c",
    "purple": "6a1b9a", "violet": "7f3fbf", "lavender": "b4a7d6", "lilac": "c8a2c8", "plum": "8e4585",
    "mauve": "b784a7", "aubergine": "3d0c2e", "eggplant": "3d0c2e",
}

MODIFIERS: tuple[str, ...] = ("dark", "deep", "light", "pale", "bright", "pastel", "muted", "dusty")
"""Words that shift the colour named right after them."""

_NOT_COLOUR_CHANGES: frozenset[str] = frozenset({
    "on", "at", "with", "without", "as", "wearing", "worn", "background", "backdrop", "beach", "street",
    "scene", "model", "person", "add", "adding", "remove", "removing", "replace", "logo", "pattern",
    "patterned", "stripe", "stripes", "striped", "dots", "dotted", "polka", "floral", "plaid", "checked",
    "checkered", "texture", "shape", "longer", "shorter", "bigger", "smaller", "larger", "wider", "narrower",
})
"""Words that ask for more than a colour change ("on a beach", "as a boot", "with white laces")."""

_NOT_COLOUR_PAIRS: frozenset[tuple[str, str]] = frozenset({("into", "a"), ("into", "an"), ("like", "a")})

EXAMPLES = "'in red', 'make it navy', 'a dark green version'"


def _rgb(code: str) -> tuple[int, int, int]:
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType({name: _rgb(code) for name, code in _HEX.items()})
"""Colour name (lower case, words separated by one space) -> sRGB."""

_LONGEST_NAME = max(len(name.split()) for name in COLOURS)


@dataclass(frozen=True)
class TargetColour:
    """The colour an instruction asks for.

    Attributes:
        name: as named in the instruction, modifier included ("dark green", "#1f4fbf").
        rgb: its sRGB value.
    """

    name: str
    rgb: tuple[int, int, int]

    @property
    def lab(self) -> tuple[float, float, float]:
        """Its CIELAB (D65) value."""
        lab = rgb_to_lab(np.asarray([[self.rgb]], dtype=np.float32))[0, 0]
        return float(lab[0]), float(lab[1]), float(lab[2])


# --- sRGB <-> CIELAB (D65) ----------------------------------------------------------------------------------------

_RGB_TO_XYZ = np.asarray([[0.4124564, 0.3575761, 0.1804375],
                          [0.2126729, 0.7151522, 0.0721750],
                          [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.asarray([0.95047, 1.0, 1.08883], dtype=np.float64)
_DELTA = 6.0 / 29.0


def rgb_to_lab(rgb: npt.ArrayLike) -> FloatArray:
    """CIELAB (D65) of sRGB values in 0-255, any shape ending in 3: L in 0-100, a and b about -128..127."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _DELTA ** 3, np.cbrt(xyz), xyz / (3 * _DELTA ** 2) + 4.0 / 29.0)
    lab = np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                   axis=-1)
    return lab.astype(np.float32)


def lab_to_rgb(lab: npt.ArrayLike) -> FloatArray:
    """sRGB values in 0-255 (clipped to the gamut, not rounded) of CIELAB (D65) values."""
    lab64 = np.asarray(lab, dtype=np.float64)
    fy = (lab64[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab64[..., 1] / 500.0, fy, fy - lab64[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0)) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1.0 / 2.4) - 0.055)
    return (np.clip(c, 0.0, 1.0) * 255.0).astype(np.float32)


def _modified(rgb: tuple[int, int, int], modifier: str) -> tuple[int, int, int]:
    lab = rgb_to_lab(np.asarray([rgb], dtype=np.float32))[0].astype(np.float64)
    light, chroma = lab[0], np.ones(2)
    if modifier in ("dark", "deep"):
        light *= 0.6 if modifier == "dark" else 0.75
        chroma *= 0.85 if modifier == "dark" else 1.1
    elif modifier in ("light", "pale", "pastel"):
        lift = {"light": 0.45, "pale": 0.6, "pastel": 0.55}[modifier]
        light += (100.0 - light) * lift
        chroma *= {"light": 0.6, "pale": 0.4, "pastel": 0.5}[modifier]
    elif modifier == "bright":
        light = min(100.0, light + 5.0)
        chroma *= 1.2
    else:  # muted, dusty
        chroma *= 0.5
    shifted = lab_to_rgb(np.asarray([light, lab[1] * chroma[0], lab[2] * chroma[1]]))
    red, green, blue = (round(float(v)) for v in shifted)
    return red, green, blue


def _tokens(instruction: str) -> list[str]:
    text = instruction.lower().replace("colour", "color")
    return re.findall(r"#[0-9a-f]{6}\b|#[0-9a-f]{3}\b|[a-z]+", re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text))


def find_colours(instruction: str) -> list[TargetColour]:
    """Every colour the instruction names, in order (longest names first: "navy blue" is one colour)."""
    words = _tokens(instruction)
    found: list[TargetColour] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("#"):
            code = word[1:] if len(word) == 7 else "".join(ch * 2 for ch in word[1:])
            found.append(TargetColour(word, _rgb(code)))
            i += 1
            continue
        for size in range(min(_LONGEST_NAME, len(words) - i), 0, -1):
            name = " ".join(words[i:i + size])
            if name in COLOURS:
                rgb = COLOURS[name]
                if i > 0 and words[i - 1] in MODIFIERS:
                    name = f"{words[i - 1]} {name}"
                    rgb = _modified(rgb, words[i - 1])
                found.append(TargetColour(name, rgb))
                i += size
                break
        else:
            i += 1
    return found


def parse_colour(instruction: str) -> TargetColour:
    """The colour a recolouring instruction asks for: the last one it names.

    Raises:
        InvalidInput: the instruction names no colour, or asks for more than a colour change; the message says
            what recolouring can do, with examples.
    """
    words = _tokens(instruction)
    extra = sorted({word for word in words if word in _NOT_COLOUR_CHANGES}
                   | {f"{a} {b}" for a, b in itertools.pairwise(words) if (a, b) in _NOT_COLOUR_PAIRS})
    colours = find_colours(instruction)
    if extra or not colours:
        why = (f"asks for more than a colour change ({', '.join(repr(word) for word in extra)})" if extra
               else "names no colour")
        raise InvalidInput(f"the recolor backend only changes the product's colour, and the instruction "
                           f"{instruction!r} {why}; name one colour, e.g. {EXAMPLES} (or use the diffusers or "
                           "openai backend for other changes)")
    return colours[-1]

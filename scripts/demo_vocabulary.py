"""The words of the synthetic demo catalog and its development queries (see make_demo_catalog.py).

Brands, model numbers, prices and stock are invented. Nothing here names a real company.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from numpy.typing import NDArray

# (brand, two-letter code of its model numbers); all invented.
BRANDS: tuple[tuple[str, str], ...] = (
    ("Northwind", "NW"), ("Linea", "LN"), ("Kestrel & Co", "KC"), ("Urban Fox", "UF"), ("Marlowe", "MW"),
    ("Saltmarsh", "SM"), ("Ostara", "OS"), ("Brightside", "BS"), ("Fjell", "FJ"), ("Cobalt Lane", "CL"),
    ("Juniper Row", "JR"), ("Atelier Nine", "A9"),
)

_ADULTS = ("women's", "men's", "unisex")
_ALL = ("women's", "men's", "unisex", "girls'", "boys'")

CATEGORY_WORDS: dict[str, dict[str, Any]] = {
    "T-shirt/top": {
        "code": "TS", "price": (8, 39), "genders": _ALL,
        "nouns": ("T-shirt", "tee", "tank top", "crop top", "top", "camisole"),
        "styles": ("crew-neck", "V-neck", "oversized", "fitted", "relaxed", "graphic-print", "sleeveless"),
        "materials": ("cotton jersey", "organic cotton", "modal blend", "linen blend"),
        "details": ("Short sleeves and a soft hand feel.", "Ribbed neckline.", "Cut for an easy, boxy fit."),
    },
    "Trouser": {
        "code": "TR", "price": (25, 129), "genders": _ALL,
        "nouns": ("jeans", "trousers", "chinos", "leggings", "joggers", "slacks"),
        "styles": ("slim-fit", "straight-leg", "wide-leg", "high-rise", "tapered", "skinny"),
        "materials": ("stretch denim", "cotton twill", "wool blend", "jersey"),
        "details": ("Five-pocket styling and a zip fly.", "Elasticated waist with a drawcord.",
                    "Pressed creases and belt loops."),
    },
    "Pullover": {
        "code": "PO", "price": (25, 159), "genders": _ALL,
        "nouns": ("sweater", "jumper", "pullover", "hoodie", "sweatshirt", "knit"),
        "styles": ("crew-neck", "roll-neck", "cable-knit", "oversized", "ribbed", "V-neck"),
        "materials": ("merino wool", "cotton knit", "cashmere blend", "brushed fleece"),
        "details": ("Long sleeves with ribbed cuffs.", "Dropped shoulders for a relaxed fit.",
                    "Warm enough for winter layering."),
    },
    "Dress": {
        "code": "DR", "price": (29, 189), "genders": ("women's", "girls'"),
        "nouns": ("dress", "midi dress", "maxi dress", "shift dress", "wrap dress", "sundress"),
        "styles": ("A-line", "pleated", "sleeveless", "long-sleeved", "belted", "smock"),
        "materials": ("viscose", "crepe", "cotton poplin", "satin", "jersey"),
        "details": ("Knee-length with a concealed zip.", "Floaty skirt and a tie waist.",
                    "Falls to the ankle."),
    },
    "Coat": {
        "code": "CT", "price": (59, 349), "genders": _ALL,
        "nouns": ("coat", "jacket", "parka", "trench coat", "puffer jacket", "overcoat"),
        "styles": ("double-breasted", "hooded", "quilted", "longline", "waterproof", "belted"),
        "materials": ("wool blend", "recycled polyester", "cotton gabardine", "down-filled nylon"),
        "details": ("Two-way zip and deep pockets.", "Storm flap and an adjustable hood.",
                    "Fully lined for cold days."),
    },
    "Sandal": {
        "code": "SD", "price": (15, 89), "genders": _ALL,
        "nouns": ("sandals", "slides", "flip-flops", "espadrilles", "heeled sandals"),
        "styles": ("strappy", "flat", "platform", "block-heel", "cross-strap"),
        "materials": ("leather", "suede", "rubber", "raffia"),
        "details": ("Open toe and a cushioned footbed.", "Adjustable ankle strap.", "Made for warm days."),
    },
    "Shirt": {
        "code": "SH", "price": (19, 109), "genders": _ALL,
        "nouns": ("shirt", "blouse", "button-down shirt", "flannel shirt", "oxford shirt", "overshirt"),
        "styles": ("slim-fit", "relaxed-fit", "checked", "striped", "long-sleeved", "band-collar"),
        "materials": ("cotton poplin", "brushed flannel", "linen", "chambray", "oxford cotton"),
        "details": ("Full button placket and a chest pocket.", "Curved hem, wear it tucked or loose.",
                    "Collar with buttoned points."),
    },
    "Sneaker": {
        "code": "SN", "price": (39, 179), "genders": _ALL,
        "nouns": ("sneakers", "trainers", "running shoes", "low-top sneakers", "high-tops", "slip-ons"),
        "styles": ("lace-up", "lightweight", "cushioned", "retro", "knit"),
        "materials": ("mesh", "canvas", "leather", "suede"),
        "details": ("Rubber outsole with good grip.", "Padded collar and a removable insole.",
                    "Breathable upper for everyday runs."),
    },
    "Bag": {
        "code": "BG", "price": (19, 299), "genders": ("women's", "men's", "unisex"),
        "nouns": ("handbag", "tote bag", "shoulder bag", "backpack", "clutch", "crossbody bag", "shopper"),
        "styles": ("structured", "slouchy", "quilted", "mini", "zip-top"),
        "materials": ("leather", "faux leather", "canvas", "nylon"),
        "details": ("Inner zip pocket and a detachable strap.", "Fits a 13-inch laptop.",
                    "Magnetic closure and two handles."),
    },
    "Ankle boot": {
        "code": "AB", "price": (49, 249), "genders": _ADULTS,
        "nouns": ("ankle boots", "Chelsea boots", "boots", "booties", "lace-up boots"),
        "styles": ("block-heel", "stiletto", "flat", "lug-sole", "pointed-toe", "western"),
        "materials": ("leather", "suede", "faux leather", "nubuck"),
        "details": ("Elastic side panels and a pull tab.", "Side zip and a cushioned insole.",
                    "Grippy sole for wet pavements."),
    },
}

# Display brightness (0 dark .. 255 light) -> colour names and their two-letter codes.
_COLOURS: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = (
    (60, (("black", "BK"),)),
    (100, (("charcoal", "CH"), ("navy", "NV"), ("dark brown", "DB"))),
    (150, (("grey", "GR"), ("khaki", "KH"), ("blue", "BL"), ("red", "RD"), ("olive", "OL"), ("brown", "BR"))),
    (195, (("light grey", "LG"), ("beige", "BE"), ("sand", "SA"), ("pink", "PK"), ("sky blue", "SB"))),
    (256, (("white", "WH"), ("cream", "CR"), ("off-white", "OW"))),
)


def colour_of(pixels: NDArray[np.uint8], rng: random.Random) -> tuple[str, str]:
    """A colour name consistent with the picture's brightness (the product is light on dark in the arrays)."""
    product = pixels[pixels > 20]
    brightness = 255 - float(product.mean()) if product.size else 128.0
    for limit, names in _COLOURS:
        if brightness < limit:
            return rng.choice(names)
    return _COLOURS[-1][1][0]


IMAGE_QUERIES_PER_CLASS = 3

# Development text queries: what shoppers type, paraphrases rather than the class names.
TEXT_QUERIES: tuple[tuple[str, str], ...] = (
    ("plain white tee", "T-shirt/top"), ("short sleeve top for summer", "T-shirt/top"),
    ("basic cotton t shirt", "T-shirt/top"), ("sleeveless tank top for the gym", "T-shirt/top"),
    ("graphic print tee", "T-shirt/top"), ("womens crop top", "T-shirt/top"),
    ("slim fit blue jeans", "Trouser"), ("black work trousers", "Trouser"), ("comfy joggers", "Trouser"),
    ("high waisted leggings", "Trouser"), ("mens chinos", "Trouser"), ("wide leg pants", "Trouser"),
    ("warm wool jumper", "Pullover"), ("chunky knit sweater", "Pullover"),
    ("cosy hoodie for winter", "Pullover"),
    ("crew neck sweatshirt", "Pullover"), ("cashmere pullover", "Pullover"), ("roll neck knit", "Pullover"),
    ("summer maxi dress", "Dress"), ("black party dress", "Dress"), ("floral midi dress", "Dress"),
    ("wrap dress for a wedding", "Dress"), ("sleeveless sundress", "Dress"),
    ("casual everyday dress", "Dress"),
    ("warm winter coat", "Coat"), ("waterproof rain jacket", "Coat"), ("padded puffer jacket", "Coat"),
    ("long trench coat", "Coat"), ("hooded parka", "Coat"), ("wool overcoat for men", "Coat"),
    ("flip flops for the beach", "Sandal"), ("flat summer sandals", "Sandal"),
    ("strappy heeled sandals", "Sandal"),
    ("pool slides", "Sandal"), ("leather sandals for women", "Sandal"), ("espadrilles", "Sandal"),
    ("white button down shirt", "Shirt"), ("checked flannel shirt", "Shirt"),
    ("linen shirt for summer", "Shirt"),
    ("office blouse", "Shirt"), ("oxford shirt for men", "Shirt"), ("striped long sleeve shirt", "Shirt"),
    ("running shoes", "Sneaker"), ("white trainers", "Sneaker"), ("canvas sneakers", "Sneaker"),
    ("comfortable gym shoes", "Sneaker"), ("retro high tops", "Sneaker"),
    ("lightweight jogging shoes", "Sneaker"),
    ("leather handbag", "Bag"), ("small crossbody purse", "Bag"), ("canvas tote for shopping", "Bag"),
    ("school backpack", "Bag"), ("evening clutch", "Bag"), ("shoulder bag for work", "Bag"),
    ("chelsea boots", "Ankle boot"), ("suede ankle booties", "Ankle boot"),
    ("block heel boots", "Ankle boot"),
    ("lace up winter boots", "Ankle boot"), ("short leather boots", "Ankle boot"),
    ("western style boots", "Ankle boot"),
)

# Development queries that name an exact product: a brand with a model number, or the model number alone
# (`make_demo_catalog.write_identifier_queries` picks the products). The lexical index should put it first.
IDENTIFIER_QUERIES = 20

# Development composed queries: (query text, more parts, the category that answers them). Negative parts say
# what the shopper does not want ("shoes, not sneakers"); a product id part means "like this product".
COMPOSED_QUERIES: tuple[tuple[str, tuple[dict[str, object], ...], str], ...] = (
    ("shoes for summer", ({"text": "sneakers", "weight": -0.5},), "Sandal"),
    ("footwear", ({"text": "sneakers", "weight": -0.5}, {"text": "sandals", "weight": -0.5}), "Ankle boot"),
    ("warm layer", ({"text": "coat", "weight": -0.5},), "Pullover"),
    ("something to wear on the legs", ({"text": "jeans", "weight": 0.5},), "Trouser"),
    ("a top", ({"text": "collar and buttons", "weight": 1.0},), "Shirt"),
    ("outerwear", ({"text": "sweater", "weight": -0.5},), "Coat"),
    ("bag", ({"text": "leather tote", "weight": 0.5},), "Bag"),
    ("casual shoes", ({"text": "boots", "weight": -0.5}, {"text": "sandals", "weight": -0.5}), "Sneaker"),
    ("summer outfit", ({"text": "dress", "weight": 1.0},), "Dress"),
    ("short sleeves", ({"text": "collar", "weight": -0.5},), "T-shirt/top"),
)

"""Captions for training: class names turned into many phrasings, the words shoppers actually type.

The image tower learns to land on the (frozen) text embeddings of its captions, so each class's caption list
decides where its images land. A rich list, singular and plural, synonyms and colloquial words ("trainers",
"kicks", "purse", "jumper"), places them near the queries shoppers write rather than near the one
dataset label ("Trouser" alone lands nearer "Ankle boot" than "jeans" in MiniLM's space).
"""

from __future__ import annotations

import random

# Fashion-MNIST class -> names shoppers use, "singular|plural" (one form when both are the same). The first
# entry is the class itself.
_NOUNS: dict[str, tuple[str, ...]] = {
    "T-shirt/top": (
        "T-shirt|T-shirts", "t-shirt|t-shirts", "tee|tees", "tshirt|tshirts", "top|tops",
        "tank top|tank tops", "vest top|vest tops", "crop top|crop tops", "camisole|camisoles",
        "short-sleeved top|short-sleeved tops", "graphic tee|graphic tees", "tank|tanks",
        "sleeveless top|sleeveless tops", "crew-neck tee|crew-neck tees", "v-neck t-shirt|v-neck t-shirts",
    ),
    "Trouser": (
        "trouser|trousers", "pair of trousers|trousers", "pant|pants", "pair of jeans|jeans",
        "pair of pants|pants", "slacks", "chinos", "leggings", "joggers", "sweatpants", "skinny jeans",
        "wide-leg trousers", "cargo pants", "denim jeans", "straight-leg jeans", "track pants",
    ),
    "Pullover": (
        "pullover|pullovers", "sweater|sweaters", "jumper|jumpers", "knit sweater|knit sweaters",
        "sweatshirt|sweatshirts", "hoodie|hoodies", "wool jumper|wool jumpers",
        "knitted pullover|knitted pullovers", "crewneck sweater|crewneck sweaters",
        "turtleneck|turtlenecks", "fleece|fleeces", "long-sleeved jumper|long-sleeved jumpers",
        "cable-knit sweater|cable-knit sweaters", "knitwear",
    ),
    "Dress": (
        "dress|dresses", "summer dress|summer dresses", "maxi dress|maxi dresses",
        "midi dress|midi dresses", "mini dress|mini dresses", "evening dress|evening dresses",
        "cocktail dress|cocktail dresses", "sundress|sundresses", "gown|gowns", "shift dress|shift dresses",
        "wrap dress|wrap dresses", "party dress|party dresses", "frock|frocks",
        "sleeveless dress|sleeveless dresses", "bodycon dress|bodycon dresses",
    ),
    "Coat": (
        "coat|coats", "jacket|jackets", "winter coat|winter coats", "parka|parkas",
        "trench coat|trench coats", "overcoat|overcoats", "puffer jacket|puffer jackets",
        "raincoat|raincoats", "anorak|anoraks", "windbreaker|windbreakers", "bomber jacket|bomber jackets",
        "zip-up jacket|zip-up jackets", "outdoor jacket|outdoor jackets", "padded jacket|padded jackets",
        "wool coat|wool coats", "denim jacket|denim jackets",
    ),
    "Sandal": (
        "sandal|sandals", "pair of sandals|sandals", "flip-flop|flip-flops", "slide|slides",
        "slider|sliders", "strappy sandal|strappy sandals", "heeled sandal|heeled sandals",
        "open-toe shoe|open-toe shoes", "summer shoe|summer shoes", "espadrille|espadrilles",
        "gladiator sandal|gladiator sandals", "beach sandal|beach sandals", "flat sandal|flat sandals",
        "platform sandal|platform sandals",
    ),
    "Shirt": (
        "shirt|shirts", "button-down shirt|button-down shirts", "button-up shirt|button-up shirts",
        "blouse|blouses", "dress shirt|dress shirts", "flannel shirt|flannel shirts",
        "oxford shirt|oxford shirts", "checked shirt|checked shirts", "plaid shirt|plaid shirts",
        "long-sleeved shirt|long-sleeved shirts", "collared shirt|collared shirts",
        "denim shirt|denim shirts", "work shirt|work shirts", "casual shirt|casual shirts",
    ),
    "Sneaker": (
        "sneaker|sneakers", "pair of sneakers|sneakers", "trainer|trainers", "running shoe|running shoes",
        "athletic shoe|athletic shoes", "sports shoe|sports shoes", "tennis shoe|tennis shoes",
        "gym shoe|gym shoes", "kicks", "canvas shoe|canvas shoes", "slip-on sneaker|slip-on sneakers",
        "low-top sneaker|low-top sneakers", "high-top|high-tops", "jogging shoe|jogging shoes",
        "casual shoe|casual shoes", "skate shoe|skate shoes",
    ),
    "Bag": (
        "bag|bags", "handbag|handbags", "purse|purses", "tote bag|tote bags", "tote|totes",
        "shoulder bag|shoulder bags", "backpack|backpacks", "clutch|clutches", "satchel|satchels",
        "crossbody bag|crossbody bags", "shopper bag|shopper bags", "messenger bag|messenger bags",
        "rucksack|rucksacks", "leather bag|leather bags", "top-handle bag|top-handle bags",
    ),
    "Ankle boot": (
        "ankle boot|ankle boots", "boot|boots", "bootie|booties", "chelsea boot|chelsea boots",
        "heeled boot|heeled boots", "short boot|short boots", "lace-up boot|lace-up boots",
        "winter boot|winter boots", "combat boot|combat boots", "western boot|western boots",
        "suede boot|suede boots", "leather boot|leather boots", "pair of boots|boots",
        "block-heel boot|block-heel boots",
    ),
}


def _forms(form: str) -> tuple[str, str]:
    singular, _, plural = form.partition("|")
    return singular, plural or singular


FASHION_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    name: tuple(_forms(form) for form in forms) for name, forms in _NOUNS.items()
}

ADJECTIVES = (
    "black", "white", "grey", "dark", "light", "navy", "beige", "brown", "blue", "red", "casual", "classic",
    "stylish", "comfortable", "cheap", "new", "trendy", "vintage", "elegant", "simple", "cotton", "everyday",
)
WHO = ("women", "men", "kids", "girls", "boys", "ladies", "her", "him", "everyday wear", "summer", "winter",
       "work", "the weekend")

# Templates: {s} singular noun (with its article where it reads so), {p} plural, {adj}, {who}.
TEMPLATES = (
    "{s}", "{p}", "a {s}", "a photo of a {s}", "a product photo of {p}", "a picture of a {s}",
    "{adj} {p}", "{adj} {s}", "a {adj} {s}", "{p} for {who}", "{adj} {p} for {who}", "{who} {p}",
    "buy {p} online", "{p} on sale", "cheap {p}", "looking for {p}", "I want a {s}", "best {p}",
    "a black and white photo of a {s}", "a grey picture of {p}", "new season {p}", "shop {adj} {p}",
)


def _article(phrase: str) -> str:
    """Replace "a X" by "an X" before a vowel sound."""
    words = phrase.split(" ")
    for i, word in enumerate(words[:-1]):
        if word == "a" and words[i + 1][:1].lower() in "aeiou":
            words[i] = "an"
    return " ".join(words)


def class_captions(class_name: str, *, count: int = 240, seed: int = 0,
                   nouns: dict[str, tuple[tuple[str, str], ...]] | None = None) -> list[str]:
    """``count`` distinct captions of a class, deterministic from ``seed``.

    Every noun appears bare (singular and plural) once; the rest are templates filled at random. A class
    without a noun list gets its own name in the templates.
    """
    table = nouns if nouns is not None else FASHION_NOUNS
    pairs = table.get(class_name) or ((class_name, class_name),)
    rng = random.Random(f"{seed}:{class_name}")
    captions: list[str] = [class_name]
    for singular, plural in pairs:
        for text in (singular, plural):
            if text not in captions:
                captions.append(text)
    attempts = 0
    while len(captions) < count and attempts < count * 20:
        attempts += 1
        singular, plural = rng.choice(pairs)
        template = rng.choice(TEMPLATES)
        if singular == plural:  # "a leggings" reads wrong: use the plural without an article
            template = (template.replace("a {adj} {s}", "{adj} {p}").replace("a {s}", "{p}")
                        .replace("{s}", "{p}"))
        adjective, who = rng.choice(ADJECTIVES), rng.choice(WHO)
        text = _article(template.format(s=singular, p=plural, adj=adjective, who=who))
        if text not in captions:
            captions.append(text)
    return captions[:count]


def generic_captions(name: str) -> list[str]:
    """A few templated captions of a category that has no noun list (catalog training)."""
    lower = name.lower()
    return [name, lower, *(_article(text) for text in (f"a {lower}", f"a photo of a {lower}",
                                                       f"a product photo of a {lower}")), f"{lower} for sale"]

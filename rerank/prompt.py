"""The one question both re-rankers ask: does this product match what the shopper is looking for?

A prompt is a list of parts in order, each a PIL image or a string; each backend turns it into its own message
format (transformers: the processor's chat template; openai: ``image_url`` and ``text`` content parts). Images
come first (the query photo, then the product photo), the question last, so that templates that put images
before the text (LLaVA's) and those that keep the order (Qwen2-VL's) read the same thing.

Two answer forms:

- ``yes_no``: the answer is one word, "yes" or "no"; the score is P(yes) / (P(yes) + P(no)) from the
  next-token distribution (transformers: logits; openai: ``logprobs``).
- ``json``: the answer is ``{"relevant": bool, "score": number}``, for servers that return no logprobs.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image

from rerank.protocol import Candidate, RerankQuery

Part = str | Image.Image
AnswerForm = Literal["yes_no", "json"]

MAX_QUERY_CHARS = 300
MAX_PRODUCT_CHARS = 1000
YES_WORDS = ("yes",)
NO_WORDS = ("no",)

_INTRO = "You check the results of a search in an online shop."
_ASK_YES_NO = "Does this product match what the shopper is looking for? Answer with one word: yes or no."
_ASK_JSON = (
    "Does this product match what the shopper is looking for? Answer in JSON: "
    '{"relevant": true or false, "score": a number from 0 (does not match) to 1 (matches perfectly)}.'
)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def question(query: RerankQuery, candidate: Candidate, *, answer: AnswerForm = "yes_no") -> str:
    """The text of the question about ``candidate``, naming the images that `parts` puts before it."""
    words = query.words
    has_query_image = query.image is not None
    if words and has_query_image:
        asked = (f'The shopper searched for "{_clip(words, MAX_QUERY_CHARS)}" and gave the first image as an '
                 "example of what they want.")
    elif words:
        asked = f'The shopper searched for "{_clip(words, MAX_QUERY_CHARS)}".'
    else:
        asked = "The shopper gave the first image as an example of what they want."
    product = f"The product: {_clip(candidate.text, MAX_PRODUCT_CHARS) or '(no description)'}."
    if candidate.image is not None:
        product += " Its photo is the " + ("second image." if has_query_image else "image.")
    else:
        product += " It has no photo."
    ask = _ASK_JSON if answer == "json" else _ASK_YES_NO
    return "\n".join((_INTRO, asked, product, ask))


def parts(query: RerankQuery, candidate: Candidate, *, answer: AnswerForm = "yes_no") -> list[Part]:
    """The prompt about ``candidate``: the query image (if any), the product image (if any), then the question."""
    images: list[Part] = [image for image in (query.image, candidate.image) if image is not None]
    return [*images, question(query, candidate, answer=answer)]


def answer_word(token: str) -> Literal["yes", "no"] | None:
    """Whether a vocabulary token or answer piece means "yes" or "no" (``"▁Yes"``, ``"Ġno"``, ``" YES"``)."""
    word = token.replace("▁", " ").replace("Ġ", " ").strip().lower()
    if word in YES_WORDS:
        return "yes"
    if word in NO_WORDS:
        return "no"
    return None


# -- describing a product (catalog enrichment, `rerank.describe`) ------------------------------------------

ATTRIBUTE_NAMES = ("colour", "material", "pattern", "style")
"""The attributes a description lists (when the photo or the text shows them)."""
DescribeForm = Literal["lines", "json"]

DESCRIBE_INSTRUCTION = (
    "Describe this product factually in at most 2 sentences: what it is, and its colour, material, pattern "
    "and style. Say only what the photo and the text show: no marketing words, no guesses, nothing about "
    "price, quality or who it is for unless the text says so."
)
_DESCRIBE_LINES = (
    "Then list its attributes, one per line, leaving out any the photo and the text do not show. Answer in "
    "exactly this form:\nDescription: ...\ncolour: ...\nmaterial: ...\npattern: ...\nstyle: ..."
)
_DESCRIBE_JSON = (
    'Answer in JSON: {"description": "...", "attributes": {"colour": ..., "material": ..., "pattern": ..., '
    '"style": ...}}, with null for an attribute the photo and the text do not show.'
)


def describe_question(candidate: Candidate, *, answer: DescribeForm = "lines") -> str:
    """The text of the request to describe ``candidate`` (its photo, if any, comes before it)."""
    product = f"The product: {_clip(candidate.text, MAX_PRODUCT_CHARS) or '(no text)'}."
    product += " Its photo is the image." if candidate.image is not None else " It has no photo."
    ask = _DESCRIBE_JSON if answer == "json" else _DESCRIBE_LINES
    return "\n".join(("You write product data for an online shop.", product, DESCRIBE_INSTRUCTION, ask))


def describe_parts(candidate: Candidate, *, answer: DescribeForm = "lines") -> list[Part]:
    """The request to describe ``candidate``: its photo (if any), then the instruction."""
    images: list[Part] = [candidate.image] if candidate.image is not None else []
    return [*images, describe_question(candidate, answer=answer)]

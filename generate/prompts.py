"""From a terse instruction ("the same sneaker in red") and the product's fields to the detailed prompt a model
gets.

- ``template`` (the default): `template_prompt` fills a fixed product-photo template with the instruction and
  the product's title, brand, category, colour and material.
- ``llm``: `LLMPromptRewriter` asks a chat model (``rewrite_model``, through the same ``base_url`` and key as
  the images API) to expand the instruction into one detailed paragraph that keeps the product's identity, as
  DALL-E 3 rewrites prompts. On any failure (no model or key, an API error, a timeout, an empty or overlong
  answer) it logs why and falls back to the template.

`rewrite_prompt` returns the prompt with the method that made it (``template`` or ``llm``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from common.openai_client import KeyedClient
from common.settings import GenerateSettings

logger = logging.getLogger(__name__)

PromptMethod = Literal["template", "llm"]

MAX_PROMPT_CHARS = 2000
REWRITE_TIMEOUT_S = 20.0

SYSTEM_PROMPT = (
    "You write prompts for an image model that edits product photos for an online shop. Given a shopper's short "
    "instruction and the product's catalog fields, write one detailed prompt: a single paragraph of at most 80 "
    "words describing the finished product photo. Keep the product's identity: the same kind of item, shape, cut, "
    "details and brand character; change only what the instruction asks. Describe colour, material, lighting and "
    "background concretely (a studio product photo on a plain light background, soft even lighting, high detail, "
    "unless the instruction asks otherwise). No people unless asked, no text or logos that are not on the "
    "product, no lists, no quotes, no preamble: answer with the prompt alone."
)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _field(product: Mapping[str, Any] | None, *names: str) -> str | None:
    """The first non-empty string among ``names`` in the product or its ``attributes``."""
    if not product:
        return None
    attributes = product.get("attributes")
    places: list[Mapping[str, Any]] = [product]
    if isinstance(attributes, Mapping):
        places.append(attributes)
    for place in places:
        for name in names:
            value = place.get(name)
            if isinstance(value, str | int | float) and not isinstance(value, bool) and _clean(str(value)):
                return _clean(str(value))
    return None


def template_prompt(instruction: str, product: Mapping[str, Any] | None) -> str:
    """A detailed product-photo prompt from the instruction and the product's title, brand, category, colour
    and material (any of which may be missing).

    >>> template_prompt("in red", {"title": "Runner sneaker", "brand": "Acme", "category": "Shoes"})[:62]
    'Studio product photo of a Runner sneaker by Acme (Shoes), in red'
    """
    wish = _clean(instruction).rstrip(".")
    title = _field(product, "title", "name")
    brand = _field(product, "brand")
    category = _field(product, "category")
    colour = _field(product, "colour", "color")
    material = _field(product, "material")
    subject = f"a {title}" if title else "the product"
    if brand and (not title or brand.lower() not in title.lower()):
        subject += f" by {brand}"
    if category:
        subject += f" ({category})"
    was = ", ".join(part for part in (colour, material) if part)
    original = f" The original is {was}." if was else ""
    return (f"Studio product photo of {subject}, {wish}.{original} Same shape, same details, same proportions; "
            "change only what is asked. Plain light background, soft even lighting, sharp focus, high detail.")


class LLMPromptRewriter:
    """A chat model that writes the prompt (`SYSTEM_PROMPT`), falling back to `template_prompt`.

    Construction stores names only; the client is made at the first `rewrite`.

    Args:
        model: the chat model on the server; ``None`` or empty: always the template (logged once).
        base_url: a compatible server's URL; ``None``: OpenAI's.
        api_key_env: the environment variable holding the key.
        timeout_s: time limit of the one request (no retries: the template is the fallback).
    """

    def __init__(self, model: str | None, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = REWRITE_TIMEOUT_S) -> None:
        self._model = (model or "").strip()
        self._api = KeyedClient(base_url, api_key_env, timeout_s, _missing_key)
        self._timeout_s = timeout_s
        self._warned = False

    @property
    def model(self) -> str:
        """The chat model ("" when none is set)."""
        return self._model

    def rewrite(self, instruction: str, product: Mapping[str, Any] | None) -> tuple[str, PromptMethod]:
        """The prompt and ``llm``, or the template's prompt and ``template`` when the model fails (logged)."""
        if not self._model:
            if not self._warned:
                self._warned = True
                logger.warning("prompt rewrite=llm but no VITRINE_GENERATE__REWRITE_MODEL is set; using the "
                               "template")
            return template_prompt(instruction, product), "template"
        try:
            completion = self._api.client().chat.completions.create(
                model=self._model, temperature=0.2, max_tokens=300, timeout=self._timeout_s,
                messages=[{"role": "system", "content": SYSTEM_PROMPT},
                          {"role": "user", "content": _user_message(instruction, product)}])
            text = _clean(str(completion.choices[0].message.content or "")).strip("\"'")
            if not text or len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"an answer of {len(text)} characters (expected 1 to {MAX_PROMPT_CHARS})")
        except Exception as e:  # any failure means the template: the rewrite is a nicety
            logger.warning("prompt rewrite with %r failed (%s: %s); using the template", self._model,
                           type(e).__name__, self._api.redact(str(e))[:200])
            return template_prompt(instruction, product), "template"
        return text, "llm"


def _missing_key(api_key_env: str) -> LookupError:
    return LookupError(f"no API key in {api_key_env} and no VITRINE_GENERATE__BASE_URL")


def _user_message(instruction: str, product: Mapping[str, Any] | None) -> str:
    lines = [f"Instruction: {_clean(instruction)}"]
    for label, names in (("Product", ("title", "name")), ("Brand", ("brand",)), ("Category", ("category",)),
                         ("Colour", ("colour", "color")), ("Material", ("material",)),
                         ("Description", ("description",))):
        value = _field(product, *names)
        if value:
            lines.append(f"{label}: {value[:500]}")
    return "\n".join(lines)


def build_rewriter(settings: GenerateSettings) -> LLMPromptRewriter | None:
    """The LLM rewriter of ``settings`` (``rewrite=llm``), or ``None`` for the template."""
    if settings.rewrite != "llm":
        return None
    return LLMPromptRewriter(settings.rewrite_model, base_url=settings.base_url, api_key_env=settings.api_key_env,
                             timeout_s=min(settings.timeout_s, REWRITE_TIMEOUT_S))


def rewrite_prompt(settings: GenerateSettings, instruction: str,
                   product: Mapping[str, Any] | None) -> tuple[str, PromptMethod]:
    """The prompt for ``instruction`` and ``product`` and how it was made (``template`` or ``llm``), as the
    ``rewrite`` setting says. A one-off: services keep one `LLMPromptRewriter` (`build_rewriter`) instead."""
    rewriter = build_rewriter(settings)
    if rewriter is None:
        return template_prompt(instruction, product), "template"
    return rewriter.rewrite(instruction, product)

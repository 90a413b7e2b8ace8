"""Variant image synthesis: "this dress in red" from a product image (or a picture from text alone).

``Variants.from_settings(settings)`` is the service the API and the command line call: ``make(...)`` returns a
`VariantResult` (image names served at ``/generated/{name}``, the prompt, seed, backend and time). Backends
(`Generator`): ``recolor`` (offline, no weights), ``openai`` (the images API) and ``diffusers`` (the
``generate`` extra), built by `build_generator`. See docs/generate.md.
"""

from generate.cache import GeneratedSet, GeneratedStore, key_for
from generate.prompts import LLMPromptRewriter, rewrite_prompt, template_prompt
from generate.protocol import GenerationRequest, Generator
from generate.registry import build_generator, known_backends
from generate.service import VariantResult, Variants

__all__ = ["GeneratedSet", "GeneratedStore", "GenerationRequest", "Generator", "LLMPromptRewriter", "VariantResult",
           "Variants", "build_generator", "key_for", "known_backends", "rewrite_prompt", "template_prompt"]

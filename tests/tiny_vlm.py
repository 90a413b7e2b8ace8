"""A tiny random LLaVA (CLIP vision tower, Llama language model) built from config, for re-ranker tests.

The tokenizer is a word-level ``tokenizers`` tokenizer over a handmade vocabulary (the words of the re-rank
prompt, a few product words, "yes"/"no" in two cases and the ``<image>`` token), wrapped as a transformers fast
tokenizer; the chat template is the one llava-hf/llava-1.5-7b-hf ships with its processor. Nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# The chat template of llava-hf/llava-1.5-7b-hf (its chat_template.jinja): images first, then the texts.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
_PROMPT_WORDS = (
    "USER ASSISTANT : . , ? \" ( ) … yes no Yes No you check the results of a search in an online shop shopper "
    "searched for and gave first second image as example what they want product its photo is it has does this "
    "match looking answer with one word or"
)
_PRODUCT_WORDS = "white red blue black running shoes sneakers dress summer leather bag boots jeans brand category"
_WORDS = (*_PROMPT_WORDS.split(), *_PRODUCT_WORDS.split())
IMAGE_SIZE = 32
PATCH_SIZE = 8


def tiny_llava(*, seed: int = 0) -> tuple[Any, Any]:
    """A random ``LlavaForConditionalGeneration`` (width 32, 2 layers per tower) and its ``LlavaProcessor``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {token: index for index, token in enumerate((*_SPECIALS, *dict.fromkeys(_WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(_SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, model_max_length=1024,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=len(vocab), max_position_embeddings=1024,
                                bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"]),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    return model, processor


def save_tiny_llava(folder: Path, *, seed: int = 0) -> Path:
    """Write `tiny_llava`'s model and processor with ``save_pretrained``; the folder loads by its path."""
    model, processor = tiny_llava(seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

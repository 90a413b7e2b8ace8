"""Tiny random encoders built from config, for tests. Nothing is downloaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def save_tiny_open_clip(folder: Path, *, seed: int = 0) -> Path:
    """Write a random width-32 open_clip model as an open_clip local folder and return the folder.

    The folder loads as the encoder name ``str(folder)`` or ``open_clip:local-dir:FOLDER``.
    """
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": {}}), encoding="utf-8"
    )
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


# --- transformers CLIP and SigLIP, and a hand-built Hugging Face hub cache ------------------------

TINY_HF_TEXT_CFG = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 16,
}
TINY_HF_VISION_CFG = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "image_size": 32, "patch_size": 8,
}
TINY_HF_CLIP_PROJECTION = 24
# A fake commit hash for hand-built hub caches (40 hex digits, as the hub's refs hold).
TINY_HF_REVISION = "0123456789abcdef0123456789abcdef01234567"

_SENTENCES = (
    "white running shoes", "red summer dress", "blue denim jeans for men", "brown leather bag",
    "a photo of a cat", "black ankle boots", "green wool pullover", "silver watch with a steel strap",
)


def save_tiny_hf_clip(folder: Path, *, seed: int = 0) -> Path:
    """Write a random transformers ``CLIPModel`` (width 32, projection 24) and return the folder.

    The tokenizer is a ``CLIPTokenizer`` over a handmade byte-level BPE vocabulary (lower-case letters and
    digits, no merges) and the image processor a ``CLIPImageProcessor`` (shortest edge 32, centre crop 32).
    The folder loads as the encoder name ``hf:FOLDER`` or ``str(folder)``.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in "abcdefghijklmnopqrstuvwxyz0123456789":
            vocab[char + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[],
                              model_max_length=TINY_HF_TEXT_CFG["max_position_embeddings"])
    config = CLIPConfig(
        text_config={**TINY_HF_TEXT_CFG, "vocab_size": len(vocab), "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config=TINY_HF_VISION_CFG,
        projection_dim=TINY_HF_CLIP_PROJECTION,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder


def save_tiny_siglip(folder: Path, *, seed: int = 0) -> Path:
    """Write a random transformers ``SiglipModel`` (width 32) and return the folder.

    The tokenizer is the real ``SiglipTokenizer`` over a 48-piece SentencePiece model trained here on a few
    product phrases (``</s>`` pads, as in Google's checkpoints); the image processor a
    ``SiglipImageProcessor`` resizing to 32x32. The folder loads as ``hf:FOLDER`` or ``str(folder)``.
    """
    import io

    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES), model_writer=model_bytes, vocab_size=48, model_type="unigram",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
        num_threads=1,
    )
    (folder / "spiece.model").write_bytes(model_bytes.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"),
                                model_max_length=TINY_HF_TEXT_CFG["max_position_embeddings"])
    config = SiglipConfig(
        text_config={**TINY_HF_TEXT_CFG, "vocab_size": len(tokenizer), "bos_token_id": None,
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config=TINY_HF_VISION_CFG,
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def put_in_hf_cache(cache: Path, repo_id: str, folder: Path, *, revision: str = TINY_HF_REVISION) -> Path:
    """Lay out ``folder``'s files as the Hugging Face hub cache holds a downloaded ``repo_id``.

    The layout is the hub's own: ``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<revision>/<file>`` as
    relative symlinks to the blobs, and ``refs/main`` holding the revision, so that the hub's loading code
    (``hf_hub_download`` with ``HF_HUB_OFFLINE=1``) finds the files without a network. Returns the
    snapshot folder.
    """
    import hashlib
    import os
    import shutil

    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    for source in sorted(path for path in folder.rglob("*") if path.is_file()):
        relative = source.relative_to(folder)
        blob = repo_dir / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


# --- a tiny sentence-transformers-style BERT (stands in for all-MiniLM-L6-v2 in training tests) ----------

TINY_BERT_WORDS = (
    "a", "an", "the", "of", "for", "photo", "picture", "product", "red", "blue", "black", "white", "grey",
    "bag", "bags", "handbag", "purse", "tote", "sneaker", "sneakers", "shoe", "shoes", "running", "trainers",
    "dress", "dresses", "summer", "boot", "boots", "ankle", "shirt", "coat", "jacket", "sandal", "sandals",
    "trouser", "trousers", "jeans", "pullover", "sweater", "t", "-", "/", "top", "sale", "buy", "online",
)


_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def save_tiny_minilm(folder: Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """Write a random 2-layer ``BertModel`` (width ``hidden``) with a handmade WordPiece vocabulary.

    The folder has the layout of the all-MiniLM-L6-v2 folder (config.json, vocab.txt, tokenizer files), so it
    loads through the demo encoder's text tower (``embed.minilm``) as ``text_model`` / ``TextTowerSpec.path``.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS,
             *_CHARACTERS, *(f"##{c}" for c in _CHARACTERS)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"), model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_demo_encoder(folder: Path, *, seed: int = 0) -> Path:
    """Write a ``vitrine train``-style encoder folder: a tiny random CNN image tower under a tiny BERT text
    tower (both 32-d). The folder loads as the encoder name ``str(folder)`` (through ``embed.demo``)."""
    from embed.demo_towers import build_tower
    from embed.manifest import EncoderManifest, TextTowerSpec, save_weights, write_manifest

    text = save_tiny_minilm(folder / "text", seed=seed)
    image = {"arch": "cnn", "stages": [[4, 1], [8, 1]], "hidden": 0, "dim": 32, "size": 28}
    torch.manual_seed(seed)
    save_weights(folder / "weights.safetensors", build_tower(image).state_dict())
    write_manifest(folder, EncoderManifest(kind="towers", dim=32, text=TextTowerSpec(path=str(text)),
                                           image=image))
    return folder


@contextmanager
def offline_hf_hub(cache: Path) -> Iterator[Path]:
    """HF_HUB_OFFLINE=1 against the hub cache ``cache`` while the block runs: nothing can be downloaded.

    huggingface_hub reads both settings into ``huggingface_hub.constants`` at import, so those are set too
    (the loaders read them at call time); the environment carries them to spawned processes.
    """
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        yield cache


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread while the block runs: on a busy 2-core machine, more threads make tiny models far
    slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

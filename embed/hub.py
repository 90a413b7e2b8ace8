"""Where model files are looked for, and "weights not found" messages that say so.

Every `ModelNotFound` of the backends reads: which encoder, what was missing, where it was looked for
(the Hugging Face cache folder of the repository, a file or a folder), how to point at a local copy, and
the underlying cause.
"""

from __future__ import annotations

from pathlib import Path


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in effect (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else under ~/.cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_repo_dir(repo_id: str) -> Path:
    """The folder the hub cache keeps the model repository ``repo_id`` in."""
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids downloads."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def in_hub_cache(repo_id: str) -> str:
    """Where a hub file of ``repo_id`` was looked for, and why it was not downloaded."""
    reason = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "no network, no such repository, or no access"
    return (f"in the Hugging Face cache folder {str(hub_repo_dir(repo_id))!r} and could not be downloaded "
            f"({reason})")


def hub_hint(repo_id: str) -> str:
    """How to make the hub repository ``repo_id`` available without a network."""
    return (f"or fetch it where there is a network (`hf download {repo_id}`) and set HF_HUB_CACHE (or "
            "HF_HOME) to that cache here")


def not_found(*, encoder: str, what: str, where: str, hint: str, cause: BaseException | None = None) -> str:
    """The message of a `ModelNotFound`.

    Args:
        encoder: the encoder's name.
        what: what is missing, e.g. "its weights were not found".
        where: where they were looked for, e.g. "in the folder '/models/x'".
        hint: how to point at a local copy.
        cause: the error of the loading library, appended for the details.
    """
    message = f"could not load encoder {encoder!r}: {what} {where}. {hint}."
    if cause is not None:
        message += f" (cause: {type(cause).__name__}: {str(cause).strip()})"
    return message

"""A local vision-language model through transformers: ``AutoProcessor`` + ``AutoModelForImageTextToText``.

Any image-text-to-text model transformers loads that way works, by hub name or local folder: LLaVA 1.5
(``llava-hf/llava-1.5-7b-hf``), LLaVA-NeXT (``llava-hf/llava-v1.6-mistral-7b-hf``), Qwen2-VL / Qwen2.5-VL,
SmolVLM, Idefics3. The prompt (`rerank.prompt`) goes through the processor's own chat template, so no model
needs a hand-written prompt format.

How a score is computed: the candidates of a batch go through one forward pass, left-padded so that the last
position of every row is the first answer token; the score is P(yes) = exp(l_yes) / (exp(l_yes) + exp(l_no)),
where l_yes and l_no are the log-sum-exp of the last-position logits over the vocabulary tokens that spell
"yes" and "no" (``yes``, ``▁Yes``, ``Ġyes``, ...).

Candidates without an image get a text-only message (no blank image); a query image, when given, is a second
image part before the product's (`rerank.prompt`).

The same model also writes product descriptions (`rerank.describe.Describer`, ``describe_product``): greedy
``generate`` of at most ``max_new_tokens`` tokens, parsed by `rerank.describe.parse_lines`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import BackendUnavailable, ConfigError, ModelNotFound, RerankFailed, RerankTimeout
from common.settings import Dtype, RerankSettings
from rerank.describe import Description, parse_lines
from rerank.imaging import fit_short_side
from rerank.prompt import Part, answer_word, describe_parts, parts
from rerank.protocol import Candidate, RerankQuery, check_candidates

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOCAL_HINT = ("no download is attempted when HF_HUB_OFFLINE=1; to use a local copy, point "
               "VITRINE_RERANK__MODEL at its folder (as `hf download ORG/NAME --local-dir DIR` or save_pretrained "
               "write it)")


def _is_local(name: str) -> bool:
    return name.startswith(("/", "~", ".", "\\")) or Path(name).expanduser().is_dir() or name.count("/") > 1


def _torch_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise BackendUnavailable(f"re-ranker device {device!r} was asked for but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s); set VITRINE_RERANK__DEVICE")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BackendUnavailable(f"re-ranker device {device!r} was asked for but MPS is not available here")
    return dev


def answer_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids of the vocabulary tokens that spell "yes" and those that spell "no", any case or leading space.

    Raises:
        ConfigError: the vocabulary has no such token for one of the two words.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    found: dict[str, list[int]] = {"yes": [], "no": []}
    for token, index in tokenizer.get_vocab().items():
        word = answer_word(token)
        if word is not None and index not in special:
            found[word].append(index)
    for answer, ids in found.items():
        if not ids:
            raise ConfigError(f"the tokenizer ({type(tokenizer).__name__}) has no token for the answer {answer!r}; "
                              "expected a vocabulary holding 'yes' and 'no' (any case, with or without a "
                              "leading space)")
    return sorted(found["yes"]), sorted(found["no"])


@dataclass(frozen=True)
class _Loaded:
    model: Any
    processor: Any
    yes_ids: torch.Tensor
    no_ids: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    logits_to_keep: bool


class TransformersReranker:
    """A transformers image-text-to-text model behind the `Reranker` protocol.

    Construction stores names only; ``load()`` (or the first ``score``) loads the processor and the weights with
    ``from_pretrained`` (honouring ``HF_HUB_OFFLINE`` and the hub cache).

    Args:
        model_name: a hub name (``ORG/NAME``) or a local folder.
        dtype: fp32, fp16 or bf16.
        device: torch device (unused when ``device_map`` is set).
        device_map: ``from_pretrained``'s device_map (``auto``: spread over the GPUs).
        batch_size: candidates per forward pass.
        image_max_side: images are shrunk to this short side before the processor resizes them its own way.
        model: an already-built model (tests hand in a tiny one); needs ``processor``.
        processor: its processor, with a chat template. Its tokenizer is switched to left padding.
        max_new_tokens: most tokens a product description (``describe_product``) may take.

    Raises:
        ConfigError: an empty name, or a model without a processor.
    """

    def __init__(
        self,
        model_name: str,
        *,
        dtype: Dtype = "fp32",
        device: str = "cpu",
        device_map: str | None = None,
        batch_size: int = 8,
        image_max_side: int = 768,
        model: Any = None,
        processor: Any = None,
        max_new_tokens: int = 160,
    ) -> None:
        model_name = model_name.strip()
        if not model_name:
            raise ConfigError("the transformers re-ranker needs a model: a hub name such as "
                              "llava-hf/llava-v1.6-mistral-7b-hf or a local folder")
        if batch_size < 1:
            raise ConfigError(f"re-ranker batch_size must be at least 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ConfigError(f"re-ranker max_new_tokens must be at least 1, got {max_new_tokens}")
        if dtype not in _DTYPES:
            raise ConfigError(f"re-ranker dtype {dtype!r} is not supported; expected one of {sorted(_DTYPES)}")
        self._local = _is_local(model_name)
        self._source = str(Path(model_name).expanduser().resolve()) if self._local else model_name.strip("/")
        self._dtype_name = dtype
        self._device_name = device
        self._device_map = device_map
        self._batch_size = batch_size
        self._image_max_side = image_max_side
        self._max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._state: _Loaded | None = None
        if model is not None:
            if processor is None:
                raise ConfigError("an injected re-rank model needs its processor too")
            if device_map is None:
                model = model.to(device=_torch_device(device), dtype=_DTYPES[dtype])
            self._state = self._install(model.eval(), processor)

    @property
    def name(self) -> str:
        """The hub name or the absolute folder."""
        return self._source

    def load(self) -> None:
        """Load the processor and the weights (idempotent, thread-safe).

        Raises:
            ModelNotFound: the files are neither local nor downloadable.
            ConfigError: not an image-text-to-text model, or its processor has no chat template.
            BackendUnavailable: the configured device does not exist here.
        """
        if self._state is not None:
            return
        with self._lock:
            if self._state is None:
                self._state = self._load()

    def describe(self) -> dict[str, Any]:
        """Backend, model, device, dtype, batch size and whether the weights are loaded."""
        return {"backend": "transformers", "model": self.name, "loaded": self._state is not None,
                "device": self._device_map or self._device_name, "dtype": self._dtype_name,
                "batch_size": self._batch_size}

    def _missing(self, what: str, error: Exception) -> str:
        where = "folder" if self._local else "hub model"
        return f"re-rank {where} {self._source!r}: {what} ({error}); {_LOCAL_HINT}"

    def _load(self) -> _Loaded:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self._local and not (Path(self._source) / "config.json").is_file():
            raise ModelNotFound(f"re-rank model folder {self._source!r} has no config.json; expected a folder "
                                "written by save_pretrained or `hf download ORG/NAME --local-dir DIR`")
        device = _torch_device(self._device_name) if self._device_map is None else None
        try:
            processor = AutoProcessor.from_pretrained(self._source)  # type: ignore[no-untyped-call]
        except OSError as e:
            raise ModelNotFound(self._missing("its processor files were not found", e)) from e
        except ValueError as e:
            raise ConfigError(f"re-rank model {self._source!r} has a processor transformers cannot load: {e}") from e
        try:
            model: Any = AutoModelForImageTextToText.from_pretrained(
                self._source, dtype=_DTYPES[self._dtype_name], device_map=self._device_map)
        except OSError as e:
            raise ModelNotFound(self._missing("its weights were not found", e)) from e
        except ValueError as e:
            raise ConfigError(f"re-rank model {self._source!r} is not an image-text-to-text model that "
                              f"AutoModelForImageTextToText loads (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics3, ...): "
                              f"{e}") from e
        if device is not None:
            model = model.to(device)
        state = self._install(model.eval(), processor)
        logger.info("loaded re-ranker %s (%s) on %s (%s)", self.name, type(model).__name__, state.device,
                    self._dtype_name)
        return state

    def _install(self, model: Any, processor: Any) -> _Loaded:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(f"the processor of re-rank model {self.name!r} ({type(processor).__name__}) has no "
                              "tokenizer; expected a multimodal processor (AutoProcessor)")
        if not getattr(processor, "chat_template", None):
            raise ConfigError(f"the processor of re-rank model {self.name!r} has no chat template; expected an "
                              "instruction-tuned model whose processor ships one (chat_template.jinja)")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        yes_ids, no_ids = answer_token_ids(tokenizer)
        device = getattr(model, "device", None) or next(model.parameters()).device
        return _Loaded(
            model=model, processor=processor, device=torch.device(device), dtype=model.dtype,
            yes_ids=torch.tensor(yes_ids, device=device), no_ids=torch.tensor(no_ids, device=device),
            logits_to_keep="logits_to_keep" in inspect.signature(model.forward).parameters,
        )

    def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
              deadline: float | None = None) -> list[float]:
        """P(yes) for each candidate, ``batch_size`` candidates per forward pass.

        The deadline is checked before each batch (a forward pass is not interrupted).

        Raises:
            RerankTimeout: the deadline passed before all batches ran.
            RerankFailed: the processor or the model failed (out of memory included).
        """
        items = check_candidates(candidates)
        if not items:
            return []
        _check_deadline(deadline, self.name, 0, len(items))
        self.load()
        state = self._state
        assert state is not None
        scores: list[float] = []
        with self._turn(deadline, len(items)):
            for start in range(0, len(items), self._batch_size):
                _check_deadline(deadline, self.name, start, len(items))
                scores.extend(self._score_batch(state, query, items[start:start + self._batch_size]))
        return scores

    @contextlib.contextmanager
    def _turn(self, deadline: float | None, count: int) -> Iterator[None]:
        """One request on the model at a time; waiting for the turn counts against the deadline."""
        timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._run_lock.acquire(timeout=timeout):
            raise RerankTimeout(f"re-ranker {self.name!r} was busy with other requests until the deadline; "
                                f"0 of {count} candidates scored")
        try:
            yield
        finally:
            self._run_lock.release()

    def _content(self, prompt: list[Part]) -> list[dict[str, Any]]:
        return [{"type": "text", "text": part} if isinstance(part, str)
                else {"type": "image", "image": fit_short_side(part, self._image_max_side)} for part in prompt]

    def _score_batch(self, state: _Loaded, query: RerankQuery, batch: Sequence[Candidate]) -> list[float]:
        conversations = [[{"role": "user", "content": self._content(parts(query, item))}] for item in batch]
        try:
            inputs = state.processor.apply_chat_template(
                conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                processor_kwargs={"padding": True}, sanitize_control_tokens=True,
            ).to(device=state.device, dtype=state.dtype)
            extra = {"logits_to_keep": 1} if state.logits_to_keep else {}
            with torch.inference_mode():
                logits = state.model(**inputs, **extra).logits[:, -1, :].float()
            yes = torch.logsumexp(logits[:, state.yes_ids], dim=-1)
            no = torch.logsumexp(logits[:, state.no_ids], dim=-1)
            probabilities = torch.sigmoid(yes - no)
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
            raise RerankFailed(f"re-ranker {self.name!r} failed on a batch of {len(batch)} candidates "
                               f"({batch[0].product_id!r}, ...): {type(e).__name__}: {e}") from e
        if not bool(torch.isfinite(probabilities).all()):
            raise RerankFailed(f"re-ranker {self.name!r} gave non-finite scores for a batch starting at "
                               f"{batch[0].product_id!r} (fp16 overflow? try VITRINE_RERANK__DTYPE=bf16)")
        return [float(p) for p in probabilities.cpu()]

    def describe_product(self, item: Candidate, *, deadline: float | None = None) -> Description:
        """A description of ``item`` (`rerank.describe.Describer`): greedy generation, parsed line by line.

        Generation stops at ``max_new_tokens`` or at the deadline (``generate``'s ``max_time``); a cut answer is
        parsed like any other.

        Raises:
            RerankTimeout: the deadline passed before generation began.
            RerankFailed: the model failed, or its answer holds no usable description (`rerank.describe`).
        """
        check_candidates([item])
        _check_deadline(deadline, self.name, 0, 1)
        self.load()
        state = self._state
        assert state is not None
        with self._turn(deadline, 1):
            answer = self._generate(state, item, deadline)
        try:
            return parse_lines(answer)
        except ValueError as e:
            raise RerankFailed(f"model {self.name!r} gave no usable description of product {item.product_id!r}: "
                               f"{e}") from e

    def _generate(self, state: _Loaded, item: Candidate, deadline: float | None) -> str:
        conversation = [{"role": "user", "content": self._content(describe_parts(item))}]
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            inputs = state.processor.apply_chat_template(
                [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                processor_kwargs={"padding": True}, sanitize_control_tokens=True,
            ).to(device=state.device, dtype=state.dtype)
            tokenizer = state.processor.tokenizer
            with torch.inference_mode():
                output = state.model.generate(
                    **inputs, max_new_tokens=self._max_new_tokens, do_sample=False, max_time=left,
                    pad_token_id=tokenizer.pad_token_id)
            answer: str = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
            raise RerankFailed(f"model {self.name!r} failed to describe product {item.product_id!r}: "
                               f"{type(e).__name__}: {e}") from e
        return answer


def _check_deadline(deadline: float | None, name: str, done: int, total: int) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise RerankTimeout(f"re-ranker {name!r} ran out of time: {done} of {total} candidates scored before "
                            "the deadline")


def build(settings: RerankSettings) -> TransformersReranker:
    """The transformers re-ranker named by ``settings.model`` (not loaded yet)."""
    return TransformersReranker(
        settings.model or "", dtype=settings.dtype, device=settings.device, device_map=settings.device_map,
        batch_size=settings.batch_size, image_max_side=settings.image_max_side,
        max_new_tokens=settings.describe_max_tokens,
    )

"""The transformers re-ranker on a tiny random LLaVA: the real processor, chat template and forward pass."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError, ModelNotFound, RerankTimeout
from rerank.hf_backend import TransformersReranker, answer_token_ids
from rerank.protocol import Candidate, RerankQuery
from tests.unit.rerank.conftest import product_image

CANDIDATES = [
    Candidate("p1", "white running shoes", product_image((240, 240, 240))),
    Candidate("p2", "red summer dress with a long description of the dress and its leather bag and boots",
              product_image((200, 20, 20), (120, 80))),
    Candidate("p3", "blue jeans", None),
    Candidate("p4", "black leather bag", product_image((10, 10, 10), (30, 90))),
    Candidate("p5", "sneakers", product_image((20, 20, 200))),
]
QUERY = RerankQuery(text="white sneakers for running")


@pytest.fixture
def reranker(tiny_llava_parts: tuple[Any, Any]) -> TransformersReranker:
    model, processor = tiny_llava_parts
    return TransformersReranker("tiny-llava", model=model, processor=processor, batch_size=4)


def _one_by_one(reranker: TransformersReranker, query: RerankQuery) -> list[float]:
    return [reranker.score(query, [item])[0] for item in CANDIDATES]


def test_scores_are_probabilities_batched_like_one_by_one(reranker: TransformersReranker) -> None:
    batched = reranker.score(QUERY, CANDIDATES)
    assert len(batched) == len(CANDIDATES)
    assert all(0.0 <= s <= 1.0 for s in batched)
    assert len({round(s, 6) for s in batched}) > 1, "a random model still tells different candidates apart"
    assert batched == pytest.approx(_one_by_one(reranker, QUERY), abs=1e-4)


def test_scores_are_deterministic(reranker: TransformersReranker) -> None:
    assert reranker.score(QUERY, CANDIDATES) == reranker.score(QUERY, CANDIDATES)


def test_padding_does_not_change_a_score(reranker: TransformersReranker) -> None:
    short = Candidate("s", "bag", product_image((90, 60, 30)))
    long = Candidate("l", "a long description " * 12 + "of a summer dress", product_image((90, 60, 30)))
    alone = reranker.score(QUERY, [short])[0]
    padded = reranker.score(QUERY, [long, short, long])[1]
    assert padded == pytest.approx(alone, abs=1e-4)


def test_query_image_is_a_second_image(reranker: TransformersReranker) -> None:
    query = RerankQuery(text="like this but in red", image=product_image((240, 240, 240), (800, 600)))
    batched = reranker.score(query, CANDIDATES)
    assert batched == pytest.approx(_one_by_one(reranker, query), abs=1e-4)
    assert batched != reranker.score(QUERY, CANDIDATES)
    image_only = reranker.score(RerankQuery(image=query.image), CANDIDATES[:2])
    assert all(0.0 <= s <= 1.0 for s in image_only)


def test_control_tokens_in_user_text_are_plain_text(reranker: TransformersReranker) -> None:
    tricky = RerankQuery(text="<image> <s> shoes")
    scores = reranker.score(tricky, [Candidate("x", "<image> white shoes", product_image((1, 2, 3)))])
    assert 0.0 <= scores[0] <= 1.0


def test_no_candidates_no_work(reranker: TransformersReranker) -> None:
    assert reranker.score(QUERY, []) == []


def test_a_passed_deadline_raises_a_timeout(reranker: TransformersReranker) -> None:
    with pytest.raises(RerankTimeout, match="0 of 5"):
        reranker.score(QUERY, CANDIDATES, deadline=time.monotonic() - 1)


def test_answer_tokens_are_found_in_the_vocabulary(tiny_llava_parts: tuple[Any, Any]) -> None:
    _, processor = tiny_llava_parts
    vocab = processor.tokenizer.get_vocab()
    yes, no = answer_token_ids(processor.tokenizer)
    assert set(yes) == {vocab["yes"], vocab["Yes"]}
    assert set(no) == {vocab["no"], vocab["No"]}


def test_loads_by_folder_like_a_hub_download(tiny_llava_dir: Path, tiny_llava_parts: tuple[Any, Any]) -> None:
    by_path = TransformersReranker(str(tiny_llava_dir), batch_size=4)
    assert by_path.describe()["loaded"] is False
    by_path.load()
    assert by_path.describe()["loaded"] is True
    assert by_path.name == str(tiny_llava_dir.resolve())
    model, processor = tiny_llava_parts
    in_memory = TransformersReranker("tiny-llava", model=model, processor=processor)
    assert by_path.score(QUERY, CANDIDATES) == pytest.approx(in_memory.score(QUERY, CANDIDATES), abs=1e-5)


def test_loads_by_hub_name_from_the_hub_cache(offline_hub: Path, tiny_llava_parts: tuple[Any, Any]) -> None:
    by_name = TransformersReranker("acme/tiny-llava")
    assert by_name.name == "acme/tiny-llava"
    model, processor = tiny_llava_parts
    in_memory = TransformersReranker("tiny-llava", model=model, processor=processor)
    assert by_name.score(QUERY, CANDIDATES[:2]) == pytest.approx(in_memory.score(QUERY, CANDIDATES[:2]), abs=1e-5)
    with pytest.raises(ModelNotFound, match="acme/not-there"):
        TransformersReranker("acme/not-there").load()


def test_half_precision_runs(tiny_llava_dir: Path) -> None:
    reranker = TransformersReranker(str(tiny_llava_dir), dtype="bf16", batch_size=2)
    scores = reranker.score(QUERY, CANDIDATES)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert reranker.describe()["dtype"] == "bf16"


def test_missing_folder_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        TransformersReranker(str(tmp_path)).load()


def test_a_processor_without_chat_template_is_refused(tiny_llava_parts: tuple[Any, Any]) -> None:
    model, processor = tiny_llava_parts
    from transformers import LlavaProcessor

    bare = LlavaProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer,
                          patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    with pytest.raises(ConfigError, match="chat template"):
        TransformersReranker("tiny", model=model, processor=bare)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        TransformersReranker("  ")
    with pytest.raises(ConfigError, match="batch_size"):
        TransformersReranker("org/name", batch_size=0)

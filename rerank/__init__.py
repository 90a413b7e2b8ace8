"""Vision-language re-rankers (a local transformers model, or an OpenAI-compatible API).

``build_reranker(settings.rerank)`` gives the configured `Reranker` (or ``None``); its
``score(query, candidates, deadline=...)`` returns one relevance in [0, 1] per candidate.
``build_describer(settings.rerank)`` gives the same backend as a `Describer` of products (``vitrine enrich``).
See docs/rerank.md.
"""

from rerank.cache import CachedReranker, ScoreCache
from rerank.describe import Describer, Description
from rerank.protocol import Candidate, Reranker, RerankQuery
from rerank.registry import build_describer, build_reranker, known_backends

__all__ = ["CachedReranker", "Candidate", "Describer", "Description", "RerankQuery", "Reranker", "ScoreCache",
           "build_describer", "build_reranker", "known_backends"]

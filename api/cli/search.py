"""``vitrine search``: search the indexed catalog by text, by an image file, or both."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from api.cli.options import add_filter_options, cell, filter_fields, read_image_file
from api.wiring import open_search
from common.errors import InvalidInput
from common.images import decode_image
from common.product import GENERATED_FIELD
from common.settings import Settings
from search.query import DEFAULT_LIMIT, SearchResponse, build_fields, build_request

EXIT_BAD_QUERY = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``search`` subcommand."""
    parser = subparsers.add_parser(
        "search", help="search the catalog by text and/or image",
        description="Search the indexed catalog. TEXT, --image, --like, --image-url, or several: the query "
                    "vector is the normalised weighted sum of their embeddings (weight 1 each; --not parts get "
                    "settings search.negative_weight, -0.5: they push results away). Scores: fused = w_image * "
                    "image + w_text * text (cosines) + w_lexical * lexical (BM25 over the best) + tag boost.",
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="query text (optional with --image)")
    parser.add_argument("--image", type=Path, metavar="PATH", help="query image file")
    parser.add_argument("--not", action="append", default=[], metavar="TEXT", dest="negatives",
                        help="words the results should not look like ('leather'); repeatable")
    parser.add_argument("--like", action="append", default=[], metavar="PRODUCT_ID",
                        help="a catalog product the results should look like; repeatable")
    parser.add_argument("--image-url", action="append", default=[], metavar="URL",
                        help="an http(s) image to search with (public hosts only); repeatable")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help="results to show (default %(default)s)")
    parser.add_argument("--offset", type=int, default=0, help="results to skip (default %(default)s)")
    add_filter_options(parser)
    parser.add_argument("--w-image", type=float, metavar="W", help="weight of the image index (default: "
                        "settings search.w_image)")
    parser.add_argument("--w-text", type=float, metavar="W", help="weight of the text index (default: "
                        "settings search.w_text)")
    parser.add_argument("--w-lexical", type=float, metavar="W", help="weight of the lexical (BM25) match "
                        "(default: settings search.w_lexical)")
    parser.add_argument("--group", action=argparse.BooleanOptionalAction, default=None,
                        help="collapse variants sharing a group_id (default: settings search.group_variants)")
    parser.add_argument("--min-score", type=float, metavar="R", help="drop results of relevance under R (0-1)")
    parser.add_argument("--facet", action="append", default=[], metavar="FIELD",
                        help="count this field's values among the results; repeatable")
    parser.add_argument("--rerank", action="store_true", help="re-rank the first results with the "
                        "vision-language model of settings rerank (VITRINE_RERANK__BACKEND, __MODEL; docs/rerank.md)")
    parser.add_argument("--rerank-top-n", type=int, metavar="N", help="results to re-rank (default: settings "
                        "rerank.top_n)")
    parser.add_argument("--model", help="encoder name; must be the one the collection was built with "
                        "(default: the collection's)")
    parser.add_argument("--collection", help="collection to search (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="print the HTTP API's JSON instead of a table")
    parser.set_defaults(func=run)


def _fields(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    fields: dict[str, Any] = {"q": args.text, "limit": args.limit, "offset": args.offset, **filter_fields(args)}
    for name in ("w_image", "w_text", "w_lexical", "group", "min_score"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    parts = [{"text": text, "weight": settings.search.negative_weight} for text in args.negatives]
    parts += [{"product_id": pid} for pid in args.like] + [{"image_url": url} for url in args.image_url]
    if parts:
        fields["query"] = parts
    if args.facet:
        fields["facets"] = args.facet
    return fields


def _read_image(path: Path, settings: Settings) -> Image.Image:
    return decode_image(read_image_file(path, settings), max_pixels=settings.indexer.max_image_pixels,
                        source=str(path))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one search and print the results; exit status 2 for a bad query or image."""
    try:
        fields = build_fields(_fields(args, settings), settings=settings.search)
        image = _read_image(args.image, settings) if args.image is not None else None
        request = build_request(fields, settings=settings.search, image=image)
    except InvalidInput as e:
        print(f"vitrine search: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    if args.rerank_top_n is not None and not 1 <= args.rerank_top_n <= settings.search.max_limit:
        print(f"vitrine search: --rerank-top-n {args.rerank_top_n} must be between 1 and "
              f"{settings.search.max_limit} (setting search.max_limit)", file=sys.stderr)
        return EXIT_BAD_QUERY
    components = open_search(settings, model=args.model, collection=args.collection, rerank=args.rerank)
    try:
        if components.reranking is not None:
            response = components.reranking.search(components.service, request, top_n=args.rerank_top_n)
        else:
            response = components.service.search(request)
    except InvalidInput as e:  # a product or an image URL of the query that cannot be used
        print(f"vitrine search: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    finally:
        components.close()
    print(response.model_dump_json(indent=2, exclude_unset=True) if args.json else format_table(response))
    return 0


def format_table(response: SearchResponse) -> str:
    """The results as an aligned text table with a one-line summary."""
    weights = response.weights
    summary = (f"{len(response.results)} result(s) from {response.total_candidates} candidates in "
               f"{response.took_ms:.1f} ms (weights: image {weights.image:g}, text {weights.text:g}, "
               f"lexical {weights.lexical:g})")
    extra = [f"boosted tags: {', '.join(f'{b.attribute}={b.value} ({b.weight:+g})' for b in response.boosts)}"
             ] if response.boosts else []
    for name, counts in (response.facets or {}).items():
        if counts:
            extra.append(f"{name}: " + ", ".join(f"{c.value} ({c.count})" for c in counts))
    if response.rerank is not None:
        info = response.rerank
        extra.append(f"re-ranked the top {info.top_n} with {info.model} in {info.took_ms:.0f} ms (weight "
                     f"{info.weight:g})" if response.reranked else f"not re-ranked: {info.reason}")
    if response.no_good_match:
        return "\n".join(["no good match: nothing in the catalog is close enough to this query", *extra, summary])
    if not response.results:
        return "\n".join([f"no results; {summary}", *extra])
    vlm = bool(response.reranked)
    header = (f"{'#':>3}  {'score':>7}  {'relev':>6}  {'image':>7}  {'text':>7}  {'lex':>5}  "
              f"{'vlm  ' if vlm else ''}{'id':<16}  {'title':<36}  {'price':>12}  {'brand':<14}  category")
    lines = [header]
    models: set[str] = set()
    for rank, hit in enumerate(response.results, start=response.offset + 1):
        product = hit.product
        price = "" if product.price is None else f"{product.price:.2f} {product.currency or ''}".strip()
        image = "-" if hit.scores.image is None else f"{hit.scores.image:.4f}"
        text = "-" if hit.scores.text is None else f"{hit.scores.text:.4f}"
        lexical = "-" if hit.scores.lexical is None else f"{hit.scores.lexical:.2f}"
        relevance = "-" if hit.relevance is None else f"{hit.relevance:.3f}"
        variants = f" (+{len(hit.variants)} variants)" if hit.variants else ""
        generated = (product.model_extra or {}).get(GENERATED_FIELD)
        if isinstance(generated, dict):
            models.add(str(generated.get("model")))
        judged = ("-    " if hit.rerank is None else f"{hit.rerank.vlm:.2f} ") if vlm else ""
        lines.append(f"{rank:>3}  {hit.score:>7.4f}  {relevance:>6}  {image:>7}  {text:>7}  {lexical:>5}  "
                     f"{judged}{cell(hit.id, 16):<16}  "
                     f"{cell(product.title, 35) + ('*' if isinstance(generated, dict) else ''):<36}  {price:>12}  "
                     f"{cell(product.brand, 14):<14}  {cell(product.category, 24)}{variants}")
    if models:
        extra.insert(0, f"* description generated by {', '.join(sorted(models))} (vitrine enrich)")
    return "\n".join([*lines, *extra, summary])

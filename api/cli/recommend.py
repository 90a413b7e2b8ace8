"""``vitrine recommend``: products like some products and unlike others (the engine's recommendation query)."""

from __future__ import annotations

import argparse
import sys

from api.cli.options import add_filter_options, cell, filter_fields
from api.wiring import open_search
from common.errors import InvalidInput
from common.settings import Settings
from search.query import DEFAULT_LIMIT, SimilarResponse, build_fields

EXIT_BAD_QUERY = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``recommend`` subcommand."""
    parser = subparsers.add_parser(
        "recommend", help="recommend products like some and unlike others",
        description="Products whose image is close to one of the POSITIVE products and not closer to a --not "
                    "product (Qdrant's recommendation query, best-score strategy); the given products are "
                    "left out.",
    )
    parser.add_argument("positive", nargs="+", metavar="POSITIVE", help="ids of products the shopper liked")
    parser.add_argument("--not", action="append", default=[], dest="negative", metavar="PRODUCT_ID",
                        help="a product the shopper did not like; repeatable")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="products to show (default %(default)s)")
    add_filter_options(parser)
    parser.add_argument("--collection", help="collection (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="print the HTTP API's JSON")
    parser.set_defaults(func=run)


def format_recommendations(response: SimilarResponse) -> str:
    """The recommendations as an aligned table."""
    if not response.results:
        return "no recommendations"
    lines = [f"{'#':>3}  {'score':>7}  {'id':<16}  {'title':<40}  category"]
    for rank, hit in enumerate(response.results, start=1):
        lines.append(f"{rank:>3}  {hit.score:>7.4f}  {cell(hit.id, 16):<16}  {cell(hit.product.title, 40):<40}  "
                     f"{cell(hit.product.category, 24)}")
    lines.append(f"{len(response.results)} recommendation(s) in {response.took_ms:.1f} ms")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the recommendations; exit status 2 for an unknown product or a bad value."""
    try:
        fields = build_fields(filter_fields(args), settings=settings.search)
    except InvalidInput as e:
        print(f"vitrine recommend: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    components = open_search(settings, collection=args.collection)
    try:
        response = components.service.recommend(positive=args.positive, negative=args.negative, limit=args.limit,
                                                request=fields)
    except InvalidInput as e:
        print(f"vitrine recommend: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    finally:
        components.close()
    print(response.model_dump_json(indent=2, exclude_unset=True) if args.json else format_recommendations(response))
    return 0

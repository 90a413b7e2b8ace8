"""``vitrine facets``: how many products have each value of a field, over the catalog or under filters."""

from __future__ import annotations

import argparse
import json
import sys

from api.cli.options import add_filter_options, filter_fields
from api.wiring import open_search
from common.errors import InvalidInput
from common.settings import Settings
from search.query import build_fields, check_field_name

EXIT_BAD_QUERY = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``facets`` subcommand."""
    parser = subparsers.add_parser(
        "facets", help="count the values of a field",
        description="The most common values of FIELD (category, brand, group_id, tags.<attribute>, or another "
                    "indexed field) with exact counts, over the whole catalog or the products matching the "
                    "filters.",
    )
    parser.add_argument("field", metavar="FIELD", help="the field to count")
    parser.add_argument("--limit", type=int, default=20, help="most values shown (default %(default)s)")
    add_filter_options(parser)
    parser.add_argument("--collection", help="collection (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the counts; exit status 2 for a field without an index or a bad value."""
    try:
        check_field_name(args.field, what="field")
        fields = build_fields(filter_fields(args), settings=settings.search)
    except (InvalidInput, ValueError) as e:
        print(f"vitrine facets: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    components = open_search(settings, collection=args.collection)
    try:
        counts = components.service.facets(args.field, request=fields, limit=args.limit)
    except InvalidInput as e:
        print(f"vitrine facets: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    finally:
        components.close()
    if args.json:
        print(json.dumps([c.model_dump() for c in counts], ensure_ascii=False))
    else:
        width = max((len(str(c.value)) for c in counts), default=5)
        print("\n".join(f"{c.value!s:<{width}}  {c.count:>7}" for c in counts) or f"no values of {args.field!r}")
    return 0

"""``vitrine search``: search the indexed catalog by text, by an image file, or both."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from api.wiring import open_search
from common.errors import ImageTooLarge, InvalidInput
from common.images import decode_image
from common.settings import Settings
from search.filters import parse_filter_option
from search.query import DEFAULT_LIMIT, SearchResponse, build_fields, build_request

EXIT_BAD_QUERY = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``search`` subcommand."""
    parser = subparsers.add_parser(
        "search", help="search the catalog by text and/or image",
        description="Search the indexed catalog. TEXT, --image or both (the query is then their normalised "
                    "mean). Scores: fused = w_image * image + w_text * text (cosine similarities).",
    )
    parser.add_argument("text", nargs="?", metavar="TEXT", help="query text (optional with --image)")
    parser.add_argument("--image", type=Path, metavar="PATH", help="query image file")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help="results to show (default %(default)s)")
    parser.add_argument("--offset", type=int, default=0, help="results to skip (default %(default)s)")
    parser.add_argument("--category", help="only this category")
    parser.add_argument("--brand", help="only this brand")
    parser.add_argument("--min-price", type=float, metavar="PRICE", help="lowest price, inclusive")
    parser.add_argument("--max-price", type=float, metavar="PRICE", help="highest price, inclusive")
    parser.add_argument("--in-stock", action=argparse.BooleanOptionalAction, default=None,
                        help="only products in stock (--in-stock) or out of stock (--no-in-stock)")
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE", dest="filters",
                        help="any payload field by equality (string value); repeatable")
    parser.add_argument("--w-image", type=float, metavar="W", help="weight of the image index (default: "
                        "settings search.w_image)")
    parser.add_argument("--w-text", type=float, metavar="W", help="weight of the text index (default: "
                        "settings search.w_text)")
    parser.add_argument("--model", help="encoder name; must be the one the collection was built with "
                        "(default: the collection's)")
    parser.add_argument("--collection", help="collection to search (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="print the HTTP API's JSON instead of a table")
    parser.set_defaults(func=run)


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"q": args.text, "limit": args.limit, "offset": args.offset}
    for name in ("category", "brand", "min_price", "max_price", "in_stock", "w_image", "w_text"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.filters:
        try:
            fields["filters"] = dict(parse_filter_option(option) for option in args.filters)
        except ValueError as e:
            raise InvalidInput(f"--filter: {e}") from e
    return fields


def _read_image(path: Path, settings: Settings) -> Image.Image:
    if not path.is_file():
        raise InvalidInput(f"--image {str(path)!r} is not a file; expected an image file (JPEG, PNG, "
                           "WebP, ...)")
    limit = settings.indexer.max_image_bytes
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"--image {str(path)!r} is over {limit} bytes (setting indexer.max_image_bytes)")
    return decode_image(data, max_pixels=settings.indexer.max_image_pixels, source=str(path))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one search and print the results; exit status 2 for a bad query or image."""
    try:
        fields = build_fields(_fields(args), settings=settings.search)
        image = _read_image(args.image, settings) if args.image is not None else None
        request = build_request(fields, settings=settings.search, image=image)
    except InvalidInput as e:
        print(f"vitrine search: {e}", file=sys.stderr)
        return EXIT_BAD_QUERY
    components = open_search(settings, model=args.model, collection=args.collection)
    try:
        response = components.service.search(request)
    finally:
        components.close()
    print(response.model_dump_json(indent=2, exclude_unset=True) if args.json else format_table(response))
    return 0


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(response: SearchResponse) -> str:
    """The results as an aligned text table with a one-line summary."""
    summary = (f"{len(response.results)} result(s) from {response.total_candidates} candidates in "
               f"{response.took_ms:.1f} ms (weights: image {response.weights.image:g}, "
               f"text {response.weights.text:g})")
    if not response.results:
        return f"no results; {summary}"
    header = (f"{'#':>3}  {'score':>7}  {'image':>7}  {'text':>7}  {'id':<16}  {'title':<36}  "
              f"{'price':>12}  {'brand':<14}  category")
    lines = [header]
    for rank, hit in enumerate(response.results, start=response.offset + 1):
        product = hit.product
        price = "" if product.price is None else f"{product.price:.2f} {product.currency or ''}".strip()
        image = "-" if hit.scores.image is None else f"{hit.scores.image:.4f}"
        text = "-" if hit.scores.text is None else f"{hit.scores.text:.4f}"
        lines.append(f"{rank:>3}  {hit.score:>7.4f}  {image:>7}  {text:>7}  {_cell(hit.id, 16):<16}  "
                     f"{_cell(product.title, 36):<36}  {price:>12}  {_cell(product.brand, 14):<14}  "
                     f"{_cell(product.category, 24)}")
    return "\n".join([*lines, summary])

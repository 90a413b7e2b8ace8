"""Command-line pieces the query commands share: the filter options, table cells, and reading --image files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.errors import ImageTooLarge, InvalidInput
from common.settings import Settings
from search.filters import parse_filter_option

FILTER_FIELDS = ("category", "brand", "min_price", "max_price", "in_stock")


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """Add --category, --brand, --min-price, --max-price, --in-stock/--no-in-stock and --filter (repeatable)."""
    parser.add_argument("--category", help="only this category")
    parser.add_argument("--brand", help="only this brand")
    parser.add_argument("--min-price", type=float, metavar="PRICE", help="lowest price, inclusive")
    parser.add_argument("--max-price", type=float, metavar="PRICE", help="highest price, inclusive")
    parser.add_argument("--in-stock", action=argparse.BooleanOptionalAction, default=None,
                        help="only products in stock (--in-stock) or out of stock (--no-in-stock)")
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE", dest="filters",
                        help="any payload field by equality (string value); repeatable")


def filter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields of the filter options given (see `add_filter_options`).

    Raises:
        InvalidInput: a --filter that is not FIELD=VALUE.
    """
    fields: dict[str, Any] = {name: getattr(args, name) for name in FILTER_FIELDS if getattr(args, name) is not None}
    if args.filters:
        try:
            fields["filters"] = dict(parse_filter_option(option) for option in args.filters)
        except ValueError as e:
            raise InvalidInput(f"--filter: {e}") from e
    return fields


def cell(value: Any, width: int) -> str:
    """``value`` as text cut to ``width`` characters (an ellipsis marks the cut); None as empty."""
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_image_file(path: Path, settings: Settings, *, option: str = "--image") -> bytes:
    """The bytes of an image file given on the command line, read up to the limit of settings
    indexer.max_image_bytes.

    Raises:
        InvalidInput: not a file.
        ImageTooLarge: over the limit.
    """
    if not path.is_file():
        raise InvalidInput(f"{option} {str(path)!r} is not a file; expected an image file (JPEG, PNG, WebP, ...)")
    limit = settings.indexer.max_image_bytes
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"{option} {str(path)!r} is over {limit} bytes (setting indexer.max_image_bytes)")
    return data

"""Entry point of the ``vitrine`` console script.

Each subcommand lives in its own module under ``api/cli/`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a function ``(args, settings) -> int`` returning the exit status.

Exit statuses: 0 success, 2 bad usage or settings, 3 some catalog rows rejected (reported), 1 any other
failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from common.errors import ConfigError, VitrineError
from common.logging import setup_logging
from common.settings import load_settings

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3

# Subcommand modules, in the order `vitrine --help` lists them.
COMMANDS: tuple[str, ...] = (
    "api.cli.index",
    "api.cli.reindex",
    "api.cli.search",
    "api.cli.recommend",
    "api.cli.facets",
    "api.cli.serve",
    "api.cli.info",
    "api.cli.dedup",
    "api.cli.similar",
    "api.cli.enrich",
    "api.cli.generate",
    "api.cli.train",
    "api.cli.eval",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="vitrine", description="Multimodal product search.")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None,
                        help="logging level (default: settings' log_level, INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"vitrine: {e}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level or settings.log_level, settings.log_format)
    try:
        status: int = args.func(args, settings)
    except ConfigError as e:
        print(f"vitrine: {e}", file=sys.stderr)
        return EXIT_USAGE
    except VitrineError as e:
        print(f"vitrine: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("vitrine: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())

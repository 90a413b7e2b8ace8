"""``vitrine serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import argparse
import logging

from common.settings import Settings

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve", help="serve the HTTP API",
        description="Serve the search API (GET /health, /ready, /search, /products/{id}; POST /search, "
                    "/search/image). The model and the store load in the background; /ready says when done.",
    )
    parser.add_argument("--host", help="interface to listen on (default: settings api.host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: settings api.port)")
    parser.add_argument("--model", help="encoder name; must be the one the collection was built with "
                        "(default: the collection's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted."""
    import uvicorn

    from api.app import create_app  # FastAPI is imported only by the command that needs it

    host = args.host or settings.api.host
    port = settings.api.port if args.port is None else args.port
    app = create_app(settings, model=args.model)
    logger.info("serving on http://%s:%d (API docs at /docs)", host, port)
    # log_config=None: uvicorn's loggers go through the handler the CLI set up; access_log=False: the app's own
    # access log (logger vitrine.access, `api.observability`) replaces uvicorn's, with the request id and no
    # query string.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)
    return 0

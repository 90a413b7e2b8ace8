"""The edges: the FastAPI app, its routes and the ``vitrine`` command line. Nothing imports this package."""

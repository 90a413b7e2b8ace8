"""The ``vitrine`` command line: one console script, one module per subcommand, each a thin wrapper."""

"""Shared foundations: settings, the Product schema, errors, logging set-up, image decoding.

Nothing here imports any other Vitrine package.
"""

"""Fine-tuning: contrastive alignment of an image tower to a frozen text tower (``vitrine train``).

May import common, embed and indexer; only api imports it.
"""

"""The vector store: one Qdrant collection per catalog, behind an alias, over two interchangeable backends
(Qdrant's embedded engine in VITRINE_HOME, or a Qdrant server through qdrant-client)."""

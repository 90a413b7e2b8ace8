"""Catalog ingestion: readers, image fetching and decoding, the batch pipeline, incremental state."""

"""Catalog ingestion: read -> validate -> fetch + decode + preprocess (worker processes) -> embed -> upsert.

Modules: `readers` (JSON Lines, CSV, Parquet; validation), `fetch` (local paths confined to allowed
folders, http(s) with retries and limits), `worker` (image preparation in worker processes), `state`
(content hashes for incremental runs), `tagging` (zero-shot attribute tags from the image vectors),
`stages` (the reader, embedder and writer stages), `report`
(rejected-rows report, summary, job record) and `pipeline` (`index_catalog`, the entry point).
"""

"""Settings: environment variables (prefix ``VITRINE_``, groups nested with ``__``) and an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the TOML file named by
``VITRINE_CONFIG`` (or ``./vitrine.toml`` when it exists), then the defaults below.

Examples:
    ``VITRINE_HOME=/var/lib/vitrine``, ``VITRINE_EMBED__DEVICE=cuda:1``, ``VITRINE_STORE__URL=http://qdrant:6333``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Dtype = Literal["fp32", "fp16", "bf16"]

_CONFIG_ENV = "VITRINE_CONFIG"
_DEFAULT_CONFIG_FILE = Path("vitrine.toml")


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_device(value: str) -> str:
    kind, _, index = value.partition(":")
    if kind not in {"cpu", "cuda", "mps", "xpu"} or (index and not index.isdigit()):
        raise ValueError(f"device {value!r} is not a torch device; expected cpu, cuda, cuda:N, mps or xpu")
    return value


TorchDevice = Annotated[str, AfterValidator(_check_device)]
"""A torch device name: cpu, cuda, cuda:N, mps or xpu."""


class EmbedSettings(_Group):
    """Which encoder to run and where."""

    model: str = Field("demo", description="Encoder name: open_clip:ARCH/TAG, open_clip:hf-hub:ORG/NAME, "
                       "hf:ORG/NAME, a local directory or file, or demo.")
    device: TorchDevice = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps.")
    dtype: Dtype = Field("fp32", description="Weights and activations: fp32, fp16 or bf16.")
    batch_size: int = Field(32, ge=1, le=4096, description="Images or texts per forward pass.")
    compile: bool = Field(False, description="Compile the image tower with torch.compile (open_clip; slower "
                          "start, faster steady state on GPUs; off by default).")


class StoreSettings(_Group):
    """The vector store: embedded engine (default) or a Qdrant server."""

    url: str | None = Field(None, description="Qdrant server URL; unset means the embedded engine in VITRINE_HOME.")
    api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    collection: str = Field("products", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                            description="Collection (alias) that holds the catalog.")
    hnsw_m: int = Field(16, ge=4, le=128, description="HNSW edges per node.")
    hnsw_ef_construct: int = Field(128, ge=8, le=4096, description="HNSW build-time candidate list.")
    hnsw_ef: int = Field(128, ge=8, le=4096, description="HNSW search-time candidate list.")
    timeout_s: float = Field(10.0, gt=0, description="Request timeout against a Qdrant server, seconds.")
    prefer_grpc: bool = Field(False, description="Qdrant server URLs (http(s)://): talk to the server over gRPC "
                              "on grpc_port (binary protobuf over one HTTP/2 connection; less overhead per search "
                              "than REST) instead of REST on the URL's port. Ignored by the embedded engine and "
                              "qdrant-client's local mode (':memory:', 'path:DIR').")
    grpc_port: int = Field(6334, ge=1, le=65535, description="With prefer_grpc: the Qdrant server's gRPC port "
                           "(on the URL's host; Qdrant's default is 6334, REST 6333).")
    quantization: Literal["none", "int8"] = Field(
        "int8", description="Compression of the dense vectors of collections created from now on (existing ones "
        "keep theirs; `vitrine info` shows it): int8 (scalar quantization, 4x smaller, searched with rescoring "
        "by the original vectors; recall@10 vs exact search in docs/benchmarks.md) or none. Both backends.")
    quantization_quantile: float = Field(0.99, ge=0.5, le=1.0, description="int8 quantization: the quantile of "
                                         "the vector components that bounds the int8 range (outliers clipped).")
    quantization_always_ram: bool = Field(True, description="int8 quantization: keep the quantized vectors in RAM.")
    on_disk_vectors: bool = Field(True, description="With quantization: keep the original float vectors on disk "
                                  "(memory-mapped), read only to rescore the best candidates; without "
                                  "quantization the originals stay in RAM.")
    rescore: bool = Field(True, description="Quantized collections: re-score the candidates found with the "
                          "quantized vectors by the original ones.")
    oversampling: float = Field(2.0, ge=1.0, le=16.0, description="Quantized collections: candidates fetched with "
                                "the quantized vectors per result asked, before rescoring.")
    shard_number: int | None = Field(None, ge=1, le=1024, description="Qdrant server only: shards of a new "
                                     "collection, a multiple of the cluster's nodes (unset: the server's default, "
                                     "one per node; docker-compose.cluster.yml sets 6 for its 3 nodes).")
    replication_factor: int = Field(1, ge=1, le=16, description="Qdrant server only: copies of each shard of a "
                                    "new collection (docker-compose.cluster.yml sets 2).")
    write_consistency_factor: int = Field(1, ge=1, le=16, description="Qdrant server only: replicas that must "
                                          "apply a write before it returns (at most replication_factor).")

    point_cache: int = Field(20_000, ge=0, le=10_000_000, description="Embedded store: products (payload and "
                             "dense vectors) kept in memory between searches, least recently used dropped first "
                             "(about 4 KB plus 8 bytes per dimension each), so a search reads from the engine "
                             "only the products it did not see lately and scores the others itself. 0: off.")
    search_threads: int = Field(1, ge=0, le=256, description="Embedded store: threads of each collection's "
                                "search pool in the engine (qdrant-edge's max_search_threads), which reads a "
                                "collection's segments in parallel. Each search hands its work to the pool and "
                                "waits: with concurrent searches on a small machine one thread is fastest (2 "
                                "cores: 89 against 65 searches/s, docs/benchmarks.md); more cut the latency of "
                                "a lone search over a collection of many segments. 0: keep the collection's "
                                "(the engine derives it from the CPU count).")

    @model_validator(mode="after")
    def _check_consistency(self) -> StoreSettings:
        if self.write_consistency_factor > self.replication_factor:
            raise ValueError(f"store write_consistency_factor {self.write_consistency_factor} must be at most "
                             f"replication_factor {self.replication_factor}")
        return self

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value != ":memory:" and not value.startswith(("http://", "https://", "path:")):
            raise ValueError(f"store url {value!r} must start with http:// or https:// (or be ':memory:' "
                             "or 'path:DIR' for qdrant-client's local mode)")
        return value


class IndexerSettings(_Group):
    """Catalog ingestion."""

    workers: int = Field(default_factory=lambda: max(1, min(8, (os.cpu_count() or 2) - 1)), ge=0, le=256,
                         description="Worker processes that fetch, decode and preprocess images (default: CPU "
                         "cores - 1, between 1 and 8; 0: in the main process).")
    worker_priority: Literal["idle", "low", "normal"] = Field(
        "idle", description="CPU priority of image preparation: idle (only CPU the model leaves unused; "
        "best on a machine of its own), low (nice 10; on machines shared with other busy jobs) or normal.")
    batch_size: int = Field(64, ge=1, le=8192, description="Products per embedding and upsert batch.")
    decode: Literal["cpu", "gpu", "auto"] = Field(
        "auto", description="Where JPEGs are decoded and preprocessed: cpu (Pillow in the worker processes), gpu "
        "(in batches with torchvision on the encoder's device, Pillow for the images that fail) or auto (gpu "
        "when the encoder runs on CUDA and tells its preprocessing, else cpu).")
    fetch_timeout_s: float = Field(10.0, gt=0, le=600, description="Timeout of one image download, seconds.")
    fetch_retries: int = Field(3, ge=0, le=20, description="Retries of a failed download (with backoff).")
    max_image_bytes: int = Field(20_000_000, ge=1024, description="Largest image file accepted, bytes.")
    max_image_pixels: int = Field(50_000_000, ge=1024, description="Largest image accepted, width x height.")
    image_roots: tuple[Path, ...] = Field((), description="Folders local image paths may point into, besides "
                                          "the catalog's own folder.")
    catalog_roots: tuple[Path, ...] = Field((), description="Folders a running API may read catalogs from when "
                                            "asked to re-index (POST /admin/reindex, `vitrine reindex` through "
                                            "the server); empty: it reads none.")


class RaySettings(_Group):
    """Ingestion on a Ray cluster: `vitrine index --engine ray` (the ray extra: pip install 'vitrine[ray]')."""

    address: str | None = Field(None, description="Ray cluster to join: auto (the running cluster), "
                                "ray://HOST:10001 (Ray client); unset: start a local one for the job.")
    actors: int = Field(1, ge=1, le=1024, description="Embedding actors (one model load each; one GPU each "
                        "when embed.device is cuda).")
    gpus_per_actor: float = Field(1.0, gt=0, le=8, description="GPUs each embedding actor reserves when "
                                  "embed.device is cuda (0.5: two actors share a GPU).")
    cpus_per_task: float = Field(1.0, gt=0, le=64, description="CPUs each fetch-and-decode task reserves.")
    block_rows: int = Field(1024, ge=1, le=1_000_000, description="Catalog rows per dataset block (the unit "
                            "of work of the fetch-and-decode tasks).")
    writers: int = Field(2, ge=1, le=256, description="Parallel write tasks to a Qdrant server (the embedded "
                         "store is always written by the driver alone).")


class FetchSettings(_Group):
    """Downloads from URLs given by others (query image_url, catalog images): the address policy and limits."""

    allow_hosts: tuple[str, ...] = Field(
        (), description="Hosts that may be fetched although they are not public (only public addresses are "
        "fetched otherwise: loopback, private, link-local, cloud-metadata and reserved ones are refused): "
        "hostnames (cdn.internal), subdomain wildcards (*.cdn.internal), addresses or CIDR networks "
        "(10.20.0.0/16). Applies to query image URLs and catalog image URLs.")
    max_bytes: int = Field(10_000_000, ge=1024, description="Largest image a query's image URL may download, "
                           "bytes (catalog images: VITRINE_INDEXER__MAX_IMAGE_BYTES).")
    timeout_s: float = Field(10.0, gt=0, le=600, description="Time limit of fetching a query's image URL, "
                             "redirects included, seconds (catalog images: VITRINE_INDEXER__FETCH_TIMEOUT_S).")
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed, each one checked again against "
                               "the address policy (query and catalog image URLs).")

    @field_validator("allow_hosts")
    @classmethod
    def _check_allow_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from common.netpolicy import Allowlist

        Allowlist.parse(value)  # raises ValueError naming the bad entry
        return value


class SearchSettings(_Group):
    """Query defaults."""

    w_image: float = Field(0.6, ge=0, le=1, description="Weight of the image index in the fused score.")
    w_text: float = Field(0.4, ge=0, le=1, description="Weight of the text index in the fused score.")
    w_lexical: float = Field(0.2, ge=0, le=1, description="Weight of the lexical (BM25) match in the fused "
                             "score; its scores are divided by the best one among the candidates first.")
    w_all_words: float = Field(0.2, ge=0, le=1, description="Added to the fused score of a product whose text "
                               "holds every word of the query (an exact brand, SKU or model-number match); only "
                               "when the lexical match is on.")
    negative_weight: float = Field(-0.5, ge=-1, lt=0, description="Weight of a query part given as 'not ...' "
                                   "(`vitrine search --not`, `not` in the web page).")
    group_variants: bool = Field(True, description="Collapse products sharing a group_id into one result.")
    no_match_below: float = Field(0.95, ge=0, le=1, description="A search whose best result's relevance "
                                  "is under this says no_good_match (relevance: docs/relevance.md).")
    cache_size: int = Field(4096, ge=0, le=1_000_000, description="Query embeddings kept in the LRU cache "
                            "(0: no cache).")
    candidates: int = Field(100, ge=1, le=10_000, description="Candidates taken from each index before fusion.")
    max_limit: int = Field(100, ge=1, le=1000, description="Largest page size a request may ask for.")
    max_offset: int = Field(10_000, ge=0, description="Deepest offset a request may ask for.")
    dedup_threshold: float = Field(0.97, gt=0, le=1, description="Image cosine similarity at or above which "
                                   "`vitrine dedup` takes two products for near-duplicates.")
    similar_k: int = Field(20, ge=1, le=1000, description="Neighbours per product `vitrine similar --all` "
                           "precomputes.")
    batch_window_ms: float = Field(2.0, ge=0, le=1000, description="Micro-batching of query encodings: the "
                                   "longest wait, milliseconds, after a query is queued for concurrent ones to "
                                   "join its encoder call (search/batching.py); 0: no batching, each query is "
                                   "encoded in its own thread.")
    max_batch: int = Field(32, ge=1, le=4096, description="Most query texts or images in one micro-batched "
                           "encoder call.")
    encoder_process: bool = Field(False, description="Run the micro-batched query encodings in a child "
                                  "process (search/encoder_process.py) instead of a thread of the server, so that "
                                  "the model does not fight the request threads for the GIL and can use another "
                                  "core. Costs a second copy of the model in memory (the server keeps its own). "
                                  "Needs batch_window_ms > 0 (ignored otherwise), and an encoder that "
                                  "embed.build_encoder(settings.embed, name) can build by its name.")
    encoder_timeout_s: float = Field(120.0, gt=0, le=3600, description="With encoder_process: the longest wait "
                                     "for one batch's vectors; a child process taking longer is taken for hung, "
                                     "stopped, and replaced by the next query (its batch fails with 503).")
    parallel_searches: int = Field(1, ge=1, le=256, description="Searches ranked at once in one process, after "
                                   "their queries are encoded (the others wait their turn). Ranking is Python, "
                                   "which runs one thread at a time (the GIL): searches interleaved in many "
                                   "threads each cost more CPU (2 cores, 16 threads: 15 ms a search one at a "
                                   "time, 29 ms interleaved; 68 against 40 searches/s). The embedded store's "
                                   "reads count, being CPU work in this process too; a Qdrant server's do not "
                                   "(they wait on the network). Raise it only with a store whose reads are slow.")
    rank_on_loop: bool = Field(True, description="With a store whose reads run in the server's process (the "
                               "embedded one), rank a GET or POST /search on the server's event loop once its "
                               "query is encoded, instead of in a worker thread: the ranking and the reads hold "
                               "the GIL and searches take turns anyway, so the thread only adds hand-offs (1.24x "
                               "queries/s over HTTP, docs/benchmarks.md). Other requests wait for the search "
                               "being ranked (a few ms). Re-ranked searches and image uploads use worker threads "
                               "either way; a Qdrant server's reads go through its async client (api.async_store).")


class TagSettings(_Group):
    """Zero-shot attribute tags: scored at ingestion from the image vectors, boosted at query time (docs/tags.md)."""

    vocabulary: Path | None = Field(None, description="Vocabulary file (TOML or JSON) of the attributes and "
                                    "values to tag products with; unset: no tagging.")
    logit_scale: float = Field(100.0, gt=0, le=1000, description="Multiplier of the cosine similarities "
                               "before the softmax over an attribute's values (CLIP's is 100).")
    boost: float = Field(0.1, ge=0, le=1, description="Score added at query time to products tagged with a "
                         "value the query names.")


class ImageSettings(_Group):
    """Thumbnails and previews of product images: made at ingestion, served at /images/ (common/thumbnails.py)."""

    thumbnails: bool = Field(True, description="Make a thumbnail (WebP) and a preview (JPEG) of each product image at "
                             "ingestion, and give their URLs in search results.")
    dir: Path | None = Field(None, description="Folder of the thumbnails and previews; unset: VITRINE_HOME/images. "
                             "The indexer writes it and the API reads it: share it between their hosts.")
    thumb_px: int = Field(320, ge=32, le=2048, description="Long side of thumbnails, pixels (smaller images are "
                          "kept at their size).")
    preview_px: int = Field(1024, ge=64, le=4096, description="Long side of previews, pixels (smaller images are "
                            "kept at their size).")
    quality: int = Field(82, ge=1, le=100, description="Encoding quality of thumbnails (WebP) and previews (JPEG), "
                         "1-100.")
    max_age_s: int = Field(31_536_000, ge=0, description="Cache-Control max-age of served thumbnails and "
                           "previews, seconds (their URLs name their content, so they never change).")

    @model_validator(mode="after")
    def _check_sizes(self) -> ImageSettings:
        if self.thumb_px > self.preview_px:
            raise ValueError(f"thumb_px {self.thumb_px} is larger than preview_px {self.preview_px}; a thumbnail "
                             "must not be larger than the preview")
        return self


class RerankSettings(_Group):
    """Re-ranking of the best candidates by a vision-language model (docs/rerank.md)."""

    backend: Literal["none", "transformers", "openai"] = Field(
        "none", description="Re-ranker: none (off), transformers (a local image-text-to-text model) or openai "
        "(the chat-completions API of OpenAI or a compatible server).")
    model: str | None = Field(None, description="transformers: a hub name (llava-hf/llava-v1.6-mistral-7b-hf, "
                              "Qwen/Qwen2.5-VL-3B-Instruct) or a local folder; openai: the model name on the "
                              "server (gpt-4o-mini). Required unless the backend is none.")
    base_url: str | None = Field(None, description="openai: URL of a compatible server (vLLM "
                                 "http://host:8000/v1, Ollama http://host:11434/v1); unset: api.openai.com.")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="openai: the "
                             "environment variable holding the API key (the key itself is never a setting).")
    top_n: int = Field(20, ge=1, le=500, description="Candidates of a search that are re-ranked.")
    budget_s: float = Field(10.0, gt=0, le=600, description="Time a search may spend re-ranking, seconds; "
                            "past it the first-stage order is kept.")
    weight: float = Field(0.5, ge=0, le=1, description="Weight of the VLM score in the final score: "
                          "(1 - weight) * normalised retrieval score + weight * VLM score.")
    batch_size: int = Field(8, ge=1, le=256, description="transformers: candidates per forward pass.")
    dtype: Dtype = Field("fp32", description="transformers: weights and activations: fp32, fp16 or bf16 "
                         "(bf16 on GPUs).")
    device: TorchDevice = Field("cpu", description="transformers: torch device: cpu, cuda, cuda:1, mps.")
    device_map: str | None = Field(None, description="transformers: device_map for from_pretrained (auto: "
                                   "spread over the GPUs); when set, device is not used.")
    max_concurrency: int = Field(4, ge=1, le=64, description="openai: requests in flight at once.")
    timeout_s: float = Field(20.0, gt=0, le=600, description="openai: time limit of one request, seconds.")
    retries: int = Field(3, ge=0, le=10, description="openai: retries of a request answered 429 or 5xx, or "
                         "timed out (exponential backoff with jitter, honouring Retry-After).")
    backoff_s: float = Field(0.5, ge=0, le=60, description="openai: first retry delay, seconds; doubled at each "
                             "retry.")
    image_max_side: int = Field(768, ge=64, le=4096, description="Product and query images are shrunk so that "
                                "their short side is at most this many pixels before they are sent.")
    cache_size: int = Field(4096, ge=0, le=1_000_000, description="Scores kept in the LRU cache, keyed by "
                            "query, product image and model (0: no cache).")
    describe_max_tokens: int = Field(160, ge=16, le=4096, description="vitrine enrich: most tokens the model "
                                     "may write for one product description.")
    enrich_min_chars: int = Field(40, ge=0, le=100_000, description="vitrine enrich: a product is thin (gets "
                                  "a generated description) when its description is missing or shorter than "
                                  "this many characters; 0: none is.")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"rerank base_url {value!r} must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _check_model(self) -> RerankSettings:
        if self.backend != "none" and not (self.model or "").strip():
            raise ValueError(f"the {self.backend!r} re-ranker needs a model (VITRINE_RERANK__MODEL)")
        return self


class GenerateSettings(_Group):
    """Variant image generation (`generate/`, docs/generate.md)."""

    backend: Literal["none", "recolor", "diffusers", "openai"] = Field(
        "recolor", description="The default generation backend: recolor (offline, no weights: recolours the "
        "product to a colour the instruction names), diffusers (a local Stable Diffusion / SDXL / FLUX model; "
        "the 'generate' extra), openai (an images API), or none.")
    model: str | None = Field(None, description="diffusers: hub name or folder of the pipeline (SD 1.5, SDXL, "
                              "FLUX.1-schnell); openai: the images model (default gpt-image-1).")
    controlnet: str | None = Field(None, description="diffusers: a Canny ControlNet (hub name or folder); when "
                                   "set, variants keep the product's shape from its Canny edges.")
    ip_adapter: str | None = Field(None, description="diffusers: an IP-Adapter as REPO_OR_FOLDER:SUBFOLDER/"
                                   "WEIGHT_FILE (e.g. h94/IP-Adapter:models/ip-adapter_sd15.bin), for a style "
                                   "or identity reference image.")
    scheduler: Literal["dpm++", "default"] = Field("dpm++", description="diffusers: DPM++ multistep "
                                                   "(DPMSolverMultistepScheduler) or the pipeline's own.")
    steps: int = Field(30, ge=1, le=200, description="diffusers: denoising steps (FLUX.1-schnell: 4).")
    guidance_scale: float = Field(7.0, ge=0, le=50, description="diffusers: classifier-free guidance scale.")
    size: int = Field(768, ge=64, le=2048, description="Long side of generated images, pixels (a multiple of "
                      "8 for diffusers).")
    device: TorchDevice = Field("cpu", description="diffusers: torch device: cpu, cuda, cuda:1, mps.")
    dtype: Dtype = Field("fp32", description="diffusers: fp32, fp16 or bf16 (fp16/bf16 on GPUs).")
    cpu_offload: bool = Field(False, description="diffusers: enable_model_cpu_offload (less GPU memory, slower).")
    compile: bool = Field(False, description="diffusers: torch.compile the denoiser (slow first call).")
    max_concurrency: int = Field(1, ge=1, le=16, description="Generation jobs run at once (one GPU job at a "
                                 "time by default); the others wait in the queue.")
    max_queued: int = Field(8, ge=0, le=1000, description="Generation jobs that may wait for a free slot; "
                            "when max_concurrency jobs run and this many wait, a new one is refused at once "
                            "(HTTP 429 with Retry-After).")
    batch_window_ms: int = Field(50, ge=0, le=5000, description="diffusers: how long a job waits for compatible "
                                 "requests to batch with it, milliseconds.")
    base_url: str | None = Field(None, description="openai: a compatible images API's URL; unset: OpenAI.")
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1, description="Environment variable holding the "
                             "images API key (never a setting, never logged).")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="openai: time limit of one request, seconds.")
    retries: int = Field(3, ge=0, le=10, description="openai: retries on 429, 5xx and timeouts (exponential "
                         "backoff with jitter, honouring Retry-After).")
    backoff_s: float = Field(1.0, ge=0, le=60, description="openai: first retry delay, seconds.")
    rewrite: Literal["template", "llm"] = Field("template", description="How an instruction becomes the "
                                                "prompt: a template filled with the product's fields, or a chat "
                                                "model (rewrite_model) that writes a detailed prompt.")
    rewrite_model: str | None = Field(None, description="The chat model of rewrite=llm (through base_url and "
                                      "api_key_env).")
    max_instruction_chars: int = Field(300, ge=10, le=4000, description="Longest instruction accepted.")
    max_n: int = Field(4, ge=1, le=16, description="Most images one request may ask for.")
    time_limit_s: float = Field(300.0, gt=0, le=3600, description="Time a generation request may take, queue "
                                "included, seconds.")
    dir: Path | None = Field(None, description="Where generated images are kept and served from (default "
                             "<home>/generated).")
    cache: bool = Field(True, description="Answer a repeated request (same source image, instruction, "
                        "parameters and model) with the images made before.")


class ApiSettings(_Group):
    """The HTTP service."""

    host: str = Field("127.0.0.1", description="Address `vitrine serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `vitrine serve` listens on.")
    max_upload_bytes: int = Field(10_000_000, ge=1024, description="Largest uploaded image, bytes.")
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="Largest request body of "
                                "the JSON endpoints, bytes (uploads have max_upload_bytes).")
    max_json_depth: int = Field(32, ge=2, le=200, description="Deepest nesting of arrays and objects a JSON "
                                "request body may have.")
    async_store: bool = Field(True, description="With a Qdrant server (store.url): GET and POST /search read "
                              "the store through qdrant-client's async client (gRPC with store.prefer_grpc) on the "
                              "event loop, the reads of each phase at once, instead of the sync client in a worker "
                              "thread. Re-ranked searches and the other routes use the sync client.")


def _split_list(value: Any) -> Any:
    """A comma-separated string (as an environment variable gives it) as a list of its non-empty parts."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AuthSettings(_Group):
    """Who may call what: API keys and the browser origins allowed to call the API (CORS)."""

    api_keys: Annotated[list[SecretStr], NoDecode, BeforeValidator(_split_list)] = Field(
        [], description="API keys, comma-separated (VITRINE_AUTH__API_KEYS). Requests that "
        "change data or cost money (generation, imagine, re-ranking) need one in the X-API-Key header once any "
        "key is set; with none set, auth is off.")
    api_keys_file: Path | None = Field(None, description="A file with more API keys, one per line ('#' starts "
                                       "a comment).")
    public_search: bool = Field(True, description="Whether read-only endpoints (search, products, facets, "
                                "images, the page) answer without a key when keys are set.")
    public_rerank: bool = Field(False, description="Whether searches with rerank=true answer without a key "
                                "when keys are set (a VLM costs GPU time or API money per request).")
    public_metrics: bool = Field(True, description="Whether GET /metrics answers without a key when keys are "
                                 "set (scrapers usually reach it on a private network).")
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        [], description="Browser origins allowed to call the API from another site, "
        "comma-separated (https://shop.example); empty: same origin only.")


class Settings(BaseSettings):
    """All of Vitrine's settings."""

    model_config = SettingsConfigDict(
        env_prefix="VITRINE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(Path(".vitrine"), description="Folder of the embedded index and job state.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    log_format: Literal["text", "json"] = Field("text", description="Log records as text lines or as one JSON "
                                                "object per line (with the request id, for log collectors).")
    embed: EmbedSettings = EmbedSettings()
    store: StoreSettings = StoreSettings()
    indexer: IndexerSettings = IndexerSettings()
    ray: RaySettings = RaySettings()
    fetch: FetchSettings = FetchSettings()
    search: SearchSettings = SearchSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    tags: TagSettings = TagSettings()
    rerank: RerankSettings = RerankSettings()
    images: ImageSettings = ImageSettings()
    generate: GenerateSettings = GenerateSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_file_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def store_dir(self) -> Path:
        """Folder of the embedded store."""
        return self.home / "store"

    @property
    def jobs_dir(self) -> Path:
        """Folder of ingestion job state and reports."""
        return self.home / "jobs"

    @property
    def images_dir(self) -> Path:
        """Folder of the thumbnails and previews (settings images.dir, default ``home/images``)."""
        return self.images.dir if self.images.dir is not None else self.home / "images"

    @property
    def generated_dir(self) -> Path:
        """Folder of generated images (settings generate.dir, default ``home/generated``)."""
        return self.generate.dir if self.generate.dir is not None else self.home / "generated"


def config_file_path() -> Path | None:
    """The TOML settings file in effect, if any.

    Raises:
        FileNotFoundError: ``VITRINE_CONFIG`` names a file that does not exist.
    """
    named = os.environ.get(_CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"{_CONFIG_ENV}={named!r} does not name a file; expected a TOML settings file")
        return path
    return _DEFAULT_CONFIG_FILE if _DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from keyword overrides, the environment and the TOML file.

    Raises:
        common.errors.ConfigError: a value is invalid; the message names the setting and the value.
    """
    from pydantic import ValidationError

    from common.errors import ConfigError

    try:
        return Settings(**overrides)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from e

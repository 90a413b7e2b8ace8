"""The compose files, checked without a Docker engine: Debian's ``docker-compose config`` validates and resolves
them (scripts/install_docker_compose.sh installs it with apt-get; without it these tests are skipped), then the
resolved cluster file is read for what production needs: 3 Qdrant nodes in cluster mode that find each other, the
API key required from the environment, no Qdrant port (above all not p2p's 6335) published, and the API and
indexer creating collections with shards on every node, replicated, quantized.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SINGLE, CLUSTER = "docker-compose.yml", "docker-compose.cluster.yml"
NODES = ("qdrant-1", "qdrant-2", "qdrant-3")
KEY = "test-key-from-the-environment"


def _compose_binary() -> str | None:
    named = os.environ.get("VITRINE_DOCKER_COMPOSE")
    if named:
        return named
    return shutil.which("docker-compose") or ("/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").is_file()
                                              else None)


COMPOSE = _compose_binary()
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="Debian's docker-compose is not installed (run "
                                "scripts/install_docker_compose.sh; it needs apt-get)")


def compose(file: str, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE --profile gpu --profile index ARGS`` in the repository, with a clean environment
    (only PATH, HOME and, unless None, QDRANT_API_KEY)."""
    assert COMPOSE is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    if key is not None:
        env["QDRANT_API_KEY"] = key
    return subprocess.run([COMPOSE, "-f", file, "--profile", "gpu", "--profile", "index", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    """The cluster file as compose resolves it."""
    yaml = pytest.importorskip("yaml")
    done = compose(CLUSTER, "config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


@pytest.mark.parametrize("file", [SINGLE, CLUSTER])
def test_compose_file_is_valid(file: str) -> None:
    done = compose(file, "config", "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("file", [SINGLE, CLUSTER])
def test_compose_refuses_to_start_without_the_api_key(file: str) -> None:
    done = compose(file, "config", "-q", key=None)
    assert done.returncode != 0
    assert "set QDRANT_API_KEY" in done.stderr


def test_three_qdrant_nodes_form_one_cluster(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    qdrant = sorted(name for name, s in services.items() if str(s.get("image", "")).startswith("qdrant/qdrant"))
    assert qdrant == list(NODES)
    for name in NODES:
        node = services[name]
        tag = node["image"].partition(":")[2]
        assert tag.startswith("v") and tag != "latest", f"{name}: pin the Qdrant image, not {node['image']!r}"
        assert node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert node["environment"]["QDRANT__SERVICE__API_KEY"] == KEY
        assert node["healthcheck"]["test"] and "/readyz" in " ".join(node["healthcheck"]["test"])
    assert services["qdrant-1"]["command"] == ["./qdrant", "--uri", "http://qdrant-1:6335"]
    for name in NODES[1:]:
        command = services[name]["command"]
        assert command[:3] == ["./qdrant", "--bootstrap", "http://qdrant-1:6335"]
        assert services[name]["depends_on"]["qdrant-1"]["condition"] == "service_healthy"
    storage = [v["source"] if isinstance(v, dict) else str(v).split(":")[0]
               for name in NODES for v in services[name]["volumes"]]
    assert len(set(storage)) == 3 and all(s in cluster["volumes"] for s in storage), storage


def test_no_qdrant_port_is_published(cluster: dict[str, Any]) -> None:
    for name, service in cluster["services"].items():
        published = {str(p.get("target") if isinstance(p, dict) else p).split(":")[-1]
                     for p in service.get("ports", [])}
        assert "6335" not in published, f"{name} publishes the p2p port"
        if name in NODES:
            assert not published, f"{name} publishes {published}; the API reaches the nodes on the network"
            assert list(service["networks"]) == ["qdrant"]
    assert cluster["networks"]["qdrant"]["internal"] is True


@pytest.mark.parametrize("service", ["api", "api-gpu", "indexer"])
def test_vitrine_creates_sharded_replicated_quantized_collections(
        cluster: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = cluster["services"][service]
    assert "qdrant" in spec["networks"]
    assert all(spec["depends_on"][node]["condition"] == "service_healthy" for node in NODES)
    env = spec["environment"]
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    store = Settings().store  # the names are real settings and the values valid
    assert store.url is not None and store.url.removeprefix("http://").split(":")[0] in NODES
    assert store.api_key is not None and store.api_key.get_secret_value() == KEY
    assert store.shard_number is not None and store.shard_number % len(NODES) == 0 and store.shard_number >= 3
    assert store.replication_factor == 2
    assert store.write_consistency_factor <= store.replication_factor
    assert (store.quantization, store.on_disk_vectors, store.rescore) == ("int8", True, True)


@pytest.mark.parametrize("file", [SINGLE, CLUSTER])
def test_the_api_talks_grpc_to_qdrant_on_an_unpublished_port(file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = pytest.importorskip("yaml")
    done = compose(file, "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name in ("api", "api-gpu"):
        for variable in [v for v in os.environ if v.startswith("VITRINE_")]:
            monkeypatch.delenv(variable)
        for variable, value in services[name]["environment"].items():
            monkeypatch.setenv(variable, str(value))
        store = Settings().store
        assert (store.prefer_grpc, store.grpc_port) == (True, 6334), name
    for name, service in services.items():
        published = {str(p.get("target") if isinstance(p, dict) else p).split(":")[-1]
                     for p in service.get("ports", [])}
        assert not published & {"6333", "6334"}, f"{name} publishes a Qdrant port: {published}"
        if str(service.get("image", "")).startswith("qdrant/qdrant"):
            assert {"6333", "6334"} <= {str(p) for p in service.get("expose", [])}, name


def test_the_cpu_api_encodes_queries_in_a_child_process_with_one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = pytest.importorskip("yaml")
    done = compose(SINGLE, "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for variable in [v for v in os.environ if v.startswith("VITRINE_")]:
        monkeypatch.delenv(variable)
    for variable, value in services["api"]["environment"].items():
        monkeypatch.setenv(variable, str(value))
    search = Settings().search
    assert search.encoder_process and search.batch_window_ms > 0  # the setting is real and takes effect
    assert services["api"]["environment"]["OMP_NUM_THREADS"] == "1"  # the child inherits it
    assert "VITRINE_SEARCH__ENCODER_PROCESS" not in services["api-gpu"]["environment"]

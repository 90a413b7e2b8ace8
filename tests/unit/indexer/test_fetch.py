"""Image fetching: local paths confined to allowed folders, and http(s) against a real loopback server (allowed
by the fetch allowlist; refused without it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from common.errors import BackendUnavailable, ImageTooLarge, InvalidInput, UnsafeURL, UnsupportedImage
from common.settings import load_settings
from indexer.fetch import FetchConfig, ImageFetcher, parse_retry_after, resolve_local_path
from tests.http_server import QuietHandler

IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg bytes"


class Handler(QuietHandler):
    """Routes that misbehave in the ways image hosts do."""

    hits: dict[str, int] = {}  # noqa: RUF012 - per-server counters, reset by the fixture



    def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
        hits = Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        jpeg = {"Content-Type": "image/jpeg"}
        if self.path == "/ok.jpg":
            self.send(200, IMAGE, jpeg)
        elif self.path == "/octet":
            self.send(200, IMAGE, {"Content-Type": "application/octet-stream"})
        elif self.path == "/missing.jpg":
            self.send(404, b"no")
        elif self.path == "/flaky.jpg":
            self.send(500, b"oops") if hits <= 2 else self.send(200, IMAGE, jpeg)
        elif self.path == "/busy.jpg":
            self.send(429, b"", {"Retry-After": "1"}) if hits == 1 else self.send(200, IMAGE, jpeg)
        elif self.path == "/down.jpg":
            self.send(503, b"", {"Retry-After": "3600"})
        elif self.path == "/broken.jpg":
            self.send(502, b"bad gateway")
        elif self.path == "/slow.jpg":
            time.sleep(2)
            self.send(200, IMAGE, jpeg)
        elif self.path == "/page.html":
            self.send(200, b"<html></html>", {"Content-Type": "text/html; charset=utf-8"})
        elif self.path == "/big.jpg":
            self.send(200, b"x" * 5000, jpeg)
        elif self.path == "/big-chunked.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/redirect":
            self.send(302, b"", {"Location": "/ok.jpg"})
        elif self.path == "/loop":
            self.send(302, b"", {"Location": "/loop"})
        elif self.path == "/to-file":
            self.send(302, b"", {"Location": "file:///etc/passwd"})
        elif self.path.startswith("/to-loopback/"):  # /to-loopback/PORT: the same server by its address
            self.send(302, b"", {"Location": f"http://127.0.0.1:{self.path.rsplit('/', 1)[1]}/ok.jpg"})
        else:
            self.send(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class Sleeps(list[float]):
    """Records the waits the fetcher asks for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def fetcher(tmp_path: Path, sleeps: Sleeps | None = None, **config: object) -> ImageFetcher:
    Handler.hits.clear()
    options: dict[str, object] = {"timeout_s": 5.0, "retries": 3, "max_bytes": 4096, "backoff_s": 0.1,
                                  "allow_hosts": ("127.0.0.1/32",)}  # the test server is on loopback
    options |= config
    return ImageFetcher(FetchConfig(base_dir=tmp_path, **options),  # type: ignore[arg-type]
                        sleep=sleeps if sleeps is not None else Sleeps())


def test_download(server: str, tmp_path: Path) -> None:
    with fetcher(tmp_path) as f:
        assert f.fetch(f"{server}/ok.jpg") == IMAGE
        assert f.fetch(f"{server}/octet") == IMAGE
        assert f.fetch(f"{server}/redirect") == IMAGE


def test_not_found_is_not_retried(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps) as f, \
            pytest.raises(InvalidInput, match=r"missing\.jpg': HTTP 404 Not Found"):
        f.fetch(f"{server}/missing.jpg")
    assert sleeps == [] and Handler.hits["/missing.jpg"] == 1


def test_server_errors_are_retried_with_growing_backoff(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps) as f:
        assert f.fetch(f"{server}/flaky.jpg") == IMAGE
    assert Handler.hits["/flaky.jpg"] == 3 and len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2


def test_retries_run_out(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps, retries=2) as f, \
            pytest.raises(BackendUnavailable, match=r"HTTP 502 Bad Gateway \(gave up after 3 attempts\)"):
        f.fetch(f"{server}/broken.jpg")
    assert Handler.hits["/broken.jpg"] == 3 and len(sleeps) == 2


def test_retry_after_is_honoured(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps) as f:
        assert f.fetch(f"{server}/busy.jpg") == IMAGE
    assert sleeps == [1.0]


def test_retry_after_too_long_gives_up_at_once(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps) as f, pytest.raises(BackendUnavailable, match="retry after 3600 s"):
        f.fetch(f"{server}/down.jpg")
    assert sleeps == [] and Handler.hits["/down.jpg"] == 1


def test_slow_server_times_out(server: str, tmp_path: Path) -> None:
    with fetcher(tmp_path, timeout_s=0.3, retries=0) as f, \
            pytest.raises(BackendUnavailable, match=r"timed out after 0\.3 s .*gave up after 1 attempt\)"):
        f.fetch(f"{server}/slow.jpg")


def test_wrong_content_type(server: str, tmp_path: Path) -> None:
    with fetcher(tmp_path) as f, \
            pytest.raises(UnsupportedImage, match="served as 'text/html', not as an image"):
        f.fetch(f"{server}/page.html")


@pytest.mark.parametrize(("path", "message"), [("/big.jpg", "5000 bytes \\(Content-Length\\)"),
                                               ("/big-chunked.jpg", "stopped reading")])
def test_size_cap(server: str, tmp_path: Path, path: str, message: str) -> None:
    with fetcher(tmp_path) as f, pytest.raises(ImageTooLarge, match=message):
        f.fetch(server + path)


def test_bad_redirects(server: str, tmp_path: Path) -> None:
    with fetcher(tmp_path) as f:
        with pytest.raises(InvalidInput, match="more than 5 redirects"):
            f.fetch(f"{server}/loop")
        with pytest.raises(InvalidInput, match="only http"):
            f.fetch(f"{server}/to-file")


def test_non_public_addresses_are_refused_without_the_allowlist(server: str, tmp_path: Path) -> None:
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps, allow_hosts=()) as f, \
            pytest.raises(UnsafeURL, match=r"host '127\.0\.0\.1' is a loopback address; allow it with "
                                           "VITRINE_FETCH__ALLOW_HOSTS"):
        f.fetch(f"{server}/ok.jpg")
    assert sleeps == [] and Handler.hits == {}  # refused before connecting, and not retried


def test_redirects_are_checked_against_the_allowlist(server: str, tmp_path: Path) -> None:
    port = server.rsplit(":", 1)[1]
    with fetcher(tmp_path, allow_hosts=("localhost",)) as f:
        assert f.fetch(f"http://localhost:{port}/redirect") == IMAGE
        with pytest.raises(UnsafeURL, match=r"redirected to 'http://127\.0\.0\.1:\d+/ok\.jpg'\) refused: host "
                                            r"'127\.0\.0\.1' is a loopback address"):
            f.fetch(f"http://localhost:{port}/to-loopback/{port}")


def test_config_from_settings(tmp_path: Path) -> None:
    settings = load_settings(fetch={"allow_hosts": ["cdn.internal"], "max_redirects": 2},
                             indexer={"max_image_bytes": 5000, "fetch_timeout_s": 3.0})
    config = FetchConfig.from_settings(settings, base_dir=tmp_path)
    assert (config.allow_hosts, config.max_redirects, config.max_bytes, config.timeout_s) == \
        (("cdn.internal",), 2, 5000, 3.0)
    assert config.policy().allow.allows_host("cdn.internal")


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    with fetcher(tmp_path, sleeps, retries=1) as f, \
            pytest.raises(BackendUnavailable, match=r"ConnectError.*gave up after 2 attempts"):
        f.fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert len(sleeps) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


# Local paths.

@pytest.fixture()
def catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.jpg").write_bytes(IMAGE)
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    return folder


def test_relative_and_absolute_paths_inside_the_catalog(catalog_dir: Path) -> None:
    with fetcher(catalog_dir) as f:
        assert f.fetch("img/a.jpg") == IMAGE
        assert f.fetch("./img/../img/a.jpg") == IMAGE
        assert f.fetch(str(catalog_dir / "img" / "a.jpg")) == IMAGE


@pytest.mark.parametrize("ref", ["../secret.jpg", "img/../../secret.jpg", "/etc/passwd"])
def test_traversal_is_refused(catalog_dir: Path, ref: str) -> None:
    with fetcher(catalog_dir) as f, pytest.raises(InvalidInput, match="outside the catalog's folder"):
        f.fetch(ref)


def test_symlink_out_of_the_catalog_is_refused(catalog_dir: Path) -> None:
    (catalog_dir / "img" / "link.jpg").symlink_to(catalog_dir.parent / "secret.jpg")
    with fetcher(catalog_dir) as f, \
            pytest.raises(InvalidInput, match=r"resolves to '.*secret\.jpg', outside"):
        f.fetch("img/link.jpg")


def test_image_roots_widen_the_allowed_folders(catalog_dir: Path) -> None:
    shared = catalog_dir.parent / "shared"
    shared.mkdir()
    (shared / "b.jpg").write_bytes(IMAGE)
    (catalog_dir / "img" / "b.jpg").symlink_to(shared / "b.jpg")
    with fetcher(catalog_dir, roots=(shared,)) as f:
        assert f.fetch("../shared/b.jpg") == IMAGE
        assert f.fetch("img/b.jpg") == IMAGE
        with pytest.raises(InvalidInput, match="outside"):
            f.fetch("../secret.jpg")
    resolved = resolve_local_path("img/b.jpg", base_dir=catalog_dir, roots=[shared])
    assert resolved == (shared / "b.jpg").resolve()


@pytest.mark.parametrize(("ref", "scheme"), [
    ("file:///etc/passwd", "file:"), ("ftp://host/a.jpg", "ftp:"),
    ("data:image/png;base64,AAAA", "data:"), ("s3://b/k.jpg", "s3:"),
])
def test_other_schemes_are_refused(catalog_dir: Path, ref: str, scheme: str) -> None:
    with fetcher(catalog_dir) as f, pytest.raises(InvalidInput, match=f"scheme '{scheme}' is not supported"):
        f.fetch(ref)


def test_missing_directory_and_oversize_local_files(catalog_dir: Path) -> None:
    (catalog_dir / "huge.jpg").write_bytes(b"x" * 5000)
    with fetcher(catalog_dir) as f:
        with pytest.raises(InvalidInput, match=r"image file 'img/nope\.jpg' not found"):
            f.fetch("img/nope.jpg")
        with pytest.raises(InvalidInput, match="is not a file"):
            f.fetch("img")
        with pytest.raises(ImageTooLarge, match="is 5000 bytes, over the limit of 4096 bytes"):
            f.fetch("huge.jpg")

"""The SSRF policy of common.netfetch, against real loopback servers (plain HTTP and TLS)."""

from __future__ import annotations

import pickle
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from common.errors import ConfigError, FetchFailed, ImageTooLarge, UnsafeURL, UnsupportedImage
from common.netfetch import FetchPolicy, SafeClient
from common.netpolicy import Allowlist, address_risk, resolve_checked, system_resolver
from common.settings import load_settings
from tests.http_server import QuietHandler

IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg bytes"


class Handler(QuietHandler):
    hits: dict[str, int] = {}  # noqa: RUF012 - reset by the fixture
    protocol_version = "HTTP/1.1"  # keep-alive



    def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        jpeg = {"Content-Type": "image/jpeg"}
        path, _, query = self.path.partition("?")
        if path == "/ok.jpg":
            self.send(200, IMAGE, jpeg)
        elif path == "/host":
            self.send(200, (self.headers["Host"] or "").encode(), jpeg)
        elif path == "/go":  # /go?URL redirects there
            self.send(302, b"", {"Location": query})
        elif path == "/loop":
            self.send(302, b"", {"Location": "/loop"})
        elif path == "/big.jpg":
            self.send(200, b"x" * 5000, jpeg)
        elif path == "/big-chunked.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow.jpg":
            time.sleep(1)
            self.send(200, IMAGE, jpeg)
        elif path == "/trickle.jpg":  # every read is quick, the whole body is not
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/page.html":
            self.send(200, b"<html></html>", {"Content-Type": "text/html"})
        elif path == "/busy":
            self.send(503, b"")
        else:
            self.send(404, b"no")


class Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that drop a connection on purpose (a body over the cap, a timeout) are no news


def serve(context: ssl.SSLContext | None = None) -> Iterator[int]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from serve()


@pytest.fixture(autouse=True)
def _reset_hits() -> None:
    Handler.hits.clear()


class FakeDNS:
    """Answers from a table (a list of answers is handed out one call at a time); other names: the system."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        if host in self.table:
            answers = self.table[host]
            return answers.pop(0) if len(answers) > 1 else answers[0]
        return system_resolver(host, port)


def client(*allow: str, dns: FakeDNS | None = None, **limits: object) -> SafeClient:
    options: dict[str, object] = {"max_bytes": 4096, "timeout_s": 5.0} | limits
    policy = FetchPolicy(allow_hosts=allow, **options)  # type: ignore[arg-type]
    return SafeClient(policy, resolve=dns or FakeDNS({}))


# The classifier.

@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("fd12:3456::1", "private (unique-local)"), ("fec0::1", "site-local"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"), ("100.100.100.200", "metadata"),
    ("100.64.0.1", "carrier-grade NAT"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"), ("192.0.2.1", "documentation"), ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"), ("2001::1", "Teredo"), ("::1.2.3.4", "outside global unicast"),
    ("::ffff:127.0.0.1", "loopback address (IPv4-mapped 127.0.0.1)"), ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private address (IPv4-mapped"), ("64:ff9b::a00:1", "private address (NAT64 of 10.0.0.1)"),
    ("2002:7f00:1::", "loopback address (6to4 of 127.0.0.1)"),
])
def test_non_public_addresses_are_named(address: str, reason: str) -> None:
    risk = address_risk(address)
    assert risk is not None and reason in risk


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1",
                                     "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert address_risk(address) is None


def test_allowlist_entries() -> None:
    allow = Allowlist.parse(["CDN.internal.", "*.img.corp", "10.20.0.0/16", "127.0.0.1", "[::1]"])
    assert allow.allows_host("cdn.internal") and allow.allows_host("a.b.img.corp")
    assert not allow.allows_host("img.corp") and not allow.allows_host("xcdn.internal")
    assert resolve_checked("10.20.3.4", 80, allow=allow, resolve=lambda h, p: [h]) == ["10.20.3.4"]
    for bad in ["10.0.0.0/33", "10.1.2.3/8", "not a host", "http://x", "999.1.1.1"]:
        with pytest.raises(ValueError, match=f"allow_hosts entry '{bad}'"):
            Allowlist.parse([bad])


def test_settings_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_FETCH__ALLOW_HOSTS", '["cdn.internal", "10.0.0.0/8"]')
    settings = load_settings()
    assert settings.fetch.allow_hosts == ("cdn.internal", "10.0.0.0/8")
    policy = FetchPolicy.from_settings(settings.fetch)
    assert policy.allow.allows_host("cdn.internal") and policy.max_redirects == 5
    assert pickle.loads(pickle.dumps(policy)) == policy
    monkeypatch.setenv("VITRINE_FETCH__ALLOW_HOSTS", '["10.0.0.0/40"]')
    with pytest.raises(ConfigError, match=r"fetch.allow_hosts.*'10.0.0.0/40' is not a valid address"):
        load_settings()


def test_fetch_failed_pickles() -> None:
    error = pickle.loads(pickle.dumps(FetchFailed("http://x/", "HTTP 503", retryable=True, retry_after=2.0)))
    assert str(error) == "URL 'http://x/': HTTP 503" and error.retryable and error.retry_after == 2.0


# Refusals.

def test_loopback_is_refused_without_the_allowlist(port: int) -> None:
    with client() as c, pytest.raises(UnsafeURL, match=r"host '127\.0\.0\.1' is a loopback address; allow it "
                                                       "with VITRINE_FETCH__ALLOW_HOSTS"):
        c.fetch(f"http://127.0.0.1:{port}/ok.jpg")
    assert Handler.hits == {}


@pytest.mark.parametrize("allow", ["127.0.0.1/32", "127.0.0.1", "localhost"])
def test_the_allowlist_lets_it_through(port: int, allow: str) -> None:
    with client(allow) as c:
        assert c.fetch(f"http://127.0.0.1:{port}/ok.jpg" if allow != "localhost" else
                       f"http://localhost:{port}/ok.jpg") == IMAGE


def test_proxy_variables_are_ignored(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # a proxy would see addresses the policy never checks
    with client("127.0.0.1") as c:
        assert c.fetch(f"http://127.0.0.1:{port}/ok.jpg") == IMAGE


def test_a_name_is_checked_by_what_it_resolves_to(port: int) -> None:
    with client() as c, pytest.raises(UnsafeURL, match=r"host 'localhost' resolves to (127\.0\.0\.1|::1), "
                                                       "a loopback address"):
        c.fetch(f"http://localhost:{port}/ok.jpg")
    with client() as c, pytest.raises(UnsafeURL, match=r"resolves to 127\.0\.0\.1, a loopback"):
        c.fetch(f"http://2130706433:{port}/ok.jpg")  # 127.0.0.1 as one number
    assert Handler.hits == {}


def test_public_looking_host_on_a_private_address_is_refused(port: int) -> None:
    dns = FakeDNS({"shop.example": [["93.184.215.14", "10.1.2.3"]]})
    with client(dns=dns) as c, pytest.raises(UnsafeURL, match=r"URL 'http://shop\.example/a\.jpg' refused: host "
                                             r"'shop\.example' resolves to 10\.1\.2\.3, a private address"):
        c.fetch("http://shop.example/a.jpg")


def test_metadata_names_are_refused_before_any_lookup() -> None:
    dns = FakeDNS({})
    with client(dns=dns) as c:
        for url in ["http://metadata.google.internal/computeMetadata/v1/", "http://METADATA./x",
                    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
                    "http://[::ffff:169.254.169.254]/"]:
            with pytest.raises(UnsafeURL, match="metadata service"):
                c.fetch(url)
    assert dns.calls == []


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://example.com/",
                                 "data:image/png;base64,AAAA"])
def test_other_schemes_are_refused(url: str) -> None:
    with client() as c, pytest.raises(UnsafeURL, match=r"scheme '\w+:' is not allowed; only http and https"):
        c.fetch(url)


def test_redirects_are_checked_hop_by_hop(port: int) -> None:
    dns = FakeDNS({"images.test": [["127.0.0.1"]]})
    base = f"http://images.test:{port}"
    with client("images.test", dns=dns) as c:
        assert c.fetch(f"{base}/go?/ok.jpg") == IMAGE
        with pytest.raises(UnsafeURL, match=rf"\(redirected to 'http://127\.0\.0\.1:{port}/ok\.jpg'\) refused: "
                                            r"host '127\.0\.0\.1' is a loopback address"):
            c.fetch(f"{base}/go?http://127.0.0.1:{port}/ok.jpg")
        with pytest.raises(UnsafeURL, match=r"redirected to 'http://169\.254\.169\.254/latest/meta-data/'.*metadata"):
            c.fetch(f"{base}/go?http://169.254.169.254/latest/meta-data/")
        with pytest.raises(UnsafeURL, match=r"redirected to 'file:.*scheme 'file:' is not allowed"):
            c.fetch(f"{base}/go?file:///etc/passwd")
    assert Handler.hits.get("/ok.jpg") == 1
    with client("images.test", dns=dns, max_redirects=2) as c, \
            pytest.raises(FetchFailed, match="more than 2 redirects"):
        c.fetch(f"{base}/loop")
    assert Handler.hits["/loop"] == 3


def test_host_header_and_pinning(port: int) -> None:
    dns = FakeDNS({"images.test": [["127.0.0.1"]]})
    with client("images.test", dns=dns) as c:
        assert c.fetch(f"http://images.test:{port}/host") == f"images.test:{port}".encode()
        assert c.fetch(f"http://images.test:{port}/host") == f"images.test:{port}".encode()
    assert dns.calls == ["images.test"]  # one lookup, one kept-alive connection


def test_dns_rebinding_cannot_switch_the_address_after_the_check(port: int) -> None:
    # The first answer is allowed (and unreachable); a fetcher that looked the name up again to connect would get
    # the second one, and reach the loopback server.
    dns = FakeDNS({"rebind.test": [["198.51.100.7"], ["127.0.0.1"]]})
    with client("198.51.100.0/24", dns=dns, timeout_s=0.5) as c, pytest.raises(FetchFailed) as caught:
        c.fetch(f"http://rebind.test:{port}/ok.jpg")
    assert caught.value.retryable and dns.calls == ["rebind.test"] and Handler.hits == {}


# Limits and other failures.

@pytest.mark.parametrize(("path", "message"), [
    ("/big.jpg", r"is 5000 bytes \(Content-Length\), over the limit of 4096 bytes \(VITRINE_FETCH__MAX_BYTES\)"),
    ("/big-chunked.jpg", r"over the limit of 4096 bytes \(stopped reading"),
])
def test_size_cap(port: int, path: str, message: str) -> None:
    with client("127.0.0.1") as c, pytest.raises(ImageTooLarge, match=message):
        c.fetch(f"http://127.0.0.1:{port}{path}")


def test_slow_server_times_out(port: int) -> None:
    start = time.monotonic()
    with client("127.0.0.1", timeout_s=0.3) as c, \
            pytest.raises(FetchFailed, match=r"timed out after 0\.3 s \(ReadTimeout\)") as caught:
        c.fetch(f"http://127.0.0.1:{port}/slow.jpg")
    assert caught.value.retryable and time.monotonic() - start < 0.9


def test_the_deadline_covers_the_whole_body(port: int) -> None:
    start = time.monotonic()
    with client("127.0.0.1", timeout_s=0.5) as c, \
            pytest.raises(FetchFailed, match=r"timed out after 0\.5 s \(reading the body\)"):
        c.fetch(f"http://127.0.0.1:{port}/trickle.jpg")
    assert time.monotonic() - start < 1.5


def test_http_errors_and_content_type(port: int) -> None:
    with client("127.0.0.1") as c:
        with pytest.raises(FetchFailed, match="HTTP 404 Not Found") as caught:
            c.fetch(f"http://127.0.0.1:{port}/nope.jpg")
        assert not caught.value.retryable
        with pytest.raises(FetchFailed, match="HTTP 503") as caught:
            c.fetch(f"http://127.0.0.1:{port}/busy")
        assert caught.value.retryable
        with pytest.raises(UnsupportedImage, match="served as 'text/html'"):
            c.fetch(f"http://127.0.0.1:{port}/page.html")


def test_unresolvable_host() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with SafeClient(FetchPolicy(), resolve=nowhere) as c, \
            pytest.raises(FetchFailed, match=r"cannot resolve host 'shop\.invalid'"):
        c.fetch("http://shop.invalid/a.jpg")


# TLS: the connection is pinned to the checked address, and SNI and the certificate are still the hostname's.

@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=images.test", "-addext",
                    "subjectAltName=DNS:images.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield from ((p, cert) for p in serve(context))


def test_https_keeps_sni_and_verifies_the_hostname(tls: tuple[int, Path]) -> None:
    port, cert = tls
    dns = FakeDNS({"images.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    policy = FetchPolicy(allow_hosts=("images.test", "other.test"))
    verify = ssl.create_default_context(cafile=str(cert))
    with SafeClient(policy, resolve=dns, verify=verify) as c:
        assert c.fetch(f"https://images.test:{port}/host") == f"images.test:{port}".encode()
        with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|Hostname mismatch"):
            c.fetch(f"https://other.test:{port}/host")  # same address, a certificate for another name
    with SafeClient(FetchPolicy(), resolve=dns, verify=verify) as c, \
            pytest.raises(UnsafeURL, match=r"resolves to 127\.0\.0\.1"):
        c.fetch(f"https://images.test:{port}/host")

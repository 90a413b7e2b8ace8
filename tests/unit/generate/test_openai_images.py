"""The openai backend against a loopback server speaking the images API: edits (multipart) and generations
(JSON), retries with Retry-After, failures, the deadline, malformed replies, and a key that never leaks."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from common.errors import BackendNotInstalled, GenerationFailed, InvalidInput
from generate.openai_images import OpenAIImagesGenerator, api_size
from generate.protocol import GenerationRequest, Generator
from tests.unit.generate.images_server import COLOUR, FakeImagesServer, Reply, images_reply
from tests.unit.generate.photos import shaded_product

SECRET = "sk-test-SECRET-never-shown-0123456789"
KEY_ENV = "VITRINE_TEST_IMAGES_KEY"


@pytest.fixture
def server() -> Iterator[FakeImagesServer]:
    with FakeImagesServer().running() as running:
        yield running


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return KEY_ENV


def _generator(server: FakeImagesServer, **options: object) -> OpenAIImagesGenerator:
    settings: dict[str, object] = {"base_url": server.url, "api_key_env": KEY_ENV, "size": 64, "timeout_s": 5.0,
                                   "retries": 2, "backoff_s": 0.01}
    settings.update(options)
    return OpenAIImagesGenerator("gpt-image-1", **settings)  # type: ignore[arg-type]


def _variant(n: int = 1) -> GenerationRequest:
    image, _ = shaded_product(96)
    return GenerationRequest(instruction="in red", prompt="Studio photo of the sneaker in red", image=image, n=n,
                             seed=5)


def test_it_is_a_generator() -> None:
    generator = OpenAIImagesGenerator("gpt-image-1")
    assert isinstance(generator, Generator)
    assert generator.name == "openai:gpt-image-1"
    assert "key" not in str(generator.describe()).lower()


def test_edit_sends_the_image_and_fields(server: FakeImagesServer, keyed: str) -> None:
    images = _generator(server).generate(_variant(n=2))
    assert len(images) == 2
    assert all(im.mode == "RGB" and im.getpixel((0, 0)) == COLOUR for im in images)
    [seen] = server.seen
    assert seen.path == "/v1/images/edits"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.fields["prompt"] == "Studio photo of the sneaker in red"
    assert seen.fields["model"] == "gpt-image-1"
    assert seen.fields["n"] == "2"
    assert seen.fields["size"] == "1024x1024"
    assert "response_format" not in seen.fields  # gpt-image models always answer b64_json
    [(field, filename, data)] = seen.files
    assert field == "image" and filename == "product.png"
    sent = Image.open(io.BytesIO(data))
    assert sent.format == "PNG" and sent.size == (96, 96)


def test_reference_image_goes_along(server: FakeImagesServer, keyed: str) -> None:
    image, _ = shaded_product(64)
    request = GenerationRequest(instruction="in red", prompt="p", image=image, reference=Image.new("RGB", (32, 32)))
    _generator(server).generate(request)
    assert [name for _, name, _ in server.seen[0].files] == ["product.png", "reference.png"]


def test_text_to_image_uses_generations(server: FakeImagesServer, keyed: str) -> None:
    generator = _generator(server)
    generator.generate(GenerationRequest(instruction="a red sneaker", prompt="A red sneaker, studio photo", n=1))
    [seen] = server.seen
    assert seen.path == "/v1/images/generations"
    assert seen.fields["prompt"] == "A red sneaker, studio photo"
    assert seen.fields["model"] == "gpt-image-1" and seen.fields["n"] == 1


def test_dall_e_3_asks_for_b64_one_image_per_call(server: FakeImagesServer, keyed: str) -> None:
    generator = OpenAIImagesGenerator("dall-e-3", base_url=server.url, api_key_env=KEY_ENV, size=64)
    images = generator.generate(GenerationRequest(instruction="x", prompt="a red dress", n=2))
    assert len(images) == 2
    assert [seen.fields["n"] for seen in server.seen] == [1, 1]
    assert server.seen[0].fields["response_format"] == "b64_json"


def test_sizes_follow_the_aspect_ratio() -> None:
    assert api_size("gpt-image-1", 300, 200, 768) == "1536x1024"
    assert api_size("gpt-image-1", 200, 300, 768) == "1024x1536"
    assert api_size("gpt-image-1", 200, 210, 768) == "1024x1024"
    assert api_size("dall-e-3", 300, 200, 768) == "1792x1024"
    assert api_size("dall-e-2", 200, 200, 400) == "512x512"


def test_large_replies_are_scaled_to_the_size(server: FakeImagesServer, keyed: str) -> None:
    server.script.append(Reply(body=images_reply(1, size=(200, 100))))
    [image] = _generator(server, size=64).generate(_variant())
    assert image.size == (64, 32)


def test_429_with_retry_after_then_success(server: FakeImagesServer, keyed: str) -> None:
    server.script.append(Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"}))
    started = time.monotonic()
    images = _generator(server).generate(_variant())
    assert len(images) == 1
    assert len(server.seen) == 2
    assert time.monotonic() - started >= 0.3


def test_500s_exhausted(server: FakeImagesServer, keyed: str) -> None:
    for _ in range(3):
        server.script.append(Reply(500, {"error": {"message": "boom"}}))
    with pytest.raises(GenerationFailed, match=r"HTTP 500.*after 3 attempt"):
        _generator(server, retries=2).generate(_variant())
    assert len(server.seen) == 3


def test_400_is_invalid_input_with_the_servers_message(server: FakeImagesServer, keyed: str) -> None:
    server.script.append(Reply(400, {"error": {"message": "Your request was rejected by the safety system"}}))
    with pytest.raises(InvalidInput, match="safety system"):
        _generator(server).generate(_variant())
    assert len(server.seen) == 1


def test_slow_reply_beyond_the_deadline(server: FakeImagesServer, keyed: str) -> None:
    server.script.append(Reply(body=images_reply(1), delay_s=2.0))
    started = time.monotonic()
    with pytest.raises(GenerationFailed, match=r"deadline|no reply"):
        _generator(server, retries=3).generate(_variant(), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.8


def test_a_deadline_already_past(server: FakeImagesServer, keyed: str) -> None:
    with pytest.raises(GenerationFailed, match="deadline"):
        _generator(server).generate(_variant(), deadline=time.monotonic() - 1)
    assert server.seen == []


def test_retry_after_beyond_the_deadline_fails_at_once(server: FakeImagesServer, keyed: str) -> None:
    server.script.append(Reply(503, {"error": {"message": "busy"}}, headers={"Retry-After": "30"}))
    started = time.monotonic()
    with pytest.raises(GenerationFailed, match="after the deadline"):
        _generator(server).generate(_variant(), deadline=time.monotonic() + 5)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("body", [
    b"not json at all",
    {"created": 0, "data": [{"b64_json": "!!!not base64!!!"}]},
    {"created": 0, "data": [{"b64_json": "aGVsbG8="}]},  # base64 of "hello": not an image
    {"created": 0, "data": []},
    {"created": 0, "data": [{"url": "http://169.254.169.254/latest/meta-data"}]},
])
def test_malformed_replies(server: FakeImagesServer, keyed: str, body: dict[str, object] | bytes) -> None:
    server.script.append(Reply(body=body))
    with pytest.raises(GenerationFailed) as caught:
        _generator(server).generate(_variant())
    message = str(caught.value)
    assert "malformed" in message or "URL" in message or "holds 0" in message
    assert len(server.seen) == 1  # a bad body is not retried; a URL is never fetched


def test_no_key_and_no_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(BackendNotInstalled, match=KEY_ENV):
        OpenAIImagesGenerator("gpt-image-1", api_key_env=KEY_ENV).load()


def test_a_base_url_server_needs_no_key(server: FakeImagesServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert len(_generator(server).generate(_variant())) == 1
    assert server.seen[0].headers["authorization"] == "Bearer unused"


def test_the_key_never_shows(server: FakeImagesServer, keyed: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
    server.script.extend([Reply(500, echo), Reply(500, echo), Reply(500, echo)])
    with pytest.raises(GenerationFailed) as failed:
        _generator(server).generate(_variant())
    server.script.append(Reply(401, echo))
    with pytest.raises(GenerationFailed) as unauthorized:
        _generator(server).generate(_variant())
    server.script.append(Reply(400, echo))
    with pytest.raises(InvalidInput) as refused:
        _generator(server).generate(_variant())
    for error in (failed.value, unauthorized.value, refused.value):
        text = str(error) + repr(error) + str(error.__cause__) + repr(error.__cause__)
        assert SECRET not in text
    assert "***" in str(failed.value)
    assert SECRET not in caplog.text
    assert KEY_ENV in str(unauthorized.value)

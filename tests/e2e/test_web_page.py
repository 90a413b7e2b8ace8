"""The search page in a real browser: Debian's chromium, headless, driven by playwright, against the real app
(uvicorn) serving 600 demo products indexed with the demo model.

Each test also checks that the page logged no console error, threw nothing and fetched nothing from outside
the API. Screenshots are saved under ``artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from api.app import create_app
from tests.demo_shop import DEMO, enrich, index_demo_subset
from tests.e2e.web_shop import CHROMIUM, CHROMIUM_ARGS, Watch, open_page, screenshot
from tests.unit.api.http_helpers import running, wait_ready
from tests.unit.rerank.chat_server import FakeChatServer
from tests.unit.rerank.describe_server import MARKER, DescribingServer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

QUERY_IMAGE = DEMO / "queries" / "train-02724.png"  # an ankle boot from the train split (not in the catalog)
TIMEOUT_MS = 30_000


ENRICHED = "fm-00000"
"""A product described by the (fake) model with `vitrine enrich`'s job before the server starts."""


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChatServer]:
    """The re-ranker's model: a chat-completions server on loopback that says yes to shoes and sneakers, and
    writes product descriptions holding the word `MARKER`."""
    with DescribingServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, chat: FakeChatServer) -> Iterator[str]:
    settings = index_demo_subset(tmp_path_factory.mktemp("web"), rerank={
        "backend": "openai", "model": "fake-vlm", "base_url": chat.url, "weight": 1.0})
    enrich(settings, [ENRICHED])
    with running(create_app(settings)) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_ready(client)
        yield url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/install_chromium.sh (make test does) or set "
                    "VITRINE_CHROMIUM")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture()
def page(browser: Browser, base_url: str) -> Iterator[tuple[Page, Watch]]:
    with open_page(browser, base_url) as (page, watch):
        page.set_default_timeout(TIMEOUT_MS)
        yield page, watch
        assert watch.errors == [], watch.errors
        assert watch.outside() == [], f"requests outside the API: {watch.outside()}"


def start(page: Page, base_url: str, query: str = "") -> None:
    page.goto(f"{base_url}/{query}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def cards(page: Page) -> list[dict[str, str]]:
    """The result cards shown: id, title, category, brand, price text and thumbnail URL."""
    return page.locator("#grid .card").evaluate_all("""nodes => nodes.map(n => ({
        id: n.dataset.id, title: n.querySelector('.title').textContent,
        category: n.querySelector('.category').textContent, brand: n.querySelector('.brand-name').textContent,
        price: n.querySelector('.price').textContent, stock: n.querySelector('.stock').textContent,
        thumbnail: n.querySelector('img') ? n.querySelector('img').getAttribute('src') : ''}))""")


def wait_for_results(page: Page, *, not_ids: set[str] | None = None) -> list[dict[str, str]]:
    """Wait until the grid shows results (other than ``not_ids`` when given) and the page is idle."""
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length > 0 && "
                           "!document.body.classList.contains('busy')")
    if not_ids is not None:
        page.wait_for_function("ids => { const first = document.querySelector('#grid .card'); "
                               "return first && !ids.includes(first.dataset.id) && "
                               "!document.body.classList.contains('busy'); }", arg=sorted(not_ids))
    return cards(page)


def test_type_a_query_and_see_results(page: tuple[Page, Watch], base_url: str) -> None:
    tab, watch = page
    start(tab, base_url)
    expect(tab.locator("#notice")).to_contain_text("Type what you are looking for")
    expect(tab.locator("#notice .chip").first).to_be_visible()
    screenshot(tab, "welcome")
    tab.locator("#q").press_sequentially("running shoes", delay=30)
    shown = wait_for_results(tab)
    assert len(shown) == 24
    assert all(card["category"] == "Sneaker" for card in shown[:10]), shown[:10]
    assert "running" in shown[0]["title"].lower()
    expect(tab.locator("#status")).to_contain_text(re.compile(r"Results 1–24 of \d+ candidates in \d+ ms"))
    # search-as-you-type is debounced: far fewer searches than the 13 keystrokes
    assert 1 <= len(watch.searches()) <= 4, watch.searches()
    # the address bar keeps the query: a reload shows the same results
    assert "q=running+shoes" in tab.url
    # every card has a thumbnail made at ingestion, loaded from the API, and no larger than a thumbnail
    assert all(card["thumbnail"].startswith("/images/") for card in shown)
    sizes = tab.locator("#grid .card img").evaluate_all(
        "imgs => Promise.all(imgs.map(i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])))")
    assert all(0 < max(size) <= 320 for size in sizes), sizes
    screenshot(tab, "search-running-shoes")


def test_score_details_and_reload(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, "?q=sandals")
    first = wait_for_results(tab)
    assert first[0]["category"] == "Sandal"
    expect(tab.locator("#q")).to_have_value("sandals")
    expect(tab.locator("#grid .card .scores").first).to_be_hidden()
    tab.locator("#show-scores").check()
    expect(tab.locator("#grid .card .scores").first).to_be_visible()
    expect(tab.locator("#grid .card .scores").first).to_contain_text("relevance")


def test_upload_an_image_and_see_results(page: tuple[Page, Watch], base_url: str) -> None:
    tab, watch = page
    start(tab, base_url)
    tab.locator("#image-file").set_input_files(QUERY_IMAGE)
    expect(tab.locator("#query-image")).to_be_visible()
    shown = wait_for_results(tab)
    assert [card["category"] for card in shown[:3]] == ["Ankle boot"] * 3, shown[:3]
    assert any("/search/image" in url for url in watch.requests)
    screenshot(tab, "search-by-image")
    # words typed with the photo refine it; removing the photo leaves a text search
    tab.locator("#q").fill("sandals")
    refined = wait_for_results(tab, not_ids={card["id"] for card in shown[:1]})
    assert refined[0]["id"] != shown[0]["id"]
    tab.locator("#clear-image").click()
    expect(tab.locator("#query-image")).to_be_hidden()
    text_only = wait_for_results(tab)
    assert text_only[0]["category"] == "Sandal"


def test_drop_an_image_on_the_page(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url)
    data = list(QUERY_IMAGE.read_bytes())
    transfer = tab.evaluate_handle("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], 'boot.png', {type: 'image/png'}));
        return transfer; }""", data)
    tab.dispatch_event("#results", "dragover", {"dataTransfer": transfer})
    tab.dispatch_event("#results", "drop", {"dataTransfer": transfer})
    shown = wait_for_results(tab)
    assert shown[0]["category"] == "Ankle boot"


def test_paste_an_image(page: tuple[Page, Watch], base_url: str) -> None:
    tab, watch = page
    start(tab, base_url)
    tab.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], 'boot.png', {type: 'image/png'}));
        document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true}));
        }""", list(QUERY_IMAGE.read_bytes()))
    expect(tab.locator("#query-image")).to_be_visible()
    shown = wait_for_results(tab)
    assert shown[0]["category"] == "Ankle boot"
    assert any("/search/image" in url for url in watch.requests)


def test_a_file_that_is_not_an_image_is_refused_in_the_page(page: tuple[Page, Watch], base_url: str,
                                                            tmp_path: Path) -> None:
    tab, watch = page
    start(tab, base_url)
    text = tmp_path / "notes.txt"
    text.write_text("not a picture", encoding="utf-8")
    tab.locator("#image-file").set_input_files(text)
    expect(tab.locator("#notice")).to_contain_text("“notes.txt” is not an image")
    assert watch.searches() == []


def test_filters_change_the_grid(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, "?q=shoes")
    before = wait_for_results(tab)
    assert any(card["category"] != "Sandal" for card in before)
    facet = tab.locator('#facets fieldset[data-field="category"]')
    expect(facet).to_be_visible()
    facet.get_by_label(re.compile("^Sandal")).check()
    after = wait_for_results(tab, not_ids={before[0]["id"]} if before[0]["category"] != "Sandal" else None)
    tab.wait_for_function("() => [...document.querySelectorAll('#grid .category')]"
                          ".every(c => c.textContent === 'Sandal')")
    after = cards(tab)
    assert after and all(card["category"] == "Sandal" for card in after)
    assert "category=Sandal" in tab.url
    # a price ceiling: every price shown is under it
    tab.locator("#max-price").fill("40")
    tab.locator("#max-price").dispatch_event("change")
    tab.wait_for_function("() => !document.body.classList.contains('busy') && "
                          "new URLSearchParams(location.search).get('max_price') === '40'")
    wait_for_results(tab)
    prices = [float(re.sub(r"[^\d.]", "", card["price"])) for card in cards(tab)]
    assert prices and max(prices) <= 40, prices
    # in stock only
    tab.locator("#in-stock").check()
    tab.wait_for_function("() => !document.body.classList.contains('busy') && "
                          "new URLSearchParams(location.search).get('in_stock') === 'true'")
    assert all(card["stock"] == "In stock" for card in cards(tab))
    screenshot(tab, "filters")
    tab.locator("#clear-filters").click()
    expect(tab.locator("#max-price")).to_have_value("")
    tab.wait_for_function("() => !location.search.includes('category')")


def test_more_like_this(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, "?q=handbag")
    shown = wait_for_results(tab)
    chosen = shown[0]
    tab.locator("#grid .card").first.get_by_role("button", name=re.compile("^More like")).click()
    expect(tab.locator("#notice")).to_contain_text(f"Products like “{chosen['title']}”")
    similar = wait_for_results(tab)
    assert chosen["id"] not in {card["id"] for card in similar}
    assert [card["category"] for card in similar[:5]] == ["Bag"] * 5
    screenshot(tab, "more-like-this")
    tab.get_by_role("button", name="Back to search").click()
    expect(tab.locator("#notice")).to_be_hidden()
    assert wait_for_results(tab)[0]["id"] == chosen["id"]


def test_page_through_results(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, "?q=shirt")
    first = wait_for_results(tab)
    expect(tab.locator("#page-label")).to_have_text("Page 1")
    expect(tab.locator("#prev-page")).to_be_disabled()
    tab.locator("#next-page").click()
    expect(tab.locator("#page-label")).to_have_text("Page 2")
    second = wait_for_results(tab, not_ids={card["id"] for card in first})
    assert not {card["id"] for card in first} & {card["id"] for card in second}
    expect(tab.locator("#status")).to_contain_text("Results 25–")
    tab.go_back()
    expect(tab.locator("#page-label")).to_have_text("Page 1")
    assert wait_for_results(tab, not_ids={card["id"] for card in second})[0]["id"] == first[0]["id"]


def test_no_good_match_says_so(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, "?q=" + "zqxv+wkjh+plmo")
    expect(tab.locator("#notice")).to_contain_text("Nothing in the catalog matches “zqxv wkjh plmo”")
    expect(tab.locator("#grid .card")).to_have_count(0)


def test_keyboard_alone(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url)
    tab.evaluate("() => document.activeElement && document.activeElement.blur()")
    tab.keyboard.press("/")
    expect(tab.locator("#q")).to_be_focused()
    tab.keyboard.type("trousers")
    tab.keyboard.press("Enter")
    shown = wait_for_results(tab)
    more = tab.locator("#grid .card").first.locator(".more-like-this")
    more.focus()
    tab.keyboard.press("Enter")
    expect(tab.locator("#notice")).to_contain_text("Products like")
    assert wait_for_results(tab, not_ids={shown[0]["id"]})
    # every control has a name a screen reader can read
    unnamed = tab.evaluate("""() => [...document.querySelectorAll('button, input:not([type=hidden])')]
        .filter(e => e.offsetParent !== null)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []


def test_phone_sized_screen(browser: Browser, base_url: str) -> None:
    with open_page(browser, base_url, phone=True) as (tab, watch):
        tab.set_default_timeout(TIMEOUT_MS)
        start(tab, base_url, "?q=dress")
        wait_for_results(tab)
        width = tab.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        columns = tab.evaluate("() => getComputedStyle(document.getElementById('grid'))"
                               ".gridTemplateColumns.split(' ').length")
        assert columns == 2
        expect(tab.locator("#filters-panel")).not_to_have_attribute("open", "")
        screenshot(tab, "phone")
        assert watch.errors == [] and watch.outside() == []


def test_rerank_switch(page: tuple[Page, Watch], base_url: str, chat: FakeChatServer) -> None:
    tab, watch = page
    start(tab, base_url, "?q=summer+shoes")
    first_stage = wait_for_results(tab)
    switch = tab.get_by_label("Re-rank with fake-vlm")
    expect(switch).to_be_visible()
    asked = len(chat.seen)
    switch.check()
    expect(tab.locator("#status")).to_contain_text("re-ranked by fake-vlm (top 20)")
    reranked = cards(tab)
    assert len(chat.seen) > asked
    assert "rerank=true" in tab.url and any("rerank=true" in url for url in watch.searches())
    # the fake model says yes to products whose text says shoes or sneakers: they lead, the others follow
    assert {card["id"] for card in reranked} == {card["id"] for card in first_stage}
    tab.locator("#show-scores").check()
    expect(tab.locator("#grid .card .scores").first).to_contain_text("re-rank")
    screenshot(tab, "rerank")
    switch.uncheck()
    tab.wait_for_function("() => !location.search.includes('rerank') && "
                          "!document.body.classList.contains('busy')")
    expect(tab.locator("#status")).not_to_contain_text("re-rank")


def test_generated_descriptions_are_marked(page: tuple[Page, Watch], base_url: str) -> None:
    tab, _ = page
    start(tab, base_url, f"?q={MARKER}")
    shown = wait_for_results(tab)
    assert shown[0]["id"] == ENRICHED  # the generated words count in the lexical match
    generated = tab.locator("#grid .card").first.locator(".generated")
    expect(generated).to_be_visible()
    expect(generated).to_contain_text(MARKER)
    expect(generated.locator(".badge")).to_have_text("AI")
    assert "fake-vlm" in (generated.get_attribute("title") or "")
    expect(tab.locator("#grid .card").nth(1).locator(".generated")).to_be_hidden()


def test_variants_panel_and_imagine(page: tuple[Page, Watch], base_url: str) -> None:
    tab, watch = page
    start(tab, base_url, "?q=dress")
    shown = wait_for_results(tab)
    source = shown[0]
    tab.locator("#grid .card").first.get_by_role("button", name=re.compile("^Variants of")).click()
    dialog = tab.locator("#variants-dialog")
    expect(dialog).to_be_visible()
    expect(tab.locator("#variants-instruction")).to_be_focused()
    tab.locator("#variants-instruction").fill("on a beach")  # not a colour change: recolor says so
    dialog.get_by_role("button", name="Generate").click()
    expect(tab.locator("#variants-status")).to_contain_text("colour")
    refused = [error for error in watch.errors if "status of 422" in error]
    assert len(refused) == 1  # the browser logs the refused request; that one is expected
    watch.errors.remove(refused[0])
    tab.locator("#variants-instruction").fill("the same in red")
    dialog.get_by_role("button", name="Generate").click()
    expect(tab.locator("#variants-status")).to_contain_text("by recolor")
    images = tab.locator("#variants-images img")
    expect(images).to_have_count(1)
    width = images.first.evaluate("img => img.decode().then(() => img.naturalWidth)")
    assert width > 0
    expect(tab.locator("#variants-prompt")).to_contain_text("red")
    screenshot(tab, "variants")
    dialog.get_by_role("button", name="Find real products like it").click()
    expect(dialog).to_be_hidden()
    expect(tab.locator("#notice")).to_contain_text(f"Real products like your variant of “{source['title']}”")
    found = wait_for_results(tab)
    assert source["id"] not in {card["id"] for card in found}
    assert sum(card["category"] == "Dress" for card in found[:5]) >= 3
    screenshot(tab, "imagine")
    tab.get_by_role("button", name="Back to search").click()
    expect(tab.locator("#notice")).to_be_hidden()


def test_keyed_features_are_not_offered(browser: Browser, chat: FakeChatServer,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """With API keys set, the page (which has no key) shows neither the Variants buttons nor the re-rank switch,
    even when the address asks for rerank=true, and still searches."""
    settings = index_demo_subset(tmp_path_factory.mktemp("keyed"), count=30, auth={"api_keys": ["page-test-key"]},
                                 rerank={"backend": "openai", "model": "fake-vlm", "base_url": chat.url})
    with running(create_app(settings)) as url, open_page(browser, url) as (tab, watch):
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_ready(client)
            assert client.get("/capabilities").json()["rerank"] is True  # there is a re-ranker, but it is keyed
        tab.set_default_timeout(TIMEOUT_MS)
        start(tab, url, "?q=dress&rerank=true")
        wait_for_results(tab)
        expect(tab.locator("#rerank-switch")).to_be_hidden()
        expect(tab.get_by_role("button", name=re.compile("^Variants of"))).to_have_count(0)
        assert watch.searches() and not any("rerank=true" in search for search in watch.searches())
        assert watch.errors == [] and watch.outside() == []

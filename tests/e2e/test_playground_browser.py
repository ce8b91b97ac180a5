"""The web face in a real browser: Debian's headless Chromium driven by Playwright.

Against a stub upstream (the proxy in this process, served by Werkzeug on loopback, over the
scripted fake upstream): the playground runs two approaches side by side and shows both
answers, their token counts, upstream calls and trace entries; a reply carrying ``<script>``
is shown as text; the key prompt appears when the proxy has a key; the log viewer lists,
filters and opens records; the API docs render with no request leaving the machine. Against
the embedded model (the session's ``proxy`` fixture, started under the model lock): two
approaches side by side with real answers.

Chromium is Debian's (``apt-get install chromium``; scripts/test.sh installs it), launched by
path: Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from optillm.app import create_app
from optillm.settings import Settings
from tests.fakes import FakeUpstream

from .conftest import MODEL

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("OPTILLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KEY = "sk-browser-test"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class Served:
    """The proxy over a fake upstream, on a loopback port, in this process."""

    def __init__(self, tmp_path, **settings):
        from werkzeug.serving import make_server

        self.fake = FakeUpstream(default="The answer is 391.")
        settings.setdefault("model", "fake-model")
        self.app = create_app(Settings(base_url="http://fake.invalid/v1", log="warning",
                                       keepalive_interval=0.05,
                                       conversation_log_dir=str(tmp_path / "logs"),
                                       cache_dir=str(tmp_path / "store"),
                                       **settings), upstream=self.fake)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.app.extensions["optillm"].close()


@pytest.fixture
def stub(tmp_path) -> Iterator[Served]:
    served = Served(tmp_path)
    yield served
    served.close()


@pytest.fixture
def keyed_stub(tmp_path) -> Iterator[Served]:
    served = Served(tmp_path, optillm_api_key=KEY)
    yield served
    served.close()


@pytest.fixture
def page(browser):
    """A fresh tab that refuses (and records) every request leaving loopback."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.outside = []  # type: ignore[attr-defined]
    tab.errors = []  # type: ignore[attr-defined]

    def guard(route):
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith("data:") or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            tab.outside.append(route.request.url)
            route.abort()

    tab.route("**/*", guard)
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    yield tab
    context.close()


def run_side_by_side(page, base_url: str, approaches: list[str], prompt: str,
                     max_tokens: str = "") -> dict[str, object]:
    page.goto(base_url + "/")
    assert page.url.endswith("/playground")  # a browser at / lands on the playground
    page.fill("#prompt", prompt)
    if max_tokens:
        page.fill("#max-tokens", max_tokens)
    for slug in approaches:
        page.check(f'#approaches input[value="{slug}"]')
    page.click("#run")
    columns = {}
    for slug in approaches:
        column = page.locator(f'.column[data-approach="{slug}"]')
        column.locator(".wall-time").wait_for()
        columns[slug] = column
    return columns


def column_facts(column) -> dict[str, object]:
    return {"answer": column.locator(".answer").text_content(),
            "prompt": column.locator(".prompt-tokens").text_content(),
            "completion": column.locator(".completion-tokens").text_content(),
            "calls": column.locator(".upstream-calls").text_content(),
            "traces": column.locator(".trace-entry").count(),
            "status": column.locator("header .pill").text_content()}


def test_two_approaches_side_by_side_against_a_stub(page, stub):
    columns = run_side_by_side(page, stub.url, ["bon", "moa"], "What is 17 * 23?")
    facts = {slug: column_facts(c) for slug, c in columns.items()}
    for slug, f in facts.items():
        assert f["status"] == "done", (slug, f)
        assert f["answer"] == "The answer is 391.", (slug, f)
        assert int(f["prompt"]) > 0 and int(f["completion"]) > 0, (slug, f)
        assert f["traces"] >= 1 and int(f["calls"]) == f["traces"], (slug, f)
    assert int(facts["bon"]["calls"]) >= 2 and int(facts["moa"]["calls"]) >= 2  # multi-call
    # side by side: both columns on one row
    boxes = [columns[s].bounding_box() for s in ("bon", "moa")]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[0]["x"] < boxes[1]["x"]
    # bon's votes are shown as its metadata; a trace entry opens on its prompt and reply
    assert "optillm_votes" in columns["bon"].locator(".metadata").text_content()
    entry = columns["moa"].locator(".trace-entry").first
    entry.locator("summary").click()
    assert "What is 17 * 23?" in entry.locator("pre").first.text_content()
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_request_id_links_to_the_same_record(page, stub):
    columns = run_side_by_side(page, stub.url, ["re2"], "Say hi")
    link = columns["re2"].locator("a.request-link")
    request_id = link.text_content()
    link.click()
    page.wait_for_url("**/playground/logs?request=*")
    detail = page.locator("#detail")
    detail.locator(".trace-entry").first.wait_for()
    assert request_id in detail.text_content()
    assert detail.locator(".trace-entry").count() == 1  # re2: one upstream call


def test_a_reply_with_script_is_shown_as_text(page, stub):
    evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>b</b>'
    stub.fake.default = evil
    columns = run_side_by_side(page, stub.url, ["none", "re2"], "Be evil")
    for slug, column in columns.items():
        answer = column.locator(".answer")
        assert answer.text_content() == evil, slug
        assert answer.locator("script, img, b").count() == 0, slug
        column.locator(".trace-entry summary").first.click()
        assert column.locator(".trace-view script, .trace-view img").count() == 0, slug
        assert "<script>" in column.locator(".trace-view").text_content(), slug
    assert page.evaluate("window.__pwned") is None
    page.goto(stub.url + "/playground/logs")  # the viewer shows the same text as text
    page.locator("tr.record-row").first.click()
    page.locator("#detail .trace-entry").first.wait_for()
    assert page.locator("#detail script, #detail img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_key_prompt_when_the_proxy_has_a_key(page, keyed_stub):
    page.goto(keyed_stub.url + "/playground")
    form = page.locator("#key-form")
    form.wait_for(state="visible")
    assert page.locator("#approaches input").count() == 0  # nothing loads without the key
    page.fill("#key-input", "wrong")
    page.click("#key-form button")
    form.wait_for(state="visible")
    page.locator("#key-error").wait_for(state="visible")
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.locator('#approaches input[value="bon"]').wait_for()
    assert form.is_hidden()
    page.reload()  # asked once: the tab keeps the key
    page.locator('#approaches input[value="bon"]').wait_for()
    assert page.locator("#key-form").is_hidden()
    columns = run_side_by_side(page, keyed_stub.url, ["re2"], "hi")
    assert column_facts(columns["re2"])["traces"] == 1


def test_logs_viewer_filters_by_approach_and_status(page, stub):
    from optillm.errors import UpstreamError

    run_side_by_side(page, stub.url, ["re2", "bon"], "first")
    stub.fake.enqueue(UpstreamError("upstream down"))
    columns = run_side_by_side(page, stub.url, ["re2"], "second")
    assert column_facts(columns["re2"])["status"] == "error"
    page.goto(stub.url + "/playground/logs")
    rows = page.locator("tr.record-row")
    expect(rows).to_have_count(3)
    page.fill("#f-approach", "re2")
    page.click("#filter-form button")
    expect(rows).to_have_count(2)
    page.select_option("#f-status", "error")
    page.click("#filter-form button")
    expect(rows).to_have_count(1)
    rows.first.click()
    assert "upstream down" in page.locator("#detail").text_content()


def test_api_docs_render_offline(page, stub):
    page.goto(stub.url + "/docs")
    title = page.locator("h1", has_text="optillm")
    title.wait_for(timeout=90_000)  # Redoc parses ~380 schemas first
    assert page.locator("h2").count() >= 20  # one per operation
    assert page.get_by_text("/v1/chat/completions").count() >= 1
    assert not page.outside and not page.errors, (page.outside, page.errors)  # no CDN


def test_two_approaches_side_by_side_on_the_embedded_model(page, proxy):
    """Zero configuration: the page picks the embedded model as the base model itself."""
    columns = run_side_by_side(page, proxy.url, ["none", "re2"], "Name a colour.",
                               max_tokens="24")
    assert page.locator("#model").input_value() == MODEL  # the embedded model's name
    for slug, column in columns.items():
        f = column_facts(column)
        assert f["status"] == "done" and f["answer"].strip(), (slug, f)
        assert int(f["prompt"]) > 0 and 0 < int(f["completion"]) <= 24 * int(f["calls"]), \
            (slug, f)
        assert f["traces"] >= 1, (slug, f)
    assert not page.outside and not page.errors, (page.outside, page.errors)

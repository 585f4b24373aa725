"""The polite fetcher against a real local web server: every failure mode is a Page, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mythline_cli import fetch, paths

import source_server
from source_server import SourceServer


@pytest.fixture
def pages():
    with SourceServer() as server:
        yield server


def fetcher(**policy) -> tuple[fetch.Fetcher, list[float]]:
    waits: list[float] = []
    settings = {"host_delay": 0.0, "timeout": 5.0, **policy}
    return fetch.Fetcher(fetch.Policy(**settings), sleep=waits.append), waits


def test_a_wiki_page_becomes_its_main_text(home, pages):
    f, _ = fetcher()
    page = f.fetch(pages.base_url + "/wiki/Thrall")
    assert page.ok and page.title == "Thrall"
    assert "born in the old country during the long winter" in page.text
    # Navigation, sidebar and footer are not the article.
    for chrome in ("Random page", "Donate to the wiki", "Privacy policy"):
        assert chrome not in page.text
    assert page.sha256 == fetch.text_sha(page.text)
    ua = pages.requests[-1]["headers"]["user-agent"]
    assert ua.startswith("mythline/") and "lore research client" in ua


def test_the_cache_revalidates_with_etag_and_a_304_downloads_nothing(home, pages):
    url = pages.base_url + "/wiki/Jaina_Proudmoore"
    first = fetcher(cache_max_age=0)[0].fetch(url)
    assert first.ok and first.cached is None
    again = fetcher(cache_max_age=0)[0].fetch(url)
    assert again.ok and again.cached == "revalidated" and again.text == first.text
    conditional = [r for r in pages.requests if r["path"] == "/wiki/Jaina_Proudmoore"][-1]
    assert conditional["headers"]["if-none-match"].startswith('"')
    # Within cache_max_age the page is not asked for at all.
    hits = pages.hits("/wiki/Jaina_Proudmoore")
    fresh = fetcher(cache_max_age=3600)[0].fetch(url)
    assert fresh.cached == "fresh" and pages.hits("/wiki/Jaina_Proudmoore") == hits
    # A changed page is downloaded again.
    pages.pages["Jaina_Proudmoore"] = "<html><body><article><p>" + "A new text about Jaina. " * 20 + "</p></article></body></html>"
    changed = fetcher(cache_max_age=0)[0].fetch(url)
    assert changed.ok and changed.cached is None and "A new text about Jaina" in changed.text


def test_redirects_are_followed_and_the_final_url_kept(home, pages):
    page = fetcher()[0].fetch(pages.base_url + "/redirect/2/Thrall")
    assert page.ok and page.final_url == pages.base_url + "/wiki/Thrall"


def test_a_redirect_loop_or_too_many_redirects_drops_the_source(home, pages):
    loop = fetcher()[0].fetch(pages.base_url + "/loop")
    assert loop.status == "gone" and "redirects" in loop.reason
    far = fetcher(max_redirects=2)[0].fetch(pages.base_url + "/redirect/5/Thrall")
    assert far.status == "gone" and "more than 2 redirects" in far.reason


@pytest.mark.parametrize("path, status", [("/gone/Thrall", 404), ("/removed/Thrall", 410)])
def test_404_and_410_drop_the_source_with_a_reason(home, pages, path, status):
    page = fetcher()[0].fetch(pages.base_url + path)
    assert page.status == "gone" and page.reason.startswith(f"HTTP {status}")


def test_a_500_backs_off_the_host_for_every_process_then_it_recovers(home, pages):
    url = pages.base_url + "/flaky/Thrall"
    first = fetcher(backoff=60)[0].fetch(url)
    assert first.status == "backoff" and "HTTP 500" in first.reason
    hosts = json.loads(paths.hosts_state().read_text())
    assert hosts[f"127.0.0.1:{pages.port}"]["backoff_until"] > 0
    # Another process sees the same backoff and sends nothing.
    hits = pages.hits("/flaky/Thrall")
    code = ("from mythline_cli import fetch; import sys; "
            f"p = fetch.Fetcher(fetch.Policy(host_delay=0)).fetch({url!r}); print(p.status)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "backoff" and pages.hits("/flaky/Thrall") == hits
    # Once the backoff has passed, the page is fetched.
    later = fetch.Fetcher(fetch.Policy(host_delay=0), clock=lambda: __import__("time").time() + 120,
                          sleep=lambda s: None).fetch(url)
    assert later.ok and "Thrall" in later.text


def test_429_honours_retry_after(home, pages):
    pages.retry_after = 90
    page = fetcher(backoff=5)[0].fetch(pages.base_url + "/busy/Thrall")
    assert page.status == "backoff" and "HTTP 429" in page.reason and "90s" in page.reason


def test_binary_huge_and_slow_bodies_are_skipped(home, pages):
    f, _ = fetcher(max_bytes=1_000_000, timeout=1.0)
    binary = f.fetch(pages.base_url + "/binary")
    assert binary.status == "skipped" and "not text (image/png)" in binary.reason
    huge = f.fetch(pages.base_url + "/huge")
    assert huge.status == "skipped" and "larger than sources.max_bytes" in huge.reason
    slow = f.fetch(pages.base_url + "/slow")
    assert slow.status == "failed" and "1s" in slow.reason


def test_a_latin1_page_is_decoded_by_its_charset(home, pages):
    pages.pages["Quel'Thalas"] = ("<html><head><meta charset=\"utf-8\"><title>Quel'Thalas</title></head><body>"
                                   "<article><p>Quel'Thalas, the realm of the quel'dorei, lies north of Lordaeron; "
                                   "its people speak of the Sunwell with reverence and of the café of Silvermoon "
                                   "with pride, as every visitor to the Eversong forest learns.</p></article></body></html>")
    page = fetcher()[0].fetch(pages.base_url + "/latin1/Quel'Thalas")
    assert page.ok and "café of Silvermoon" in page.text


def test_robots_txt_is_honoured(home, pages):
    f, _ = fetcher()
    page = f.fetch(pages.base_url + "/private/Secret")
    assert page.status == "blocked" and "robots.txt" in page.reason
    assert pages.hits("/private/Secret") == 0


def test_the_host_delay_spaces_requests_across_fetchers(home, pages):
    first, waits1 = fetcher(host_delay=30)
    second, waits2 = fetcher(host_delay=30)
    assert first.fetch(pages.base_url + "/wiki/A").ok
    assert second.fetch(pages.base_url + "/wiki/B").ok
    assert waits1 == [] and len(waits2) == 1 and 29 < waits2[0] <= 30


def test_an_unreachable_host_is_a_failure_not_a_crash(home):
    page = fetcher(timeout=2)[0].fetch("http://127.0.0.1:9/wiki/Thrall")
    assert page.status == "blocked"  # robots.txt cannot be read: nothing is fetched there
    assert fetcher()[0].fetch("ftp://example.org/x").status == "skipped"


def test_a_corrupt_cache_entry_is_moved_aside(home, pages):
    url = pages.base_url + "/wiki/Thrall"
    assert fetcher()[0].fetch(url).ok
    path = paths.page_cache(fetch.url_key(url))
    path.write_text("{torn")
    page = fetcher()[0].fetch(url)
    assert page.ok and page.cached is None
    assert list(path.parent.glob(path.name + ".corrupt-*"))


def test_trafilatura_is_imported_only_when_a_page_is_extracted():
    code = ("import sys, mythline_cli.fetch; assert 'trafilatura' not in sys.modules; "
            "mythline_cli.fetch.extract('<html><body><p>x</p></body></html>'); assert 'trafilatura' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_kept_text_that_is_not_whole_is_written_again(home, pages):
    url = pages.base_url + "/wiki/Thrall"
    page = fetcher()[0].fetch(url)
    kept = paths.source_text(page.sha256)
    kept.write_text("torn")
    again = fetcher()[0].fetch(url)  # the cache points at a text that fails its hash: fetched again
    assert again.ok and again.cached is None and kept.read_text(encoding="utf-8") == page.text


# A page fetched again in a fresh interpreter, as the next run fetches it: whether it was
# extracted again shows in whether trafilatura was imported.
FETCH_AGAIN = """
import json, sys
from mythline_cli import fetch
f = fetch.Fetcher(fetch.Policy(host_delay=0.0, timeout=5.0, cache_max_age=0.0))
pages = [f.fetch(url) for url in sys.argv[1:]]
print(json.dumps({"pages": [[p.status, p.title, p.text, p.cached] for p in pages],
                  "extracted": "trafilatura.core" in sys.modules}))
"""


def fetch_again(*urls: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FETCH_AGAIN, *urls], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_same_html_downloaded_again_is_not_extracted_again(home, pages):
    chronicle = pages.base_url + "/chronicle/Thrall"  # Last-Modified but no 304: always the whole page
    f, _ = fetcher()
    first = [f.fetch(chronicle), f.fetch(pages.base_url + "/wiki/Thrall")]
    assert all(p.ok for p in first)
    # Stale (cache_max_age 0): downloaded again, and the wiki page once more under a second URL.
    again = fetch_again(chronicle, pages.base_url + "/redirect/1/Thrall")
    assert pages.hits("/chronicle/Thrall") == 2 and pages.hits("/redirect/1/Thrall") == 1
    assert again["pages"] == [["ok", p.title, p.text, None] for p in first]
    assert again["extracted"] is False


def test_changed_html_is_extracted_afresh(home, pages):
    url = pages.base_url + "/wiki/Thrall"
    f, _ = fetcher()
    assert "long winter" in f.fetch(url).text
    pages.pages["Thrall"] = source_server.article("Thrall").replace("the long winter", "the endless summer")
    again = fetch_again(url)
    assert again["extracted"] is True
    status, title, text, cached = again["pages"][0]
    assert (status, title, cached) == ("ok", "Thrall", None)
    assert "the endless summer" in text and "long winter" not in text


def test_a_torn_kept_extraction_is_extracted_again(home, pages):
    url = pages.base_url + "/chronicle/Thrall"
    f, _ = fetcher()
    page = f.fetch(url)
    kept = paths.source_text(page.sha256)
    kept.write_bytes(kept.read_bytes()[:20])  # a kept text that is not whole cannot stand in for it
    again = fetch_again(url)
    assert again["extracted"] is True and again["pages"][0][2] == page.text

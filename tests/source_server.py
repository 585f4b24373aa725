"""A real-socket web server of source pages for the retrieval tests.

``SourceServer`` listens on ``127.0.0.1`` on a random free port, in a background thread of
the pytest process (like ``llm_server.py``), so the fetcher in-process and a ``mythline run``
subprocess both reach it. Built-in routes::

    /robots.txt                  Disallow: /private/ (or ``server.robots`` when set)
    /chronicle/<Page>            a second, different page about <Page>
    /wiki/<Page>                 a wiki-like HTML article about <Page> (navigation, sidebar,
                                 footer around the main text); ETag and Last-Modified, 304 on
                                 a matching If-None-Match / If-Modified-Since
    /private/<anything>          a page robots.txt forbids
    /redirect/<n>/<Page>         n redirects, then /wiki/<Page>
    /loop                        a redirect loop (/loop -> /loop2 -> /loop)
    /gone/<Page>                 404;   /removed/<Page>  410
    /flaky/<Page>                500 the first time, then the article
    /busy/<Page>                 429 with Retry-After: 1 the first time, then the article
    /huge                        an HTML page of several megabytes
    /binary                      image/png bytes
    /slow                        a body that drips one byte every 0.2 s
    /latin1/<Page>               the article in ISO-8859-1 with that charset in Content-Type
    /notes.txt                   plain text

``server.pages[name] = html`` replaces the article of one page; ``server.requests`` records
every request (path, headers); ``server.hits(path)`` counts them.
"""

from __future__ import annotations

import hashlib
import http.server
import time
import urllib.parse
from typing import Any

from httpd import Background, Server

__all__ = ["SourceServer", "article", "chronicle"]

ROBOTS = "User-agent: *\nDisallow: /private/\n"
LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"


def article(page: str) -> str:
    """A wiki page about ``page``: a main article with boilerplate around it, as wikis have."""
    name = page.replace("_", " ")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} - Test Wiki</title></head>
<body>
<nav class="site-nav"><ul><li><a href="/">Main page</a></li><li><a href="/random">Random page</a></li>
<li><a href="/recent">Recent changes</a></li></ul></nav>
<div id="sidebar"><p>Community portal</p><p>Donate to the wiki servers</p></div>
<main id="content"><article>
<h1>{name}</h1>
<p>{name} is a figure of great renown in the lore of the world. The chronicles say that {name}
was born in the old country during the long winter, and that the elders foretold a life of war.</p>
<p>In later years {name} led the people through the burning of the capital and the march to the
northern coast, where the last stand against the invaders was fought and won at great cost.</p>
<p>Scholars still dispute whether {name} knew of the betrayal before the council met; the oldest
accounts and the newer chronicles disagree on this point.</p>
</article></main>
<footer><p>Content is available under a free licence unless otherwise noted.</p>
<p>Privacy policy - About the wiki - Disclaimers</p></footer>
</body></html>
"""


def chronicle(page: str) -> str:
    """A second, different page about ``page`` (another site's account)."""
    name = page.replace("_", " ")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>The Chronicle of {name}</title></head>
<body><header><p>Chronicle archive - Home - Search</p></header>
<article><h1>The Chronicle of {name}</h1>
<p>According to the chronicle, {name} first came to prominence after the fall of the old keep,
when the survivors gathered under a new banner in the hills.</p>
<p>The chronicle also records that {name} swore an oath at the river ford and kept it until the end.</p>
</article><footer><p>Archive footer and copyright notice</p></footer></body></html>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        owner._record({"path": path, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "time": time.monotonic()})
        try:
            self._route(owner, path)
        except OSError:
            self.close_connection = True

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _article(self, owner: SourceServer, page: str, *, charset: str = "utf-8") -> None:
        html = owner.pages.get(page) or article(page)
        body = html.replace('charset="utf-8"', f'charset="{charset}"').encode(charset, "replace")
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        if (self.headers.get("If-None-Match") == etag
                or (self.headers.get("If-Modified-Since") == LAST_MODIFIED and "If-None-Match" not in self.headers)):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, body, f"text/html; charset={charset}", {"ETag": etag, "Last-Modified": LAST_MODIFIED})

    def _route(self, owner: SourceServer, path: str) -> None:
        parts = path.strip("/").split("/")
        head = parts[0] if parts else ""
        rest = "/".join(parts[1:])
        if path == "/robots.txt":
            if owner.robots is None:
                return self._send(404, b"no robots", "text/plain")
            return self._send(200, owner.robots.encode(), "text/plain")
        if head == "wiki":
            return self._article(owner, rest)
        if head == "chronicle":
            return self._send(200, chronicle(rest).encode(), headers={"Last-Modified": LAST_MODIFIED})
        if head == "private":
            return self._article(owner, rest)
        if head == "redirect":
            n = int(parts[1])
            page = "/".join(parts[2:])
            target = f"/redirect/{n - 1}/{page}" if n > 1 else f"/wiki/{page}"
            return self._send(301, b"", headers={"Location": target})
        if path == "/loop":
            return self._send(302, b"", headers={"Location": "/loop2"})
        if path == "/loop2":
            return self._send(302, b"", headers={"Location": "/loop"})
        if head == "gone":
            return self._send(404, b"<html><body>Not found</body></html>")
        if head == "removed":
            return self._send(410, b"<html><body>Gone</body></html>")
        if head in ("flaky", "busy"):
            key = path
            with owner._lock:
                first = key not in owner._seen
                owner._seen.add(key)
            if first and head == "flaky":
                return self._send(500, b"<html><body>Internal error</body></html>")
            if first:
                return self._send(429, b"slow down", "text/plain", {"Retry-After": str(owner.retry_after)})
            return self._article(owner, rest)
        if path == "/huge":
            filler = "<p>" + "lorem ipsum dolor sit amet " * 40 + "</p>\n"
            body = ("<html><body><main>" + filler * 4000 + "</main></body></html>").encode()
            return self._send(200, body)
        if path == "/binary":
            return self._send(200, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64, "image/png")
        if path == "/slow":
            body = article("Slow").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                if owner._stopping.wait(0.2):
                    return
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            return
        if head == "latin1":
            return self._article(owner, rest, charset="iso-8859-1")
        if path == "/notes.txt":
            return self._send(200, owner.text.encode(), "text/plain; charset=utf-8")
        return self._send(404, b"<html><body>no such page</body></html>")


class SourceServer(Background):
    """Real HTTP server on 127.0.0.1 serving wiki-like source pages and their failure modes."""

    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self._requests: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self.pages: dict[str, str] = {}
        self.robots: str | None = ROBOTS
        self.retry_after = 1
        self.text = "Plain notes about the world.\n"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r["path"] == path)

    def _record(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(request)

"""The polite fetcher: one source page as main text, or the reason it cannot be used.

A well-behaved client: an identifying User-Agent, robots.txt honoured, one request per host
per ``host_delay`` across every process of the fleet (a file-locked table under the state
home), a timeout on the whole download, a redirect limit, a size cap, a content-type check
and the page's charset. HTML is reduced to its main text by trafilatura, imported only when
a page is extracted. Pages are cached under the state home by URL and revalidated with
ETag / Last-Modified: a 304 downloads nothing. An extraction is kept by the sha256 of the
HTML it came from: the same HTML downloaded again is not extracted again.

A fetch never raises for what a server does: every outcome is a ``Page`` whose ``status``
says what happened (``ok``, ``gone``, ``blocked``, ``skipped``, ``backoff``, ``failed``).
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import __version__, files, paths
from .retry_after import retry_after
from .stopping import cut_short

try:  # the openai SDK brings one of the two, under whichever name its release uses
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef]

if TYPE_CHECKING:
    import urllib.robotparser

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")
ROBOTS_MAX_AGE = 86400.0
MAX_ROBOTS_BYTES = 500_000
# Bumped when extract() changes what it gives for the same HTML (see extractor_tag).
EXTRACTION = 1
_META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass
class Page:
    """What fetching one URL gave: text to use, or why there is none."""

    url: str
    status: str  # ok | gone | blocked | skipped | backoff | failed
    final_url: str | None = None
    title: str = ""
    text: str = ""
    reason: str | None = None
    fetched_at: str | None = None
    sha256: str | None = None
    cached: str | None = None  # None (downloaded), "fresh" (no request), "revalidated" (304)
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Policy:
    """How politely and how far the fetcher goes (from the config's ``[sources]``)."""

    timeout: float = 20.0
    max_bytes: int = 2_000_000
    max_redirects: int = 5
    host_delay: float = 2.0
    cache_max_age: float = 86400.0
    backoff: float = 300.0
    max_backoff: float = 6 * 3600.0
    contact: str = ""

    @property
    def user_agent(self) -> str:
        extra = f"; {self.contact}" if self.contact else ""
        return f"mythline/{__version__} (lore research client{extra})"


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def save_text(text: str) -> str:
    """Keep ``text`` under the state home by its sha256 (written once); returns the hash."""
    digest = text_sha(text)
    if load_text(digest) is None:  # missing, or not whole: its name is its hash
        files.write_bytes_atomic(paths.source_text(digest), text.encode("utf-8", "surrogatepass"))
    return digest


def load_text(digest: str) -> str | None:
    try:
        text = paths.source_text(digest).read_bytes().decode("utf-8", "surrogatepass")
    except (OSError, UnicodeDecodeError):
        return None
    return text if text_sha(text) == digest else None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc.lower()


class Hosts:
    """Per-host politeness shared by every process: the next free slot and any backoff.

    The lock is held for the milliseconds of a read-modify-write, never across a request:
    a caller takes a slot, releases the lock, then sleeps until its slot comes."""

    def __init__(self, policy: Policy, *, clock: Callable[[], float] = time.time) -> None:
        self.policy, self.clock = policy, clock

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        from .locking import acquire

        paths.sources_dir().mkdir(parents=True, exist_ok=True)
        held = acquire(paths.hosts_lock(), 10.0, cut_short="waiting for the hosts lock")
        try:
            try:
                state = files.read_json(paths.hosts_state())
            except files.CorruptFile:
                state = None  # only pacing is lost: start afresh
            if not isinstance(state, dict):
                state = {}
            result = change(state)
            files.write_json(paths.hosts_state(), state, durable=False)
            return result
        finally:
            held.release()

    def slot(self, host: str) -> tuple[float, str | None]:
        """(seconds to wait before the request, None) or (0, why the host is backed off)."""
        now = self.clock()

        def take(state: dict[str, Any]) -> tuple[float, str | None]:
            entry = _v if isinstance(_v := state.get(host), dict) else {}
            until = entry.get("backoff_until")
            if isinstance(until, (int, float)) and until > now:
                return 0.0, f"{host} asked us to back off until {datetime.fromtimestamp(until, timezone.utc):%H:%M:%S} UTC ({entry.get('reason')})"
            nxt = entry.get("next")
            start = max(now, nxt) if isinstance(nxt, (int, float)) and nxt < now + 3600 else now
            state[host] = {**entry, "next": start + self.policy.host_delay}
            return start - now, None

        return self._update(take)

    def back_off(self, host: str, seconds: float | None, reason: str) -> float:
        now = self.clock()

        def mark(state: dict[str, Any]) -> float:
            entry = _v if isinstance(_v := state.get(host), dict) else {}
            strikes = int(entry.get("strikes") or 0) + 1
            wait = seconds if seconds is not None else self.policy.backoff * 2 ** (strikes - 1)
            wait = min(max(wait, self.policy.host_delay), self.policy.max_backoff)
            state[host] = {**entry, "strikes": strikes, "backoff_until": now + wait, "reason": reason}
            return wait

        return self._update(mark)

    def clear(self, host: str) -> None:
        def reset(state: dict[str, Any]) -> None:
            entry = state.get(host)
            if isinstance(entry, dict) and ("strikes" in entry or "backoff_until" in entry):
                state[host] = {"next": entry.get("next")}

        self._update(reset)


def decode(body: bytes, content_type: str) -> str:
    """``body`` as text: the header's charset, else an HTML meta charset, else UTF-8."""
    charset = None
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip("\"' ")
    if charset is None:
        found = _META_CHARSET.search(body[:4096])
        charset = found.group(1).decode("ascii", "replace") if found else "utf-8"
    try:
        return body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


def extract(html: str) -> tuple[str, str]:
    """(title, main text) of an HTML page, boilerplate (navigation, sidebars, footers) removed.

    The text is trafilatura's ``bare_extraction`` (comments off, tables on); the title is the
    one its metadata pass gives (OpenGraph and other meta tags, then JSON-LD, then the page's
    own title or heading), without the rest of that pass: a page's date, author and licence
    are never used, and finding the date is what needs htmldate."""
    core, metadata, utils = _extractor()
    doc = core.bare_extraction(html, with_metadata=False, include_comments=False, include_tables=True)
    if doc is None:
        return "", ""
    return _title(metadata, utils.load_html(html)), (getattr(doc, "text", None) or "").strip()


def extractor_tag() -> str:
    """What made an extraction, so a kept one from another trafilatura release is not reused:
    our own version of it and the installed trafilatura's ``__init__.py`` (which carries its
    version), found without importing it."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("trafilatura")
    try:
        st = os.stat(spec.origin) if spec is not None and spec.origin else None
    except OSError:
        st = None
    return f"{EXTRACTION}/" + (f"{st.st_size}-{st.st_mtime_ns}" if st is not None else "?")


def _title(metadata: Any, tree: Any) -> str:
    """The title ``bare_extraction(with_metadata=True)`` reports, by the same steps in the same
    order (``trafilatura.metadata.extract_metadata``)."""
    if tree is None:
        return ""
    meta = metadata.examine_meta(tree)
    if meta.author and " " not in meta.author:  # as extract_metadata does, before JSON-LD
        meta.author = None
    try:
        meta = metadata.extract_meta_json(tree, meta)
    except Exception:  # noqa: BLE001 - extract_metadata ignores a broken JSON-LD block too
        pass
    if not meta.title:
        meta.title = metadata.extract_title(tree)
    meta.clean_and_trim()
    return (meta.title or "").strip()


# What trafilatura's modules import at load time but extraction calls only for some pages:
# courlan (URLs in meta tags), justext (the rescue of a page the main extractor finds little
# in), charset_normalizer (bytes input: we pass text), htmldate (dates: never asked for),
# urllib3 (responses: never passed). Together they are most of trafilatura's import time.
_DEFERRED_MODULES = ("courlan", "htmldate", "justext", "justext.core", "justext.utils", "charset_normalizer",
                     "urllib3", "urllib3.response")


class _Later:
    """``name`` of ``module``, imported the first time it is called or looked into."""

    def __init__(self, module: str, name: str) -> None:
        self._where = (module, name)

    def _target(self) -> Any:
        import importlib

        module, name = self._where
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._target(), attr)


def _placeholder(module: str) -> Any:
    import types

    class Placeholder(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            if name == "HTTPResponse":  # only in isinstance() and a type alias: a class no input is
                return type(name, (), {"__module__": module})
            return _Later(module, name)

    return Placeholder(module)


def _extractor() -> tuple[Any, Any, Any]:
    """trafilatura's ``core``, ``metadata`` and ``utils`` modules, loaded without the package's
    ``__init__`` (its downloader needs urllib3 at import) and with the packages in
    ``_DEFERRED_MODULES`` imported only when a page needs them. When trafilatura is already imported, or the
    deferred load fails (another trafilatura release), the plain import."""
    import sys

    if "trafilatura.core" not in sys.modules:
        try:
            _load_deferred()
        except Exception:  # noqa: BLE001 - any surprise: the plain import below
            for name in [m for m in sys.modules if m == "trafilatura" or m.startswith("trafilatura.")]:
                del sys.modules[name]
    import trafilatura.core
    import trafilatura.metadata
    import trafilatura.utils

    return trafilatura.core, trafilatura.metadata, trafilatura.utils


def _load_deferred() -> None:
    import importlib
    import importlib.util
    import logging
    import sys
    import types

    spec = importlib.util.find_spec("trafilatura")
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        raise ImportError("trafilatura is not installed as a package")
    package = types.ModuleType("trafilatura")
    package.__spec__, package.__file__, package.__package__ = spec, spec.origin, "trafilatura"
    package.__path__ = list(spec.submodule_search_locations)
    loader = spec.loader

    def complete(name: str) -> Any:  # `import trafilatura` later in the process: the whole package
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    # What the skipped __init__ does besides importing: trafilatura's warnings stay off stderr.
    logging.getLogger("trafilatura").addHandler(logging.NullHandler())
    placed = [m for m in _DEFERRED_MODULES if m.split(".")[0] not in sys.modules]
    sys.modules.update({m: _placeholder(m) for m in placed})
    sys.modules["trafilatura"] = package
    try:
        for name in ("trafilatura.core", "trafilatura.metadata", "trafilatura.utils"):
            importlib.import_module(name)
    finally:
        for m in placed:
            del sys.modules[m]


class Fetcher:
    """Fetches pages under a ``Policy``; ``sleep`` and ``clock`` are injectable for tests."""

    def __init__(self, policy: Policy, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, transport: Any = None) -> None:
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.hosts = Hosts(policy, clock=clock)
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        from . import tls

        self._client = httpx.Client(
            follow_redirects=True, max_redirects=policy.max_redirects, transport=transport,
            timeout=httpx.Timeout(policy.timeout), headers={"User-Agent": policy.user_agent},
            verify=tls.context())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- robots.txt ------------------------------------------------------------------------
    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser | None:
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self._robots:
            return self._robots[origin]
        robots_url = origin + "/robots.txt"
        cache_path = paths.page_cache(url_key(robots_url))
        lines: list[str] | None = None
        try:
            cached = files.read_json(cache_path)
        except files.CorruptFile:
            cached = None
        if isinstance(cached, dict) and self.clock() - float(cached.get("checked", 0)) < ROBOTS_MAX_AGE:
            lines = cached.get("lines")
        if lines is None:
            lines = self._download_robots(robots_url)
            if lines is None:
                self._robots[origin] = None
                return None
            files.write_json(cache_path, {"url": robots_url, "checked": self.clock(), "lines": lines})
        # Only for a host whose robots.txt is read: it loads urllib.request.
        from urllib.robotparser import RobotFileParser

        parser = RobotFileParser()
        parser.parse(lines)
        self._robots[origin] = parser
        return parser

    def _download_robots(self, robots_url: str) -> list[str] | None:
        """robots.txt's lines ([] when there is none); None when the server cannot say (then
        nothing on the host is fetched this run, as RFC 9309 asks for server errors)."""
        try:
            with cut_short(f"fetching a source from {_host(robots_url)}"):
                resp = self._client.get(robots_url)
        except httpx.HTTPError:
            return None
        if resp.status_code >= 500:
            return None
        if resp.status_code >= 400:
            return []
        return decode(resp.content[:MAX_ROBOTS_BYTES], resp.headers.get("content-type", "")).splitlines()

    def allowed(self, url: str) -> bool | None:
        robots = self._robots_for(url)
        if robots is None:
            return None
        return robots.can_fetch(self.policy.user_agent, url)

    # -- one page --------------------------------------------------------------------------
    def fetch(self, url: str) -> Page:
        """The page at ``url`` as main text, from the cache when it is still good."""
        try:
            return self._fetch(url)
        except (OSError, httpx.HTTPError, ValueError) as exc:
            return Page(url, "failed", reason=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _fetch(self, url: str) -> Page:
        if not url.startswith(("http://", "https://")):
            return Page(url, "skipped", reason="not an http(s) URL")
        cache_path = paths.page_cache(url_key(url))
        try:
            cached = files.read_json(cache_path)
        except files.CorruptFile:
            files.quarantine_corrupt(cache_path)
            cached = None
        if not isinstance(cached, dict) or cached.get("url") != url or load_text(str(cached.get("sha256"))) is None:
            cached = None  # an entry whose text is gone or torn cannot answer a 304: download afresh
        if cached and self.clock() - float(cached.get("validated", 0)) < self.policy.cache_max_age:
            page = self._from_cache(cached, "fresh")
            if page is not None:
                return page
        allowed = self.allowed(url)
        if allowed is None:
            return Page(url, "blocked", reason="robots.txt could not be read (server error or unreachable); "
                                               "the host is not fetched until it answers")
        if not allowed:
            return Page(url, "blocked", reason="robots.txt disallows it for this client")
        host = _host(url)
        wait, backed_off = self.hosts.slot(host)
        if backed_off:
            return Page(url, "backoff", reason=backed_off)
        if wait > 0:
            with cut_short(f"waiting out the delay between requests to {host}"):
                self.sleep(wait)
        headers = {}
        if cached and cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        if cached and cached.get("last_modified"):
            headers["If-Modified-Since"] = cached["last_modified"]
        try:
            return self._download(url, host, headers, cached, cache_path)
        except httpx.TooManyRedirects:
            return Page(url, "gone", reason=f"more than {self.policy.max_redirects} redirects (a loop?)")
        except httpx.TimeoutException:
            return Page(url, "failed", reason=f"no answer within {self.policy.timeout:g}s")

    def _from_cache(self, cached: dict[str, Any], how: str) -> Page | None:
        text = load_text(str(cached.get("sha256")))
        if text is None:
            return None
        return Page(cached["url"], "ok", final_url=cached.get("final_url"), title=cached.get("title") or "",
                    text=text, fetched_at=cached.get("fetched_at"), sha256=cached["sha256"], cached=how,
                    http_status=cached.get("http_status"))

    def _extracted(self, html: str) -> tuple[str, str]:
        """``extract(html)``, or what it gave the last time this exact HTML was downloaded (a
        page fetched again after ``cache_max_age`` from a server that cannot answer 304, the
        same page under a second URL): kept by the HTML's sha256, never extracted twice."""
        digest = text_sha(html)
        path = paths.page_cache("extract-" + digest[:24])
        tag = extractor_tag()
        try:
            kept = files.read_json(path)
        except files.CorruptFile:
            kept = None
        if isinstance(kept, dict) and kept.get("html_sha256") == digest and kept.get("extractor") == tag:
            text = load_text(str(kept.get("sha256")))
            if text is not None:
                return str(kept.get("title") or ""), text
        title, text = extract(html)
        if text.strip():
            files.write_json(path, {"html_sha256": digest, "extractor": tag, "title": title,
                                    "sha256": save_text(text)})
        return title, text

    def _download(self, url: str, host: str, headers: dict[str, str], cached: dict[str, Any] | None,
                  cache_path: Any) -> Page:
        deadline = time.monotonic() + self.policy.timeout
        # The network waits (connect, headers, body) are cut short by a stop signal; the cache
        # and host-table writes are outside them, so none is left half done.
        fetching = f"fetching a source from {host}"
        request = self._client.build_request("GET", url, headers=headers)
        with cut_short(fetching):
            resp = self._client.send(request, stream=True)
        try:
            status = resp.status_code
            final_url = str(resp.url)
            if status == 304 and cached:
                page = self._from_cache(cached, "revalidated")
                if page is not None:
                    files.write_json(cache_path, {**cached, "validated": self.clock()})
                    self.hosts.clear(host)
                    return page
            if status in (404, 410):
                return Page(url, "gone", final_url=final_url, http_status=status,
                            reason=f"HTTP {status} ({'not found' if status == 404 else 'gone'})")
            if status == 429 or status >= 500:
                after = retry_after(resp.headers, rate_limited=status == 429)
                why = f"HTTP {status}"
                waited = self.hosts.back_off(host, after, why)
                return Page(url, "backoff", final_url=final_url, http_status=status,
                            reason=f"{why}; {host} is left alone for {waited:.0f}s")
            if status >= 400 or status == 304:
                return Page(url, "failed", final_url=final_url, http_status=status, reason=f"HTTP {status}")
            ctype = resp.headers.get("content-type", "")
            kind = ctype.split(";", 1)[0].strip().lower()
            if kind not in HTML_TYPES + TEXT_TYPES:
                return Page(url, "skipped", final_url=final_url, http_status=status,
                            reason=f"not text ({kind or 'no content type'})")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                return Page(url, "skipped", final_url=final_url, http_status=status,
                            reason=f"larger than sources.max_bytes ({int(declared):,} > {self.policy.max_bytes:,} bytes)")
            chunks, size = [], 0
            with cut_short(fetching):
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.policy.max_bytes:
                        return Page(url, "skipped", final_url=final_url, http_status=status,
                                    reason=f"larger than sources.max_bytes ({self.policy.max_bytes:,} bytes)")
                    if time.monotonic() > deadline:
                        return Page(url, "failed", final_url=final_url, http_status=status,
                                    reason=f"the page took longer than {self.policy.timeout:g}s to download")
                    chunks.append(chunk)
            body = b"".join(chunks)
            etag, modified = resp.headers.get("etag"), resp.headers.get("last-modified")
        finally:
            resp.close()
        self.hosts.clear(host)
        text = decode(body, ctype)
        title = ""
        if kind in HTML_TYPES:
            title, text = self._extracted(text)
        if not text.strip():
            return Page(url, "skipped", final_url=final_url, http_status=status, reason="no main text on the page")
        digest = save_text(text)
        fetched_at = _now_iso()
        files.write_json(cache_path, {"url": url, "final_url": final_url, "title": title, "sha256": digest,
                                      "etag": etag, "last_modified": modified, "http_status": status,
                                      "content_type": kind, "fetched_at": fetched_at,
                                      "validated": self.clock()})
        return Page(url, "ok", final_url=final_url, title=title, text=text, fetched_at=fetched_at,
                    sha256=digest, http_status=status)


def describe(page: Page) -> dict[str, Any]:
    """A page's outcome for an event: everything but the text."""
    out = {"url": page.url, "status": page.status, "final_url": page.final_url, "title": page.title,
           "reason": page.reason, "sha256": page.sha256, "cached": page.cached, "chars": len(page.text)}
    return {k: v for k, v in out.items() if v not in (None, "")}


__all__ = ["Fetcher", "Page", "Policy", "decode", "describe", "extract", "load_text", "save_text"]

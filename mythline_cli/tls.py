"""One TLS context per process, shared by every HTTP client a run makes.

Each client building its own costs ~20 ms (loading the system's certificates); a run has
two (the LLM provider's and the sources'). The context is the one the clients would
build: the HTTP library's own default, which honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def context() -> ssl.SSLContext:
    try:  # the openai SDK brings one of the two, under whichever name its release uses
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - depends on the installed openai
        import httpx  # type: ignore[no-redef]

    return httpx.create_ssl_context()

"""The one way a topic name becomes a file name."""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_READABLE = 60


def slug(topic: str) -> str:
    """A portable file stem for ``topic``: readable ASCII plus a short hash of the exact name.

    The hash keeps names that fold to the same letters ("Thrall", "thrall", "Thrall!")
    apart, and means no stem can be empty, ``..``, or a Windows device name (CON, NUL...).
    """
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    ascii_text = unicodedata.normalize("NFKD", topic).encode("ascii", "ignore").decode("ascii")
    readable = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:MAX_READABLE].rstrip("-")
    return f"{readable}-{digest}" if readable else f"topic-{digest}"

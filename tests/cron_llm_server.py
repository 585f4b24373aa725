"""The scripted chat server as a process of its own, for runs started by a real cron daemon.

    python tests/cron_llm_server.py AGENT PORT_FILE REQUEST_LOG

Answers like ``conftest.lore_responder(AGENT)`` until killed; writes its port to PORT_FILE
once it listens, and one JSON line per request to REQUEST_LOG: the step, the topic, and
whether the bearer token was the one in $EXPECTED_KEY (the token itself is never written).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import is_audit, lore_responder, topic_of  # noqa: E402
from llm_server import ScriptedLLMServer  # noqa: E402


def main(agent: str, port_file: Path, request_log: Path) -> None:
    answer = lore_responder(agent)
    expected = "Bearer " + os.environ.get("EXPECTED_KEY", "")
    lock = threading.Lock()

    def respond(request: dict):
        headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
        entry = {"step": "audit" if is_audit(request) else "research", "topic": topic_of(request),
                 "key_ok": headers.get("authorization") == expected}
        with lock, open(request_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        return answer(request)

    server = ScriptedLLMServer().start()
    server.responder = respond
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.port), encoding="utf-8")
    tmp.replace(port_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))

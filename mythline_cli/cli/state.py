"""``mythline state init|export|import``: the shared PostgreSQL state's schema, and moving a
file home's ledger into it and back."""

from __future__ import annotations

import typer

from ..errors import UsageError
from ._util import boundary, out, settings

app = typer.Typer(no_args_is_help=True, help="The shared state in PostgreSQL (state = \"postgresql://...\" or "
                  "MYTHLINE_STATE): create its schema, move a file home's ledger in or out.")


def _dsn() -> str:
    from ..state import dsn_of

    dsn = dsn_of(settings())
    if dsn is None:
        raise UsageError("no shared state is configured: set MYTHLINE_STATE=postgresql://USER@HOST/DATABASE "
                         "or state = \"postgresql://...\" in mythline.toml")
    return dsn


@app.command("init", help="Create the schema, or migrate an older one to this version (every run also does "
                          "this at its first connection); refuses a newer one.")
def init_cli() -> None:
    with boundary():
        from ..ledger import schema
        from ..state import session

        s = session(_dsn())
        out().print(f"The shared state at {s.where} is at schema version {schema.version(s.conn)}.", markup=False)


@app.command("import", help="Copy the state home's budget ledger and its journal, and every agent's documents "
                            "and events, into an empty shared state.")
def import_cli() -> None:
    with boundary():
        from .. import files, paths, statedocs
        from ..errors import StateUnavailable
        from ..ledger.postgres import PgStore
        from ..state import session

        journal = paths.ledger_history()
        entries = [e for e in files.iter_jsonl(journal) if isinstance(e.get("seq"), int)]
        if [e["seq"] for e in entries] != list(range(1, len(entries) + 1)):
            raise UsageError(f"{journal} is not a complete journal (entries 1..n without a gap); "
                             "run mythline budget repair first, or import nothing")
        dsn = _dsn()
        store = PgStore(session(dsn))
        shared = statedocs.PgDocs(dsn)
        if (shared.documents() or shared.logs()) and not store.snapshot().get("seq"):
            raise StateUnavailable(f"the shared state at {store.session.where} already holds agents' documents "
                                   "or events; import only into a new database")
        data = store.load(entries)  # type: ignore[arg-type]  # refuses a database that holds a ledger
        copied = statedocs.copy(statedocs.FileDocs(), shared)
        out().print(f"Imported {len(entries)} journal entries into {store.session.where}: "
                    f"{len(data['windows'])} window(s), {len(data['reservations'])} open reservation(s); "
                    f"{copied['documents']} document(s) and {copied['entries']} event(s) of the agents.",
                    markup=False)


@app.command("export", help="Copy the shared budget ledger and its journal, and every agent's documents and "
                            "events, into the state home, which must have none yet.")
def export_cli() -> None:
    with boundary():
        from .. import files, paths, statedocs
        from ..ledger.postgres import PgStore
        from ..state import session

        dsn = _dsn()
        store = PgStore(session(dsn))
        for path in (paths.ledger(), paths.ledger_history()):
            if path.exists():
                raise UsageError(f"{path} exists; export into a state home without a ledger "
                                 "(set MYTHLINE_HOME to a new folder)")
        here = statedocs.FileDocs()
        if here.documents() or here.logs():
            raise UsageError(f"{paths.home()} holds agents' state already; export into a new state home "
                             "(set MYTHLINE_HOME to a new folder)")
        entries = list(store.journal())
        data = store.snapshot()
        paths.home().mkdir(parents=True, exist_ok=True)
        # The journal first: a ledger.json is only ever a copy of a journal that is complete.
        files.write_bytes_atomic(paths.ledger_history(), b"".join(files.encode(e, compact=True) for e in entries))
        files.write_json(paths.ledger(), data, compact=True)
        copied = statedocs.copy(statedocs.PgDocs(dsn), here)
        out().print(f"Exported {len(entries)} journal entries to {paths.home()}; {copied['documents']} document(s) "
                    f"and {copied['entries']} event(s) of the agents.", markup=False)

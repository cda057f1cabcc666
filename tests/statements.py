"""Counting the SQL statements a path sends (issue 18's round-trip tests: counted, not timed).

``counted(engine)`` listens to SQLAlchemy's ``before_cursor_execute`` and ``begin`` events while
the block runs. A statement is kept with its first line and where in careloop it came from (the
last three careloop frames), so a failing limit says which round trip came back. ``on`` pauses
counting: ``counted(engine, on=False)`` starts paused and the test sets ``counter.on = True``
around the part it measures. Imported as ``from ..statements import counted``.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

import careloop

#: the checkout careloop is imported from (its directory need not be named ``careloop``)
ROOT = str(Path(careloop.__file__).resolve().parent)


class Counter:
    """Every statement sent while ``on``, with where in careloop it came from, and every
    transaction begun while ``on``."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self.statements: list[str] = []
        self.transactions = 0

    def begun(self, conn: Any) -> None:
        self.transactions += self.on

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.on:
            return
        where = [f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"
                 for f in traceback.extract_stack()
                 if f.filename.startswith(ROOT) and "/tests/" not in f.filename
                 and "/.venv/" not in f.filename][-3:]
        self.statements.append(f"{statement.splitlines()[0][:70]}  <- "
                               f"{' < '.join(reversed(where))}")


@contextmanager
def counted(engine: Engine, *, on: bool = True) -> Iterator[Counter]:
    """A ``Counter`` listening on ``engine`` for the block; ``on=False`` starts it paused."""
    counter = Counter(on)
    event.listen(engine, "before_cursor_execute", counter)
    event.listen(engine, "begin", counter.begun)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)
        event.remove(engine, "begin", counter.begun)

"""The tables reports read, looked up by name in ``Base.metadata`` (never by importing engines).

The forms engine owns ``submissions``, ``submission_answers`` and ``form_requests`` (contract 2);
the domain and the other engines own the rest. :func:`load_all_models` registers every
installed engine's models first.
"""

from __future__ import annotations

from sqlalchemy import Table

from careloop.engine.models import Base, load_all_models


def table(name: str) -> Table:
    """A table by name from the installed engines' models.

    Raises:
        KeyError: when no installed engine defines it.
    """
    if name not in Base.metadata.tables:
        load_all_models()
    return Base.metadata.tables[name]

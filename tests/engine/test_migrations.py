from sqlalchemy import Engine, inspect

from careloop.engine.migrate import head_revisions, is_current, upgrade
from careloop.engine.models import load_all_models


def test_database_is_at_head_and_upgrade_is_idempotent(db_engine: Engine) -> None:
    assert is_current(db_engine)
    upgrade(db_engine)
    assert is_current(db_engine) and len(head_revisions(db_engine)) >= 1


def test_migrations_create_exactly_the_model_tables(db_engine: Engine) -> None:
    tables = set(inspect(db_engine).get_table_names()) - {"alembic_version"}
    assert tables == set(load_all_models().tables)

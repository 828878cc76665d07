"""The migrations build exactly the schema the models describe, and go down again cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from clinic.extensions import db


def test_upgrade_matches_the_models_and_downgrade_removes_everything(app):
    db.drop_all()
    upgrade()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       db.metadata)
    assert differences == []
    downgrade(revision="base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade()
    assert "vouchers" in inspect(db.engine).get_table_names()
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")

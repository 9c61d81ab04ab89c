"""Alembic environment: runs on the connection `limelight.store.database.upgrade` passes.

From the command line (`alembic -x url=sqlite:///file.db revision --autogenerate`) it
opens the URL given with `-x url=`.
"""

from alembic import context
from sqlalchemy import Connection, create_engine

from limelight.store.tables import Base

config = context.config
connection = config.attributes.get("connection")


def run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    with create_engine(context.get_x_argument(as_dictionary=True)["url"]).connect() as conn:
        run(conn)
        conn.commit()

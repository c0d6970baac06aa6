"""The database schema's Alembic revisions (``versions/``), their environment (``env.py``) and the functions that run
them without an ``alembic.ini`` (``runner``): see docs/database.md."""

"""One module per schema revision, ``NNNN_what.py`` with ``revision = "NNNN"`` (Alembic skips this file)."""

"""What the tests share, as the full-stack template's `tests/utils/`; `tests/conftest.py`
holds the fixtures alone.

- `functions`: the repository's root, importing a function's `app.py`.
- `environment`: settings from the environment, read afresh.
- `database`: the test databases (SQLite, PostgreSQL) and their migrations.
- `client`: the real Lambda handlers fed API Gateway events, and their decoded responses.
"""

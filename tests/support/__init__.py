"""What the tests share, as the full-stack template's `tests/utils/`; `tests/conftest.py`
holds the fixtures alone.

- `functions`: the repository's root, importing a function's `app.py`, and which function
  serves `METHOD path` (template.yaml, through the local server's router).
- `environment`: settings from the environment, read afresh.
- `database`: the test databases (SQLite, PostgreSQL) and their migrations.
- `client`: the real Lambda handlers fed API Gateway events, and their decoded responses
  (decoded as the local server decodes them, `localapi.server.http_response`).
- `keys`: the one JWT test key, hand-made tokens, key rings.
- `auth`, `tasks`: sign-ups, logins and accounts, tasks and rows, for those functions' tests.
- `concurrency`: the same call from many threads at once.
- `lambda_transport`: a `requests` transport to the handlers, routed by template.yaml.
- `silent_server`, `tcp_proxy`: a server that never answers, a TCP proxy that breaks.
"""

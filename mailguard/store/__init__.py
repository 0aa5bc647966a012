"""mailguard.store: state in SQL (SQLite embedded, PostgreSQL shared between MX hosts).

The only package that imports SQLAlchemy, and only from `models`, `engine`, `migrate`
and `repo`; this `__init__`, `records` and `errors` stay import-light for the lean
entry points.
"""

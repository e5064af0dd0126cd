"""The scanner-facing HTTP service (`cargoscan serve`): FastAPI app, storage, roll-out.

Imported only by `cargoscan serve` / `station` / `model` and by tests, so the rest of the
runtime (and `cargoscan --help`) never pays for FastAPI and SQLAlchemy.
"""

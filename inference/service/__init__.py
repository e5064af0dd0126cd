"""The scanner-facing HTTP service (``cargoscan serve``): the FastAPI app and its routers, the
database records, blob storage, signing and model roll-out.

Only what runs or administers the service (and the tests) imports it, so the rest of the
runtime and ``cargoscan --help`` never pay for FastAPI and SQLAlchemy.
"""

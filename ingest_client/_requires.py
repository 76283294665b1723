"""Imported first by the package: without the client's own dependencies (the server's
install, `pip install .` without the `client` extra) importing it, and so `bulk-ingest`,
fails with what to install instead of a bare ModuleNotFoundError deep in a module."""

from importlib.util import find_spec

MISSING = [name for name in ("httpx", "rich") if find_spec(name) is None]
if MISSING:
    raise ImportError(
        f"The client needs {' and '.join(MISSING)}: pip install 'commerce-ingest[client]' "
        "(from a checkout: pip install '.[client]')."
    )

"""`python -m ingest_client ...`: the bulk ingestion command (see `ingest_client.cli`)."""

import sys

from ingest_client.cli import main

sys.exit(main(prog="python -m ingest_client"))

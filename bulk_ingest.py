"""`python bulk_ingest.py --data-dir generated_data --api-url http://localhost:8000`

A shim: the bulk ingestion CLI is `ingest_client.cli` (see its --help).
"""

import sys

from ingest_client.cli import main

if __name__ == "__main__":
    sys.exit(main())

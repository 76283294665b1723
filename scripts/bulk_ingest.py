"""`scripts/bulk_ingest.py --data-dir generated_data --api-url http://localhost:8000`

A shim: the bulk ingestion CLI is `ingest_client.cli` (see its --help).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from ingest_client.cli import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())

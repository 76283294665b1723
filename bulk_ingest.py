"""`python bulk_ingest.py --data-dir generated_data --api-url http://localhost:8000`

The bulk ingestion CLI; the one implementation is `scripts/bulk_ingest.py` (see its --help).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripts.bulk_ingest import main  # noqa: E402 - after the path is set

if __name__ == "__main__":
    sys.exit(main())

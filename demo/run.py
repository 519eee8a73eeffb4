"""Entry point of the edge demo (``demo/run.sh``, ``scripts/demo``): see ``edgedemo/main.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgedemo.main import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m acsdk.train`: the adapter trainer's command (implemented in `acsdk.training.adapter`)."""

import sys

from .training.adapter import main

if __name__ == "__main__":
    sys.exit(main())

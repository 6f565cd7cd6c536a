"""`python -m acsdk.train_base`: the demo-model trainer's command (implemented in `acsdk.training.demo_model`)."""

import sys

from .training.demo_model import main

if __name__ == "__main__":
    sys.exit(main())

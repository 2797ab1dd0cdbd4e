"""``python -m keras_pathways.cli``."""

import sys

from keras_pathways.cli import main

sys.exit(main())

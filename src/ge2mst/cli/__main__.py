"""``python -m ge2mst.cli`` (and ``torchrun ... -m ge2mst.cli train ...``): the ``ge2mst`` command."""

import sys

from . import main

sys.exit(main())

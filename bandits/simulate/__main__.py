"""``python -m bandits.simulate``: see :mod:`bandits.simulate.cli`."""

import sys

from bandits.simulate.cli import main

if __name__ == "__main__":
    sys.exit(main())

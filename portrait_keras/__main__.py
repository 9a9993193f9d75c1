"""`python -m portrait_keras COMMAND ...`: the same as `portrait-keras COMMAND ...`."""

import sys

from portrait_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python data_prep/stats.py ...`: the same as `portrait-keras stats ...` (`portrait_keras/data/prep/stats.py`)."""

import sys

from portrait_keras.data.prep.stats import main

if __name__ == "__main__":
    sys.exit(main())

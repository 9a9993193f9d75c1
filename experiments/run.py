"""`python experiments/run.py NAME [--data CSV] [--epochs N] [--set k=v ...]`: train a named experiment.

The same as `portrait-keras train NAME ...`; the experiments are the functions of
`portrait_keras/experiments.py` (the rows of the paper's Tables 4 and 5).
"""

import sys

from portrait_keras.commands import _quiet
from portrait_keras.commands.train import main

if __name__ == "__main__":
    _quiet.plain_warnings()
    sys.exit(main())

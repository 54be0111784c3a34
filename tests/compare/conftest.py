import sys
from pathlib import Path

# The tiny model and toy data builders are shared with tests/train.
sys.path.insert(0, str(Path(__file__).parents[1] / "train"))

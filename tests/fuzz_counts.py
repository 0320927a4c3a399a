"""Examples Hypothesis tried per target, printed at the end of the run (conftest's terminal summary)."""

from collections import Counter

TRIED: Counter[str] = Counter()

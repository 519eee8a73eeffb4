"""What the fuzzing tests of the reliability suite share: their volume (CI-sized, or 400+
examples with EDGECACHE_RELIABILITY=long), hypothesis settings, and the check that nothing was
written outside the directories a test allows."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

LONG = os.environ.get("EDGECACHE_RELIABILITY", "").strip().lower() == "long"


def examples(ci: int) -> int:
    """Examples per fuzz test: ``ci`` in the normal run, 400 in the long one;
    EDGECACHE_RELIABILITY_EXAMPLES overrides both."""
    return int(os.environ.get("EDGECACHE_RELIABILITY_EXAMPLES", "0")) or (400 if LONG else ci)


EXAMPLES = examples(60)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def tree(root: Path, *skip: Path) -> set[str]:
    """Every path under ``root`` except those in ``skip`` and what is inside them."""
    inside = tuple(str(s) + os.sep for s in skip)
    found = {os.path.join(d, f) for d, dirs, files in os.walk(root) for f in files + dirs}
    return {p for p in found if p not in map(str, skip) and not p.startswith(inside)}

"""``python -m edgecache``: the same as the ``edgecache`` console script."""

from edgecache.cli import main

main()

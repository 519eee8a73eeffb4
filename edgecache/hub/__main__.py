"""``python -m edgecache.hub``: the same as ``edgecache hub``."""

from edgecache.hub.command import hub_command

hub_command(prog_name="edgecache hub")

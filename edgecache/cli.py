"""The ``edgecache`` command line: the outermost layer, above hub, agent and controller.

Each sub-command is a thin shell over a library call. User mistakes print one line on stderr and
exit 2 (usage) or 1 (failure); tracebacks are for bugs only.
"""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgecache")
def main() -> None:
    """edgecache: edge-cloud data acceleration (tiered cache, fsspec filesystem, edge hub)."""


from edgecache.hub.command import hub_command  # noqa: E402

main.add_command(hub_command, "hub")

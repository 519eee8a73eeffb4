"""The node agent (``edgecache agent``): plain-file views of Datasets, DataLoads, reports.

One agent per pool node (the DaemonSet of ``manifests/agent``)::

    settings     AgentSettings: node name, --root, --cache-dir, intervals
    _agent       Agent: local state, Node + informers (through the edge hub), placement,
                 one worker per placed Dataset, health; ready_view() for the CSI service
    _view        DatasetView: list mounts -> stage, verify, rename into the view; delete, evict
    _dataloads   DataLoad runs through the prefetch library into the view
    _reports     CacheReport objects and the queue that sends them when the API answers
    _state       atomic JSON state under <root>/.edgecache-agent (restart offline)
    _csi         the CSI node service's contract (ViewResolver)

Public: :class:`Agent`, :class:`AgentSettings`.
"""

from __future__ import annotations

from edgecache.agent._agent import AGENT_USER_AGENT, Agent
from edgecache.agent._settings import AgentSettings

__all__ = ["AGENT_USER_AGENT", "Agent", "AgentSettings"]

"""Test servers for edgecache: what its tests, benchmarks and demo talk to instead of a cloud.

Not part of the installed ``edgecache`` package (a node never runs them):

- :mod:`edgecache_testservers.kubeapi`: a Kubernetes API server with real resourceVersion,
  watch, selector and CRD semantics (the hub, controller and agent tests; ``kubectl`` works
  against it);
- :mod:`edgecache_testservers.oss`: an OSS-protocol object store that verifies V1/V2/V4
  signatures (the OSS backend's tests, the demo);
- :mod:`edgecache_testservers.wan`: a TCP proxy that adds latency, caps bandwidth, counts bytes
  and cuts the link (offline tests, WAN benchmarks).

They share one lifecycle (:mod:`edgecache_testservers._threadloop`): ``async with`` on the
caller's event loop, or ``with`` on a loop of their own in a thread.
"""

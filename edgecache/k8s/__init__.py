"""Small Kubernetes helpers shared by the hub, the agent, the controller and the test API server
(no client, no I/O): selectors."""

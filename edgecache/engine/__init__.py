"""The read engine: node-level state of the read path (metadata, health, scans), one per process
per cache directory and backend."""

"""CSI v1 messages and gRPC glue, generated from csi.proto beside this file (scripts/gen-csi-proto)."""

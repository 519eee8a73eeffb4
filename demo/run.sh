#!/usr/bin/env bash
# The edge demo with the project already installed in .venv (scripts/demo sets it up first):
# an OSS image dataset and a Kubernetes control plane behind a slow WAN, a nodepool of three
# edge nodes (hub + agent each), the seed demo's Dataset and DataLoad applied with kubectl, the
# ResNet pod's reads phase by phase, the WAN cut and restored. Options: --profile test (small),
# --out DIR (JSON + PNG, default demo/out), --keep (keep logs and caches).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python demo/run.py "$@"

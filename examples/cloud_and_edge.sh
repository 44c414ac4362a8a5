#!/usr/bin/env bash
# Run the cloud server and the edge daemon as two processes (the two-terminal set-up of
# examples/README.md, in one script). Usage:
#
#   examples/cloud_and_edge.sh [BUNDLE] [POLICY]
#
# BUNDLE defaults to the shipped default bundle, POLICY to the shipped PPO actor (or a
# baseline name such as neurosurgeon). The edge answers 200 inputs of the scene stream,
# logs one JSON line per input to edge.jsonl, and exposes Prometheus metrics on :9101.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEML=${EDGEML:-.venv/bin/edgeml}
BUNDLE=${1:-edgeml/assets/bundles/default}
POLICY=${2:-edgeml/assets/policies/default.npz}
PORT=${PORT:-50051}

# Terminal 1: the cloud (blocks s+1..e of the same bundle).
"$EDGEML" serve "$BUNDLE" --host 127.0.0.1 --port "$PORT" --metrics-port 9100 &
CLOUD=$!
trap 'kill -TERM $CLOUD 2>/dev/null; wait $CLOUD 2>/dev/null || true' EXIT

# Terminal 2: the edge daemon (stops by itself after --max-inputs; Ctrl-C also stops it
# cleanly, finishing the input in flight). It waits for the cloud at start-up and answers
# locally whenever the cloud cannot be reached.
"$EDGEML" edge "$BUNDLE" --cloud "127.0.0.1:$PORT" --policy "$POLICY" \
    --source scenes --rate 10 --deadline-ms 100 --edge-slowdown 12 --codec int8 \
    --link-rtt-ms 40 --max-inputs 200 --log edge.jsonl --metrics-port 9101

#!/usr/bin/env bash
# Index examples/, start the router on the embedded store, classify a few queries, stop.
# Uses `qroute` from PATH (make demo puts .venv/bin first). Every setting can be
# overridden from the environment, e.g. QROUTE_ENCODER__MODEL=/models/ko-sroberta.
# Usage: scripts/demo.sh [CONFIG]   (default examples/qroute.yaml; with no model
# downloads: examples/qroute-lexical.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-examples/qroute.yaml}
# classify and health dial the config's server.bind (or client.address), like serve binds it.

qroute index examples/queries.csv --config "$config"

qroute serve --config "$config" &
router=$!
trap 'kill "$router" 2>/dev/null; wait "$router" 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  if qroute health --config "$config" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$router" 2>/dev/null; then echo "the router exited; see its log above" >&2; exit 1; fi
  sleep 0.5
done
qroute health --config "$config"

qroute classify --config "$config" "코스닥 지수 알려줘" "오펜하이머 등장인물 알려줘" "서귀포 맛집 알려줘"
qroute classify --config "$config" --explain --top-labels 3 "주말에 볼만한 공연 추천해줘"
qroute classify --config "$config" --json "내일 부산 비 와?"

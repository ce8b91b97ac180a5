#!/usr/bin/env bash
# Reproduce docs/results.md: every approach on the embedded SmolLM2-135M, on the easy set
# (arithmetic_easy, 200 problems) and a GSM8K slice (30 problems), through the proxy.
# The results files are committed (docs/results/*.jsonl): a rerun asks only what is missing.
# Single-path approaches (none, re2, cot_reflection, wait, leap, plansearch, z3) decode
# greedily like the baseline; the sampling and search approaches get no temperature from the
# client, so they sample at their own defaults (a client temperature 0 would make their
# candidates identical). An entry's temperature=T sets the client temperature instead.
# About three hours on 2 cores from nothing; nothing else should run a model meanwhile
# (two llama-servers on two cores thrash).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8765}"
OUT="${OUT:-docs/results}"
MODEL=SmolLM2-135M-Instruct
mkdir -p "$OUT"
python -m optillm --port "$PORT" --local-slots 16 >"$OUT/proxy.log" 2>&1 &
PROXY=$!
trap 'kill $PROXY 2>/dev/null; wait $PROXY 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 1
done
URL="http://127.0.0.1:$PORT/v1"

# Each entry: the row's label, the approach prefix, then its per-request options (k=v, JSON).
GREEDY=" none re2 cot_reflection wait leap plansearch z3 "
APPROACHES=(
  "none none"
  "re2 re2"
  "cot_reflection cot_reflection"
  "bon bon"
  "moa moa"
  "self_consistency self_consistency"
  "majority_voting majority_voting"
  "deepconf_offline deepconf tts_mode=\"offline\""
  "deepconf_online deepconf tts_mode=\"online\""
  "wait-3 wait wait_rounds=3"
  "mcts mcts"
  "plansearch plansearch"
  "genselect genselect"
  "leap leap"
  "rstar rstar rstar_num_rollouts=3"
  "pvg pvg pvg_num_rounds=1"
  # Ablation: plain voting over DeepConf's own samples (8 at temperature 0.7), so the only
  # difference from deepconf_offline is the confidence filter.
  "majority_voting_k8_t0.7 majority_voting majority_voting_k=8 temperature=0.7"
)

run() {  # dataset limit max_tokens results-file [labels to run; default all]
  local dataset=$1 limit=$2 max_tokens=$3 file=$4 only=" ${5:-} "
  for entry in "${APPROACHES[@]}"; do
    read -r label slug opts <<<"$entry"
    if [ "$only" != "  " ]; then case "$only" in *" $label "*) ;; *) continue ;; esac; fi
    local args=() temperature=default
    case "$GREEDY" in *" $slug "*) temperature=0 ;; esac
    for o in $opts; do
      case "$o" in
        temperature=*) temperature=${o#temperature=} ;;
        *) args+=(--option "$o") ;;
      esac
    done
    python -m optillm.eval --dataset "$dataset" --limit "$limit" --seed 0 \
      --approaches "$label=$slug" --model "$MODEL" --base-url "$URL" \
      --concurrency "${CONCURRENCY:-8}" \
      --max-tokens "$max_tokens" --temperature "$temperature" --no-progress \
      --output "$file" "${args[@]}" || echo "eval: $label had failures (recorded)"
  done
}

run arithmetic_easy 200 64 "$OUT/easy.jsonl"
# GSM8K: the slice and the rows the table must have (the search approaches are too slow on
# two cores for 200+ problems' worth of long answers).
run gsm8k 30 160 "$OUT/gsm8k.jsonl" "none re2 cot_reflection bon moa self_consistency \
majority_voting deepconf_offline deepconf_online wait-3 mcts plansearch"
python -m optillm.eval report "$OUT/easy.jsonl" --out "$OUT/easy.md" --plot "$OUT/easy.png"
python -m optillm.eval report "$OUT/gsm8k.jsonl" --out "$OUT/gsm8k.md" --plot "$OUT/gsm8k.png"

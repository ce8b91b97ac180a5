#!/usr/bin/env bash
# Reproduce docs/results.md through the proxy on the embedded model. One argument, the table:
#
#   smollm2   the SmolLM2-135M rows: every approach on the easy set (arithmetic_easy, 200,
#             seed 0) and a GSM8K slice (30), into docs/results/{easy,gsm8k}.jsonl (as they are)
#   smoke     Qwen2.5-Coder-0.5B, 10 dev problems of each candidate benchmark x (none,
#             majority_voting), fit-router on them, then auto on 5+5 dev problems: proves the
#             chain and measures the cost per problem (docs/results/qwen-smoke*.jsonl)
#   qwen      the issue-14 proof on Qwen2.5-Coder-0.5B, test split (first 200 of the seed-0
#             shuffle): none and the best candidates on 200, every approach on 100, on the
#             easy set and GSM8K; then fit-router on the dev split and auto on the mixed test
#             set (docs/results/qwen-*.jsonl). Hours: see the comments at each step.
#
# The results files are committed: a rerun asks only what is missing (resumable).
# Single-path approaches decode greedily like the baseline; the sampling and search
# approaches get no temperature from the client, so they sample at their own defaults (a
# client temperature 0 would make their candidates identical). An entry's temperature=T sets
# the client temperature instead. Run it under the machine's model lock with nothing else
# using the cores (two llama-servers on two cores thrash):
#   flock /tmp/optillm-model.lock bash scripts/eval_table.sh qwen
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE="${1:-qwen}"
PORT="${PORT:-8765}"
OUT="${OUT:-docs/results}"
case "$TABLE" in
  smollm2) LOCAL=smollm2-135m; MODEL=SmolLM2-135M-Instruct; SLOTS=16 ;;
  smoke|qwen) LOCAL=qwen2.5-coder-0.5b; MODEL=Qwen2.5-Coder-0.5B-Instruct; SLOTS=8 ;;
  *) echo "usage: $0 smollm2|smoke|qwen" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
PROXY=""
start_proxy() {  # [extra optillm flags]: (re)start the proxy on $PORT
  stop_proxy
  python -m optillm --port "$PORT" --local-model "$LOCAL" --local-slots "$SLOTS" "$@" \
    >>"$OUT/proxy-$TABLE.log" 2>&1 &
  PROXY=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "proxy did not start; see $OUT/proxy-$TABLE.log" >&2
  exit 1
}
stop_proxy() {
  if [ -n "$PROXY" ]; then kill "$PROXY" 2>/dev/null || true; wait "$PROXY" 2>/dev/null || true; fi
  PROXY=""
}
trap stop_proxy EXIT
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
  "pal pal"
  # pal with one greedy prose answer in the vote (the prose answer wins ties): the programs
  # overrule it only when more of them agree on another answer
  "pal_prose1_k4 pal pal_prose=1 pal_k=4"
  # Ablation: plain voting over DeepConf's own samples (8 at temperature 0.7), so the only
  # difference from deepconf_offline is the confidence filter.
  "majority_voting_k8_t0.7 majority_voting majority_voting_k=8 temperature=0.7"
  # auto: the learned router (--router-table); no client temperature: each pick samples as
  # it was evaluated (the table's params: temperature 0 for the greedy rows)
  "auto auto"
)

run() {  # dataset limit max_tokens results-file [labels; default all but auto] [slice args]
  local dataset=$1 limit=$2 max_tokens=$3 file=$4 only=" ${5:-} "
  local slice=(${6:---seed 0})
  for entry in "${APPROACHES[@]}"; do
    read -r label slug opts <<<"$entry"
    if [ "$only" != "  " ]; then case "$only" in *" $label "*) ;; *) continue ;; esac
    elif [ "$label" = auto ]; then continue; fi
    local args=() temperature=default concurrency="${CONCURRENCY:-4}"
    # one greedy call per problem: 8 in flight fill the 8 slots
    case "$GREEDY" in *" $slug "*) temperature=0; concurrency="${GREEDY_CONCURRENCY:-8}" ;; esac
    for o in $opts; do
      case "$o" in
        temperature=*) temperature=${o#temperature=} ;;
        *) args+=(--option "$o") ;;
      esac
    done
    python -m optillm.eval --dataset "$dataset" --limit "$limit" "${slice[@]}" \
      --approaches "$label=$slug" --model "$MODEL" --base-url "$URL" \
      --concurrency "$concurrency" \
      --max-tokens "$max_tokens" --temperature "$temperature" --no-progress \
      --output "$file" "${args[@]}" || echo "eval: $label had failures (recorded)"
  done
}

if [ "$TABLE" = smollm2 ]; then
  start_proxy
  CONCURRENCY="${CONCURRENCY:-8}"; GREEDY_CONCURRENCY="$CONCURRENCY"
  run arithmetic_easy 200 64 "$OUT/easy.jsonl"
  # GSM8K: the slice and the rows the table must have (the search approaches are too slow on
  # two cores for 200+ problems' worth of long answers).
  run gsm8k 30 160 "$OUT/gsm8k.jsonl" "none re2 cot_reflection bon moa self_consistency \
majority_voting deepconf_offline deepconf_online wait-3 mcts plansearch"
  python -m optillm.eval report "$OUT/easy.jsonl" --out "$OUT/easy.md" --plot "$OUT/easy.png"
  python -m optillm.eval report "$OUT/gsm8k.jsonl" --out "$OUT/gsm8k.md" --plot "$OUT/gsm8k.png"
  exit 0
fi

if [ "$TABLE" = smoke ]; then
  # The chain on small data, and the cost per problem of each candidate benchmark.
  SMOKE="$OUT/qwen-smoke.jsonl"
  start_proxy
  run gsm8k 10 512 "$SMOKE" "none majority_voting" "--split dev"
  run asdiv 10 512 "$SMOKE" "none majority_voting" "--split dev"
  run arc 10 256 "$SMOKE" "none majority_voting" "--split dev"
  run arithmetic_easy 10 64 "$SMOKE" "none majority_voting" "--split dev"
  python -m optillm.eval fit-router "$SMOKE" --split dev --min-problems 3 \
    --max-tokens-per-query 2500 -o "$OUT/qwen-smoke-router.yaml"
  start_proxy --router-table "$OUT/qwen-smoke-router.yaml"
  run gsm8k 5 512 "$OUT/qwen-smoke-auto.jsonl" "auto" "--split dev"
  run arithmetic_easy 5 64 "$OUT/qwen-smoke-auto.jsonl" "auto" "--split dev"
  python -m optillm.eval report "$SMOKE" --out "$OUT/qwen-smoke.md" --plot "$OUT/qwen-smoke.png"
  exit 0
fi

# -- qwen: the proof (issue 14). STAGES picks steps (default all): STAGES="1 3" ... ---------
# Machine time per GSM8K problem measured on the smoke run (2 cores, 8 slots): none ~8 s,
# majority_voting (k=6) ~42 s; search approaches cost 3-20x none. See docs/results.md.
EASY="$OUT/qwen-easy.jsonl"; HARD="$OUT/qwen-gsm8k.jsonl"; DEV="$OUT/qwen-dev.jsonl"
TEST="--split test"
STAGES=" ${STAGES:-1 2 3 4 5} "
stage() { case "$STAGES" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
start_proxy
# 1. none and the best candidates on the full test split (200), easy set and GSM8K.
BEST="${BEST:-none re2 majority_voting deepconf_online pal}"
# STAGE1_DATASETS / STAGE2_DATASETS pick the sets (default both).
sets() { case " ${2:-arithmetic_easy gsm8k} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if stage 1; then
  if sets arithmetic_easy "${STAGE1_DATASETS:-}"; then run arithmetic_easy 200 64 "$EASY" "$BEST" "$TEST"; fi
  if sets gsm8k "${STAGE1_DATASETS:-}"; then run gsm8k 200 512 "$HARD" "$BEST" "$TEST"; fi
fi
# 2. every approach on the first 100 of the test split (the same problems as step 1's first
#    100: --limit takes the split's order). GSM8K: about a day of machine time for all rows.
#    STAGE2_SET picks rows (default every approach), in the order APPROACHES lists them;
#    STAGE2_DATASETS the sets (default "arithmetic_easy gsm8k").
if stage 2; then
  if sets arithmetic_easy "${STAGE2_DATASETS:-}"; then run arithmetic_easy 100 64 "$EASY" "${STAGE2_SET:-}" "$TEST"; fi
  if sets gsm8k "${STAGE2_DATASETS:-}"; then run gsm8k 100 512 "$HARD" "${STAGE2_SET:-}" "$TEST"; fi
fi
# 3. the router: fit on the dev split (never the test problems), within a token budget.
DEV_SET="${DEV_SET:-none pal}"
if stage 3; then
  run arithmetic_easy 17 64 "$DEV" "$DEV_SET" "--split dev"   # the easy set's dev split is 17
  run gsm8k "${DEV_LIMIT:-100}" 512 "$DEV" "$DEV_SET" "--split dev"
  python -m optillm.eval fit-router "$DEV" --split dev --min-problems 10 \
    --max-tokens-per-query "${ROUTER_BUDGET:-2500}" -o "$OUT/qwen-router.yaml"
fi
# 4. auto with the learned table on the mixed test set (the easy set and GSM8K, 200 each).
if stage 4; then
  start_proxy --router-table "$OUT/qwen-router.yaml"
  run arithmetic_easy 200 64 "$EASY" "auto" "$TEST"
  run gsm8k 200 512 "$HARD" "auto" "$TEST"
fi
# 5. the reports: per dataset, and the mixed set (auto must sit on its Pareto frontier).
stage 5 || exit 0
cat "$EASY" "$HARD" > "$OUT/qwen-mixed.jsonl"
for name in easy gsm8k mixed; do
  python -m optillm.eval report "$OUT/qwen-$name.jsonl" --out "$OUT/qwen-$name.md" \
    --plot "$OUT/qwen-$name.png"
done

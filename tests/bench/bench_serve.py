"""
Serving speed: many streaming clients over HTTP against one server, the single stream before and after the
batched engine, and the evaluation stage's answers one by one against in batches.

    python tests/bench/bench_serve.py                         # all three parts
    python tests/bench/bench_serve.py --parts=http --clients=1,8,32 --rounds=2
    python tests/bench/bench_serve.py --parts=single,eval --baseline=80dd2f8

The model has the demo's shape (config/train_config_cpu.py: 2 layers x 128, block 128) and an 8,192-id
output layer (8,256 rows with the specials and PAD, rounded up to 64), with random weights and EOT made
impossible, so every request makes all its tokens; the tokenizer is stood in for by GPT-2's first 8,192 ids.
Sampling is the demo's (engine.Sampling(): top-k 20, penalties 1.0), as /generate gives it.
- http: server.py's app and waitress (create_app, serve) in a subprocess, one torch thread, --max_generations
  = the most clients; 1, 2, 4, ... clients stream /generate at once (each in its own thread here). Per count:
  tokens/s of all clients together, and the median and 95th percentile of the gap between two pieces of text
  a client receives. Every round measures every count in turn; ratios are against the same round's 1 client.
- single: one stream, the engine before (`baseline`, a git revision of engine.py and model.py, loaded from
  git into this process) and now, on the same weights, alternating, 1 thread: tokens/s and the ratio.
- eval: evaluations-RougeL.py's generation stage (evaluate) on `eval_items` prompts, before (generate_ids one
  by one, the baseline engine) and now (engine.generate_many, `batch_size` rows), alternating.
The machine may be busy (shared): ratios measured in one run are what to read, not absolute speeds.
"""
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from engine import Engine, Sampling, generate_ids, generate_many  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

parts = 'http,single,eval'  # which parts to run
clients = '1,2,4,8,16,32'  # concurrent streaming clients, each count in turn (http)
tokens = 200  # tokens per request (http, single)
rounds = 3  # repetitions of each measurement; medians are reported
baseline = '80dd2f8'  # git revision whose engine.py and model.py are "before" (single, eval)
eval_items = 64  # prompts in the evaluation stage (eval)
eval_tokens = 64  # tokens per answer (eval)
batch_size = 16  # rows generated together in the evaluation stage (eval)
role = 'bench'  # internal: 'server' runs the HTTP server this benchmark starts
port = 0  # internal: the server's port
slots = 32  # internal: the server's max_generations
exec(open(os.path.join(ROOT, 'configurator.py')).read())

N_IDS = 8192


def stand_in_tokenizer():
    """What the engine and server need of a tokenizer, with 8,192 ids: GPT-2's first 8,192 tokens' bytes."""
    gpt2 = get_tokenizer('gpt2')
    return types.SimpleNamespace(eot=N_IDS, a_token=N_IDS + 1, n_vocab=N_IDS + 2, vocab_size=8256,
                                 encode=lambda text: [i % N_IDS for i in gpt2.encode(text)],
                                 token_bytes=gpt2.token_bytes, decode=lambda ids: gpt2.decode(ids))


def demo_model(module_gpt=GPT, module_config=GPTConfig):
    torch.manual_seed(0)
    model = module_gpt(module_config(block_size=128, vocab_size=8256, n_layer=2, n_head=4, n_embd=128)).eval()
    with torch.no_grad():
        model.lm_head.weight[N_IDS] = -100.0  # EOT never wins: every request makes all its tokens
    return model


def run_server():
    import server
    torch.set_num_threads(1)
    tok = stand_in_tokenizer()
    settings = server.settings(host='127.0.0.1', port=port, max_generations=slots, max_waiting=2 * slots,
                               max_new_tokens=10000, api_key='', threads=1)
    engines = {'demo': Engine(demo_model(), tok, slots=slots, max_waiting=2 * slots)}
    print('ready', flush=True)
    server.serve(server.create_app(engines, settings), settings, 1).run()


# ----------------------------------------------------------------------------- http

def stream_one(base, prompt, n, out, start):
    import requests
    start.wait()
    t0 = time.perf_counter()
    times = []
    with requests.post(base + '/generate', json={'prompt': prompt, 'max_new_tokens': n}, stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text
        for chunk in r.iter_content(chunk_size=None):
            if chunk:
                times.append(time.perf_counter())
    out.append((t0, times))


def http_round(base, n_clients):
    out, start = [], threading.Barrier(n_clients)
    prompts = [f'第{i}个问题：北京是中国的首都。' for i in range(n_clients)]
    threads = [threading.Thread(target=stream_one, args=(base, p, tokens, out, start)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = min(t0 for t0, _ in out)
    last = max(times[-1] for _, times in out)
    gaps = [b - a for _, times in out for a, b in zip(times, times[1:])]
    return n_clients * tokens / (last - first), gaps


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def part_http():
    counts = [int(c) for c in clients.split(',')]
    p = free_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--role=server', f'--port={p}',
                             f'--slots={max(counts)}'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    import requests
    base = f'http://127.0.0.1:{p}'
    try:
        for _ in range(600):
            try:
                if requests.get(base + '/health', timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        http_round(base, 2)  # warm up
        speed = {n: [] for n in counts}
        gaps = {n: [] for n in counts}
        ratio = {n: [] for n in counts}
        for _ in range(rounds):
            for n in counts:
                tps, g = http_round(base, n)
                speed[n].append(tps)
                gaps[n].append(g)
            for n in counts:
                ratio[n].append(speed[n][-1] / speed[counts[0]][-1])
    finally:
        proc.terminate()
        proc.wait()
    lone = statistics.median([statistics.median(g) for g in gaps[counts[0]]])
    print(f'\nHTTP /generate, {tokens} tokens per request, demo shape (2 x 128, 8,192 ids, random weights), '
          f'demo sampling; server: 1 torch thread, max_generations={max(counts)}; {rounds} rounds')
    print(f'{"clients":>8} {"tok/s":>8} {"x 1 client":>11} {"gap median ms":>14} {"gap p95 ms":>11} {"x lone median":>14}')
    for n in counts:
        median_gap = statistics.median([statistics.median(g) for g in gaps[n]])
        p95 = statistics.median([statistics.quantiles(g, n=20)[-1] for g in gaps[n]])
        print(f'{n:>8} {statistics.median(speed[n]):>8.0f} {statistics.median(ratio[n]):>11.2f} {median_gap * 1e3:>14.2f} '
              f'{p95 * 1e3:>11.2f} {median_gap / lone:>14.2f}')


# ----------------------------------------------------------------------------- before / after

def load_baseline():
    """engine.py and model.py at the baseline revision, as modules of their own (baseline_model, baseline_engine)."""
    modules = {}
    for name in ('model', 'engine'):
        source = subprocess.run(['git', 'show', f'{baseline}:{name}.py'], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
        source = source.replace('from model import', 'from baseline_model import')
        module = types.ModuleType(f'baseline_{name}')
        module.__file__ = f'<{baseline}:{name}.py>'
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, 'exec'), module.__dict__)
        modules[name] = module
    return modules['model'], modules['engine']


def alternate(sides, runs):
    """{side: [seconds per run]}, the sides taking turns `runs` times."""
    times = {name: [] for name in sides}
    for _ in range(runs):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def part_single():
    torch.set_num_threads(1)
    old_model, old_engine = load_baseline()
    tok = stand_in_tokenizer()
    new = demo_model()
    old = demo_model(old_model.GPT, old_model.GPTConfig)
    old.load_state_dict(new.state_dict())
    prompt = tok.encode('北京是中国的首都。' * 5)
    print(f'\nsingle stream, {tokens} tokens after a {len(prompt)}-token prompt, 1 thread; before = {baseline}')
    print(f'{"sampling":>34} {"before tok/s":>13} {"now tok/s":>10} {"now / before":>13}')
    for label, kwargs in (('greedy', dict(temperature=0.0, top_k=None)),
                          ('top-k 50, T 1', dict(temperature=1.0, top_k=50)),
                          ('demo (top-k 20, T 0.1, penalties 1)', dict(temperature=0.1, top_k=20, presence_penalty=1.0,
                                                                        frequency_penalty=1.0))):
        s = Sampling(max_new_tokens=tokens, seed=0, **kwargs)
        old_kwargs = dict(max_new_tokens=tokens, seed=0, **{**dict(presence_penalty=0.0, frequency_penalty=0.0), **kwargs})
        if label == 'greedy':
            assert list(old_engine.generate_ids(old, tok, prompt, **old_kwargs)) == \
                list(generate_ids(new, tok, prompt, s.but(presence_penalty=0.0, frequency_penalty=0.0))), 'greedy ids differ'
        times = alternate({'before': lambda: list(old_engine.generate_ids(old, tok, prompt, **old_kwargs)),
                           'now': lambda: list(generate_ids(new, tok, prompt, s))}, rounds + 1)
        before, now = (statistics.median(times[k][1:]) for k in ('before', 'now'))
        ratios = [b / n for b, n in zip(times['before'][1:], times['now'][1:])]
        print(f'{label:>34} {tokens / before:>13.0f} {tokens / now:>10.0f} {statistics.median(ratios):>13.2f}')


def part_eval():
    torch.set_num_threads(1)
    old_model, old_engine = load_baseline()
    tok = stand_in_tokenizer()
    new = demo_model()
    old = demo_model(old_model.GPT, old_model.GPTConfig)
    old.load_state_dict(new.state_dict())
    rng = random.Random(0)
    prompts = [[rng.randrange(N_IDS) for _ in range(rng.randrange(10, 60))] for _ in range(eval_items)]
    s = Sampling(max_new_tokens=eval_tokens, temperature=0.0)  # Rouge-L's: the demo's, greedy
    knobs = dict(max_new_tokens=eval_tokens, temperature=0.0, top_k=20, presence_penalty=1.0, frequency_penalty=1.0)
    times = alternate({'one by one': lambda: [list(old_engine.generate_ids(old, tok, p, **knobs)) for p in prompts],
                       'batched': lambda: generate_many(new, tok, prompts, s, batch_size)}, rounds)
    before, now = (statistics.median(times[k]) for k in ('one by one', 'batched'))
    print(f'\nevaluation stage (evaluations-RougeL.evaluate\'s generation): {eval_items} prompts x {eval_tokens} tokens, '
          f'greedy, penalties 1, 1 thread')
    print(f'one by one ({baseline}): {before:.2f} s   batched ({batch_size} rows): {now:.2f} s   '
          f'speed-up {statistics.median(b / n for b, n in zip(times["one by one"], times["batched"])):.2f}x')


if __name__ == '__main__':
    if role == 'server':
        run_server()
    else:
        load = os.getloadavg()
        print(f'load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores')
        for part in parts.split(','):
            {'http': part_http, 'single': part_single, 'eval': part_eval}[part]()
        print(f'load average at the end: {os.getloadavg()[0]:.2f}')

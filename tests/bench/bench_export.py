"""
llama.cpp against our engine on the same exported GGUF: do greedy tokens agree, and who is faster?

    python tests/bench/bench_export.py                                   # finds llama-cpp-python, or says how to get it
    python tests/bench/bench_export.py --llama_python=/tmp/llamavenv/bin/python --threads=2
    python tests/bench/bench_export.py --tokenizer=data/tokenizer         # a real trained tokenizer instead of the test one

llama-cpp-python compiles llama.cpp from source (10+ minutes on 2 cores), so it is no requirement of the project;
build it once in a venv of its own (GGML_NATIVE=OFF: the native build crashed on the development machine's CPU):

    python3 -m venv /tmp/llamavenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF" /tmp/llamavenv/bin/pip install "llama-cpp-python[server]"

For GPT-2's tokenizer and a trained one (by default the tests' 400-id tokenizer, trained here):
1. Agreement: a model of the CPU config's shape (4 x 128, block 128) memorises the tests' texts and question/answer
   rows, is exported to GGUF (f32, f16, q8_0), and on 5 prompts llama.cpp's tokens of the prompt and its greedy
   continuation (30 tokens, or up to EOT) are compared with ours, token for token. llama.cpp's gpt2 graph uses the
   tanh GELU where we use the exact one, so near-ties could flip: the smallest top-2 logit gap along our greedy
   path is printed beside. The same on random weights (flat logits: a hard case, for information).
2. Speed: random weights of that shape (EOT made impossible), a 10-token prompt and 100 greedy tokens, one run
   each on the same threads; prints our tokens/s, llama.cpp's, and the ratio.
3. Serving: `python -m llama_cpp.server` on a loopback port answers a chat question with the f32 GGUF; its answer
   is printed beside our engine's (chat=True) answer.
llama.cpp runs in the interpreter that has llama-cpp-python, as a subprocess running this file with --worker.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

llama_python = ''  # a Python with llama-cpp-python; '' = this one if it has it, else /tmp/llamavenv/bin/python
tokenizer = ''  # the trained tokenizer folder to compare besides GPT-2; '' = the tests' 400-id one, trained here
n_layer = 4  # model shape: config/train_config_cpu.py's
n_head = 4
n_embd = 128
block_size = 128
steps = 150  # full-batch training steps that make the model memorise its texts
new_tokens = 30  # greedy tokens compared per prompt
speed_tokens = 100  # tokens generated in the speed run, after a 10-token prompt
threads = 1  # CPU threads, the same for both engines
server = True  # also serve the GGUF with llama_cpp.server and ask it a question
worker = ''  # internal: the job file of a llama.cpp run (this file, run by llama_python)
exec(open(os.path.join(ROOT, 'configurator.py')).read())

INSTALL = ('python3 -m venv /tmp/llamavenv && CMAKE_ARGS="-DGGML_NATIVE=OFF" '
           '/tmp/llamavenv/bin/pip install "llama-cpp-python[server]"')
PROMPTS = ['北京是中国的首都。', '长江是', 'GPT-2 splits 中文', '人民日报社论：', '熊猫喜欢吃什么？']


def llama_worker(job_path):
    """Runs in llama-cpp-python's interpreter (no torch there): tokenizes, generates greedily, times."""
    from llama_cpp import Llama
    with open(job_path, encoding='utf-8') as f:
        job = json.load(f)
    llm = Llama(model_path=job['gguf'], n_ctx=job['n_ctx'], n_threads=job['threads'],
                n_threads_batch=job['threads'], verbose=False)
    out = {'tokenized': [llm.tokenize(t.encode('utf-8'), add_bos=False, special=False) for t in job['texts']],
           'generated': [], 'seconds': [], 'n_vocab': llm.n_vocab()}
    for ids in job['prompts']:
        llm.reset()
        new, t0 = [], time.perf_counter()
        for token in llm.generate(ids, temp=0.0, repeat_penalty=1.0):  # temp 0: llama.cpp's greedy sampler
            if job['stop_at_eot'] and token == job['eot']:
                break
            new.append(token)
            if len(new) == job['new_tokens']:  # our position limit is llama.cpp's too: it pads n_ctx, not pos_embd
                break
        out['seconds'].append(time.perf_counter() - t0)
        out['generated'].append(new)
    with open(job_path + '.out', 'w', encoding='utf-8') as f:
        json.dump(out, f)


def find_llama_python():
    import importlib.util
    candidates = [llama_python] if llama_python else [sys.executable, '/tmp/llamavenv/bin/python']
    for py in candidates:
        if py == sys.executable and importlib.util.find_spec('llama_cpp') is not None:
            return py
        if py != sys.executable and os.path.exists(py) and subprocess.run(
                [py, '-c', 'import llama_cpp'], capture_output=True).returncode == 0:
            return py
    sys.exit(f"llama-cpp-python not found in {', '.join(candidates)}; build it (10+ minutes) with:\n  {INSTALL}\n"
             f"then: python tests/bench/bench_export.py --llama_python=/tmp/llamavenv/bin/python")


def run_llama(py, gguf_path, prompts, texts=(), n=new_tokens, stop_at_eot=True, eot=-1):
    job = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False, encoding='utf-8')
    json.dump({'gguf': gguf_path, 'n_ctx': block_size, 'threads': threads, 'prompts': prompts, 'texts': list(texts),
               'new_tokens': n, 'stop_at_eot': stop_at_eot, 'eot': eot}, job)
    job.close()
    proc = subprocess.run([py, os.path.abspath(__file__), f'--worker={job.name}'], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"llama.cpp run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(job.name + '.out', encoding='utf-8') as f:
        return json.load(f)


def corpus(tok):
    """Training rows: the tests' texts (articles) and question/answer pairs in the SFT layout, each ending in EOT."""
    from conftest import SENTENCES, SFT_PAIRS, TOKENIZER_TEXTS
    articles = [''.join(SENTENCES)] + TOKENIZER_TEXTS[len(SENTENCES) * 5:]  # the mixed-script texts
    rows = [tok.encode(a)[:block_size - 2] + [tok.eot] for a in articles]
    rows += [tok.encode(q) + [tok.a_token] + tok.encode(a) + [tok.eot] for _, q, a in SFT_PAIRS]
    return rows


def train_memorised(out_dir, tok):
    """A model of the bench's shape trained full-batch until it has memorised corpus(tok); saved as a checkpoint."""
    import torch
    from checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    rows = [r + [tok.pad] * (block_size - len(r)) for r in corpus(tok)]
    data = torch.tensor(rows)
    x, y = data[:, :-1], data[:, 1:]
    args = dict(block_size=block_size, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                dropout=0.0, bias=False)
    model = GPT(GPTConfig(**args))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = model(x, y, (y != tok.pad).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(out_dir, {'model_args': args, 'model': model.state_dict(), 'iter_num': steps,
                              'best_val_loss': loss.item(), 'config': {'bench': 'bench_export.py'},
                              'tokenizer': tok.for_checkpoint()})
    return loss.item()


def random_checkpoint(out_dir, tok):
    """Random weights of the bench's shape, EOT's output row zeroed (logit 0: never the argmax), as a checkpoint."""
    import torch
    from checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    args = dict(block_size=block_size, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                dropout=0.0, bias=False)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        model.lm_head.weight[tok.eot] = 0.0
    save_checkpoint(out_dir, {'model_args': args, 'model': model.state_dict(), 'iter_num': 0, 'best_val_loss': None,
                              'config': {}, 'tokenizer': tok.for_checkpoint()})


def smallest_gap(model, n_vocab, prompt, generated):
    """The smallest top-1 minus top-2 logit gap of our model along a greedy path (how close a tie came)."""
    import torch
    idx = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits, _ = model(idx, idx)
    top = logits[0, len(prompt) - 1:len(prompt) - 1 + len(generated), :n_vocab].topk(2).values
    return float((top[:, 0] - top[:, 1]).min())


def agreement(py, out_dir, label):
    """Our greedy tokens against llama.cpp's for each outtype of out_dir's GGUF export; prints one line each."""
    import export
    from engine import generate_ids
    from checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint(out_dir)
    prompts = [tok.encode(p) for p in PROMPTS]
    ours = [list(generate_ids(model, tok, p, max_new_tokens=new_tokens, temperature=0)) for p in prompts]
    gap = min((smallest_gap(model, tok.n_vocab, p, g) for p, g in zip(prompts, ours) if g), default=float('nan'))
    texts = PROMPTS + ['plain ASCII: GPT-2 (2019) & friends!', 'emoji 🐼🎉 and ＡＢＣ１２３', '第一行\n\n第二行\t两个空格  ##',
                       'spelled specials <|endoftext|><|answer|>']
    for outtype in ('f32', 'f16', 'q8_0'):
        path = export.export(out_dir, 'gguf', os.path.join(out_dir, f'model-{outtype}.gguf'), outtype)
        theirs = run_llama(py, path, prompts, texts, eot=tok.eot)
        same_tok = sum(a == tok.encode(t) for a, t in zip(theirs['tokenized'], texts))
        same = [a == b for a, b in zip(ours, theirs['generated'])]
        first = [next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))
                 for a, b, s in zip(ours, theirs['generated'], same) if not s]
        print(f"  {label:<22} {outtype:<5} tokenization {same_tok}/{len(texts)} texts; greedy continuation "
              f"{sum(same)}/{len(same)} prompts identical ({sum(len(g) for g in ours)} tokens; smallest top-2 gap "
              f"{gap:.3f})" + (f"; first differences at tokens {first}" if first else ''), flush=True)
    return model


def speed(py, out_dir):
    import torch
    import export
    from engine import generate_ids
    from checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint(out_dir)
    prompt = list(range(300, 310))
    path = export.export(out_dir, 'gguf', os.path.join(out_dir, 'model-f32.gguf'), 'f32')
    list(generate_ids(model, tok, prompt, max_new_tokens=5, temperature=0))  # warm up
    t0 = time.perf_counter()
    n = len(list(generate_ids(model, tok, prompt, max_new_tokens=speed_tokens, temperature=0)))
    ours = n / (time.perf_counter() - t0)
    run = run_llama(py, path, [prompt, prompt], n=speed_tokens, stop_at_eot=False)  # the first run warms up
    theirs = len(run['generated'][1]) / run['seconds'][1]
    assert n == len(run['generated'][1]) == speed_tokens, (n, len(run['generated'][1]))
    print(f"  {tok.describe()}, {torch.get_num_threads()} thread(s): ours {ours:.0f} tok/s, llama.cpp "
          f"{theirs:.0f} tok/s, ours / llama.cpp = {ours / theirs:.2f}", flush=True)


def serve(py, out_dir):
    """llama-cpp-python's OpenAI server on the f32 GGUF: one chat question, its answer beside ours."""
    import requests
    from conftest import SFT_PAIRS, free_port
    from engine import generate_text
    from checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint(out_dir)
    port, question = free_port(), SFT_PAIRS[3][1]
    log = open(os.path.join(out_dir, 'llama_server.log'), 'w+')
    proc = subprocess.Popen([py, '-m', 'llama_cpp.server', '--model', os.path.join(out_dir, 'model-f32.gguf'),
                             '--host', '127.0.0.1', '--port', str(port), '--n_ctx', str(block_size),
                             '--n_threads', str(threads)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                if requests.get(f'http://127.0.0.1:{port}/v1/models', timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        body = {'messages': [{'role': 'user', 'content': question}], 'temperature': 0, 'max_tokens': 40,
                'repeat_penalty': 1.0}
        reply = requests.post(f'http://127.0.0.1:{port}/v1/chat/completions', json=body, timeout=60).json()
        answer = reply['choices'][0]['message']['content']
        ours = generate_text(model, tok, question, chat=True, temperature=0, max_new_tokens=40)
        print(f"  {tok.kind}: llama_cpp.server answered {question!r} with {answer!r} "
              f"(finish_reason {reply['choices'][0]['finish_reason']}); our engine: {ours!r}; "
              f"{'identical' if answer == ours else 'DIFFERENT'}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main():
    sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
    py = find_llama_python()
    import torch
    from conftest import GPT2, train_test_tokenizer
    from tokenizer import get_tokenizer
    torch.set_num_threads(threads)
    work = tempfile.mkdtemp(prefix='bench_export_')
    trained = get_tokenizer(tokenizer) if tokenizer else train_test_tokenizer(os.path.join(work, 'tokenizer'))
    print(f"llama.cpp from {py}; models {n_layer} x {n_embd}, block {block_size}; work in {work}", flush=True)
    print("1. greedy agreement, llama.cpp vs our engine (prompts of the texts the models memorised)", flush=True)
    for kind, tok in (('gpt2', GPT2), ('trained', trained)):
        out = os.path.join(work, f'{kind}-memorised')
        t0 = time.time()
        loss = train_memorised(out, tok)
        print(f"  {kind}: trained {steps} steps in {time.time() - t0:.0f} s, loss {loss:.4f}", flush=True)
        agreement(py, out, f'{kind} memorised')
        random_checkpoint(os.path.join(work, f'{kind}-random'), tok)
        agreement(py, os.path.join(work, f'{kind}-random'), f'{kind} random weights')
    print(f"2. speed: {speed_tokens} greedy tokens after a 10-token prompt, one run each", flush=True)
    for kind in ('gpt2', 'trained'):
        speed(py, os.path.join(work, f'{kind}-random'))
    if server:
        print("3. llama_cpp.server (OpenAI-compatible), chat question, temperature 0", flush=True)
        for kind in ('gpt2', 'trained'):
            serve(py, os.path.join(work, f'{kind}-memorised'))


if __name__ == '__main__':
    if worker:
        llama_worker(worker)
    else:
        main()

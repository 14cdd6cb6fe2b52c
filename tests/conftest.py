"""
Shared builders: a tiny corpus the tests write themselves, a tiny checkpoint trained in-process and saved with the
product's own writer, scripts loaded as modules, servers started and stopped. Test modules import from here, never
from each other.
"""
import contextlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PYTHON = sys.executable

from tokenizer import get_tokenizer  # noqa: E402

# GPT-2's ids, written out (test_tokenizer checks them against tokenizer.py): tests that use GPT-2 assert exact ids
EOT_TOKEN, A_TOKEN, PAD_TOKEN, N_VOCAB = 50256, 2235, 50257, 50257
GPT2 = get_tokenizer('gpt2')

# short Chinese "articles"; the sentences end in 。 so prepare.py keeps them
SENTENCES = [
    '北京是中国的首都。北京有很多名胜古迹。',
    '长江是中国最长的河流。长江流经许多省份。',
    '熊猫是中国的国宝。熊猫喜欢吃竹子。',
    '春节是中国最重要的节日。人们在春节吃饺子。',
]


# question/answer pairs for the SFT tests: (article id, question, answer)
SFT_PAIRS = [
    (0, '北京是什么？', '中国的首都'),
    (0, '故宫位于哪里？', '北京市中心'),
    (1, '长江是什么？', '中国最长的河流'),
    (2, '熊猫喜欢吃什么？', '竹子'),
    (3, '新华社成立于什么时候？', '1931年'),
    (4, '春节吃什么？', '饺子'),
    (5, '黄河流入哪里？', '渤海'),
]


def load_script(path):
    """Imports a script by its path relative to the project (names with '-' too); its main() does not run."""
    name = os.path.splitext(os.path.basename(path))[0].replace('-', '_')
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path):
    """Every line of a JSONL file, parsed."""
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def one_thread():
    """
    Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads make them 10x slower.
    Module-scoped: a module's own module-scoped fixtures (tiny models trained once) run on one thread too; a module
    asks for it with `pytestmark = pytest.mark.usefixtures('one_thread')`.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_model(seed=0, block_size=32, dtype=torch.float64):
    """A seeded random tiny model; float64 so that cached and recomputed logits never differ in argmax."""
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval().to(dtype)
    with torch.no_grad():  # a larger spread than GPT-2's init: peaked, varied logits instead of near ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def write_sft_pairs(path, pairs, extra_lines=()):
    """sft_saves.jsonl lines as sft_generate.py writes them, plus any raw extra lines."""
    with open(path, 'w', encoding='utf-8') as f:
        for i, q, a in pairs:
            f.write(json.dumps({'question': q, 'answer': a, 'id': i}, ensure_ascii=False) + '\n')
        for line in extra_lines:
            f.write(line + '\n')


def run_script(args, timeout=300, cwd=ROOT, env=None, check=True):
    """Runs one of the project's scripts with the test's Python; returns the CompletedProcess."""
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    proc = subprocess.run([PYTHON, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-3000:]}")
    return proc



def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args, url, log_path, env=None, seconds=120):
    """
    One of the project's servers started for a test: its output goes to log_path (an unread pipe could
    fill and block it), it is yielded once `url` answers 200, must still be alive when the test is done,
    and is stopped in any case.
    """
    log = open(log_path, 'w+', encoding='utf-8')

    def output():
        log.seek(0)
        return log.read()[-4000:]

    proc = subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    try:
        deadline = time.time() + seconds
        while True:
            assert proc.poll() is None, f'{args[0]} exited {proc.returncode}:\n{output()}'
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, f'no answer from {url} after {seconds} s:\n{output()}'
            time.sleep(0.25)
        yield proc
        assert proc.poll() is None, f'{args[0]} died during the tests:\n{output()}'
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

def write_jsonl(path, texts):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        for t in texts:
            f.write(json.dumps({'text': t}, ensure_ascii=False) + '\n')
    return path


# a corpus to train a tokenizer on: enough repeated text for a few hundred merges, plus mixed scripts
TOKENIZER_TEXTS = SENTENCES * 5 + [
    '人民日报社论：新年献词。１９９８年１月１日，全国人民欢度元旦。',
    'GPT-2 splits 中文 into bytes; 我们的 tokenizer 不会。Emoji 🎉 and ＡＢＣ１２３ too。',
    '上海浦东新区是中国改革开放的窗口。深圳经济特区成立于1980年。',
]


def train_test_tokenizer(out_dir, vocab_size=400, corpus=None):
    """A small byte-level BPE trained by data/train_tokenizer.py's function on TOKENIZER_TEXTS (or a corpus folder)."""
    sys.path.insert(0, os.path.join(ROOT, 'data'))
    from train_tokenizer import train_tokenizer
    if corpus is None:
        corpus = os.path.join(str(out_dir), 'corpus')
        write_jsonl(os.path.join(corpus, 'texts.jsonl'), TOKENIZER_TEXTS)
    train_tokenizer(str(corpus), str(out_dir), vocab_size, val_fraction=0.0, block_size=64)
    return get_tokenizer(str(out_dir))


@pytest.fixture(scope='session')
def trained_tokenizer(tmp_path_factory):
    """A tokenizer folder trained on TOKENIZER_TEXTS (400 ids), shared by the tests that need one."""
    folder = tmp_path_factory.mktemp('tokenizer')
    train_test_tokenizer(folder)
    return str(folder)


@pytest.fixture
def tiny_corpus(tmp_path):
    """A folder with two JSONL files of short Chinese articles."""
    folder = tmp_path / 'corpus'
    write_jsonl(str(folder / 'a.jsonl'), SENTENCES[:2] * 3)
    write_jsonl(str(folder / 'sub' / 'b.jsonl'), SENTENCES[2:] * 3)
    return folder


def train_tiny_checkpoint(out_dir, texts=SENTENCES, block_size=64, steps=100, seed=0, tok=None):
    """
    A 2-layer model that memorises `texts` (each followed by EOT, loss on the EOT too, so it learns
    to stop), saved by checkpoint.save_checkpoint (README: Formats). Takes a few seconds on a CPU.
    tok: the tokenizer (default GPT-2's).
    """
    from checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    tok = tok or GPT2
    torch.manual_seed(seed)
    rows = []
    for t in texts:
        ids = tok.encode(t)[:block_size - 1] + [tok.eot]
        rows.append(ids + [tok.pad] * (block_size - len(ids)))
    data = torch.tensor(rows)
    x, y = data[:, :-1], data[:, 1:]
    mask = (y != tok.pad).float()
    model_args = dict(block_size=block_size, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64, dropout=0.0,
                      bias=False)
    model = GPT(GPTConfig(**model_args))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = model(x, y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(str(out_dir), {'model_args': model_args, 'model': model.state_dict(), 'iter_num': steps,
                                   'best_val_loss': float(loss.detach()), 'config': {'block_size': block_size},
                                   'tokenizer': tok.for_checkpoint()})
    return float(loss.detach())


# train.py's settings for a tiny CPU model (2 layers of 32, block_size 32); each test adds its data, out_dir, max_iters
TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--gradient_accumulation_steps=1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=5', '--eval_iters=2', '--seed=7', '--dtype=float32']


def write_dataset(folder, block_size=32, n_train=64, n_val=8, tok=GPT2):
    """Pretrain rows laid out as data/prepare.py writes them: sentence + EOT + PAD, uint16, plus meta.json."""
    from data_utils import tokenizer_record, write_prepared
    clauses = [c + '。' for s in SENTENCES for c in s.split('。') if c]
    rows = []
    for i in range(n_train + n_val):
        ids = tok.encode(clauses[i % len(clauses)])[:block_size - 1] + [tok.eot]
        rows.append(ids + [tok.pad] * (block_size - len(ids)))
    rows = np.array(rows, dtype=np.uint16)

    def write_rows(files):
        files['train'].write(rows[:n_train].tobytes())
        files['val'].write(rows[n_train:].tobytes())
        return {'kind': 'pretrain', 'tokenizer': tokenizer_record(tok, str(folder)), 'block_size': block_size,
                'dtype': 'uint16', 'rows': {'train': n_train, 'val': n_val}, 'skipped': {},
                'fill_ratio': float((rows != tok.pad).mean()), 'sources': []}
    write_prepared(str(folder), write_rows)
    return str(folder)


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """Folder of a tiny checkpoint that has memorised SENTENCES (loss ends well under 0.5)."""
    out = tmp_path_factory.mktemp('tiny_ckpt')
    train_tiny_checkpoint(out)
    return str(out)


# ----------------------------------------------------------------------------- a scripted chat-completions server
class ChatServer:
    """
    A chat-completions endpoint on 127.0.0.1: responder(article, attempt) -> (status, reply, delay s).
    attempt counts the requests seen for that article (0 first). reply is the assistant's text, or bytes sent
    as the whole body (HTML if it starts with <); status 'drop' closes the connection without an answer.
    Serves requests concurrently.
    """
    def __init__(self, responder):
        self.responder, self.attempts, self.lock, self.requests = responder, {}, threading.Lock(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                prompt = body['messages'][-1]['content']
                article = prompt.split('文章：\n', 1)[1]
                with outer.lock:
                    attempt = outer.attempts.get(article, 0)
                    outer.attempts[article] = attempt + 1
                    outer.requests.append({'article': article, 'auth': self.headers.get('Authorization'),
                                           'temperature': body.get('temperature'), 'model': body.get('model')})
                status, reply, delay = outer.responder(article, attempt)
                time.sleep(delay)
                if status == 'drop':
                    self.close_connection = True
                    return
                if isinstance(reply, bytes):
                    payload = None
                elif status == 200:
                    payload = {'id': 'chatcmpl-1', 'object': 'chat.completion', 'created': 0, 'model': body['model'],
                               'choices': [{'index': 0, 'finish_reason': 'stop',
                                            'message': {'role': 'assistant', 'content': reply}}],
                               'usage': {'prompt_tokens': 1, 'completion_tokens': 1, 'total_tokens': 2}}
                else:
                    payload = {'error': {'message': reply, 'type': 'server_error'}}
                data = reply if payload is None else json.dumps(payload, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'text/html' if data.startswith(b'<') else 'application/json')
                    self.send_header('Content-Length', str(len(data)))
                    if status == 429:
                        self.send_header('Retry-After', '0')
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout case)
                    pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def lines(pairs):
    return '\n'.join(json.dumps(p, ensure_ascii=False) for p in pairs)


def station(i):
    """A numbered article and three pairs grounded in it."""
    article = f'第{i}号气象站位于青海省西宁市。第{i}号气象站成立于{1950 + i}年。第{i}号气象站是全国海拔最高的气象站之一。'
    pairs = [{'question': f'第{i}号气象站位于哪里？', 'answer': '青海省西宁市'},
             {'question': f'第{i}号气象站成立于哪一年？', 'answer': f'{1950 + i}年'},
             {'question': f'第{i}号气象站有什么特点？', 'answer': '全国海拔最高的气象站之一'}]
    return article, pairs


# the headless Chromium the browser tests drive through playwright (Debian's package), and its flags
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']


SLOW_CALLS = re.compile(r'\brun_script\(|\bserving\(|\bsubprocess\.|\bPopen\(|\bsync_playwright\(|\bmp\.spawn|run\.sh')


def pytest_collection_modifyitems(config, items):
    """Marks 'slow' every test that starts a process, a server or a browser, itself or through a fixture."""
    for item in items:
        functions = [getattr(item, 'function', None)] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values()
                                                         for d in defs]
        sources = []
        for fn in filter(None, functions):
            try:
                sources.append(inspect.getsource(fn))
            except (OSError, TypeError):
                pass
        if any(SLOW_CALLS.search(s) for s in sources):
            item.add_marker(pytest.mark.slow)

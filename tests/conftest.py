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
import socket
import subprocess
import sys
import time

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


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads make them 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
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


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """Folder of a tiny checkpoint that has memorised SENTENCES (loss ends well under 0.5)."""
    out = tmp_path_factory.mktemp('tiny_ckpt')
    train_tiny_checkpoint(out)
    return str(out)


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

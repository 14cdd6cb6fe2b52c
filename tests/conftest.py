"""Shared fixtures: a tiny corpus the tests write themselves, and a tiny checkpoint trained in-process."""
import contextlib
import json
import os
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

from config.train_config import EOT_TOKEN, PAD_TOKEN  # noqa: E402

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


@pytest.fixture
def tiny_corpus(tmp_path):
    """A folder with two JSONL files of short Chinese articles."""
    folder = tmp_path / 'corpus'
    write_jsonl(str(folder / 'a.jsonl'), SENTENCES[:2] * 3)
    write_jsonl(str(folder / 'sub' / 'b.jsonl'), SENTENCES[2:] * 3)
    return folder


def train_tiny_checkpoint(out_dir, texts=SENTENCES, block_size=64, steps=100, seed=0):
    """
    A 2-layer model that memorises `texts` (each followed by EOT, loss on the EOT too, so it learns
    to stop), saved in the checkpoint format of DESIGN.md §4. Takes a few seconds on a CPU.
    """
    from data_utils import get_encoding, tokenizer_facts
    from model import GPT, GPTConfig, save_checkpoint
    torch.manual_seed(seed)
    enc = get_encoding()
    rows = []
    for t in texts:
        ids = enc.encode_ordinary(t)[:block_size - 1] + [EOT_TOKEN]
        rows.append(ids + [PAD_TOKEN] * (block_size - len(ids)))
    data = torch.tensor(rows)
    x, y = data[:, :-1], data[:, 1:]
    mask = (y != PAD_TOKEN).float()
    model_args = dict(block_size=block_size, vocab_size=50304, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=False)
    model = GPT(GPTConfig(**model_args))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        _, loss = model(x, y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(str(out_dir), {'model_args': model_args, 'model': model.state_dict(), 'iter_num': steps,
                                   'best_val_loss': float(loss.detach()), 'config': {'block_size': block_size},
                                   'tokenizer': tokenizer_facts()})
    return float(loss.detach())


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """Folder of a tiny checkpoint that has memorised SENTENCES (loss ends well under 0.5)."""
    out = tmp_path_factory.mktemp('tiny_ckpt')
    train_tiny_checkpoint(out)
    return str(out)

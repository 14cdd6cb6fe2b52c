"""train.py end to end on a tiny dataset the tests write themselves: learning, exact resume after a kill, DDP, fine-tuning."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from conftest import PYTHON, ROOT, SENTENCES, run_script, train_tiny_checkpoint
from config.train_config import A_TOKEN, EOT_TOKEN, PAD_TOKEN
from data_utils import RANKS_SHA256, get_encoding
from model import load_checkpoint

TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--gradient_accumulation_steps=1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=5', '--eval_iters=2', '--seed=7']
LOG_KEYS = {'iter', 'split', 'loss', 'lr', 'tokens', 'elapsed'}
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # on a shared 2-core machine, more threads only spin against each other


def train(args, check=True):
    return run_script(['train.py', *TINY, *args], env=ONE_THREAD, check=check)


def write_dataset(folder, block_size=32, n_train=64, n_val=8):
    """Pretrain rows laid out as data/prepare.py writes them: sentence + EOT + PAD, uint16, plus meta.json."""
    enc = get_encoding()
    clauses = [c + '。' for s in SENTENCES for c in s.split('。') if c]
    rows = []
    for i in range(n_train + n_val):
        ids = enc.encode_ordinary(clauses[i % len(clauses)])[:block_size - 1] + [EOT_TOKEN]
        rows.append(ids + [PAD_TOKEN] * (block_size - len(ids)))
    rows = np.array(rows, dtype=np.uint16)
    os.makedirs(folder, exist_ok=True)
    rows[:n_train].tofile(os.path.join(folder, 'train.bin'))
    rows[n_train:].tofile(os.path.join(folder, 'val.bin'))
    meta = {'kind': 'pretrain', 'encoding': 'gpt2', 'ranks_sha256': RANKS_SHA256, 'block_size': block_size,
            'dtype': 'uint16', 'eot_token': EOT_TOKEN, 'pad_token': PAD_TOKEN, 'a_token': A_TOKEN,
            'rows': {'train': n_train, 'val': n_val}, 'skipped': {},
            'fill_ratio': float((rows != PAD_TOKEN).mean()), 'sources': []}
    with open(os.path.join(folder, 'meta.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f)
    return str(folder)


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl'), encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def assert_one_curve(lines):
    for split in ('train', 'val'):
        iters = [l['iter'] for l in lines if l['split'] == split]
        assert iters == sorted(set(iters)), f"{split} iters not strictly increasing: {iters}"


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp('data') / 'tiny')


def run_args(data_dir, mode):
    return [f'--data_dir={data_dir}', '--max_iters=30', '--eval_interval=5', '--log_interval=1', f'--sample_mode={mode}']


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
    """One 30-iteration run, read by several tests and the uninterrupted reference of the resume test."""
    out = str(tmp_path_factory.mktemp('out'))
    return out, train([*run_args(data_dir, 'traverse'), f'--out_dir={out}'])


def test_loss_falls_and_log_has_the_contract(trained):
    out, proc = trained
    lines = read_log(out)
    assert all(set(l) == LOG_KEYS for l in lines)
    val = [l for l in lines if l['split'] == 'val']
    train = [l for l in lines if l['split'] == 'train']
    assert [l['iter'] for l in val] == list(range(0, 31, 5))
    assert [l['iter'] for l in train] == list(range(1, 31))
    assert val[0]['loss'] > 10.0  # ln(50304) ~ 10.8: an untrained model
    assert val[-1]['loss'] < val[0]['loss'] - 4.0, val
    assert train[-1]['loss'] < train[0]['loss'] - 3.0, train
    assert [l['tokens'] for l in train] == [l['iter'] * 4 * 31 for l in train]
    assert train[-1]['lr'] == pytest.approx(1e-3, rel=0.05)  # cosine decayed to min_lr at max_iters
    assert 'parameters' in proc.stdout


def test_checkpoint_loads_with_weights_only(trained):
    out, _ = trained
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 30
    assert ckpt['model_args']['n_embd'] == 32 and ckpt['config']['max_iters'] == 30
    assert ckpt['tokens_seen'] == 30 * 4 * 31
    assert ckpt['row_order'] == [{'seed': 7, 'epoch': 1, 'pos': 56}]  # 120 rows of 64 in traverse mode
    assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])
    model, _ = load_checkpoint(out)
    assert model.config.n_layer == 2
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl']  # no temporary files left


def test_resume_rejects_a_config_of_another_shape(trained, data_dir):
    out, _ = trained
    proc = train([f'--data_dir={data_dir}', f'--out_dir={out}', '--init_from=resume',
                       '--n_layer=3', '--max_iters=40'], check=False)
    assert proc.returncode != 0
    assert 'n_layer=2' in proc.stderr and 'n_layer=3' in proc.stderr
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['iter_num'] == 30  # untouched


def test_epochs_set_the_iterations(data_dir, tmp_path):
    # 64 rows, 4 rows x 2 micro-steps per iteration: one epoch is 8 iterations
    train(['--gradient_accumulation_steps=2', '--epochs=1.0', '--eval_interval=100',
                f'--data_dir={data_dir}', f'--out_dir={tmp_path}'])
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 8 and ckpt['row_order'] == [{'seed': 7, 'epoch': 0, 'pos': 64}]


def last_logged(out_dir):
    """(iter of the last val line, iter of the last train line) in a log that may be being written."""
    val = train_ = -1
    try:
        with open(os.path.join(out_dir, 'log.jsonl'), encoding='utf-8') as f:
            for line in f:
                if line.endswith('\n'):
                    record = json.loads(line)
                    if record['split'] == 'val':
                        val = record['iter']
                    else:
                        train_ = record['iter']
    except FileNotFoundError:
        pass
    return val, train_


@pytest.mark.parametrize('mode', ['traverse', 'random'])
def test_resume_after_a_kill_continues_the_same_curve(data_dir, trained, tmp_path, mode):
    args = run_args(data_dir, mode)
    reference = trained[0] if mode == 'traverse' else str(tmp_path / 'reference')
    if mode == 'random':
        train([*args, f'--out_dir={reference}'])

    out = str(tmp_path / 'killed')
    ckpt_path = os.path.join(out, 'ckpt.pt')
    proc = subprocess.Popen([PYTHON, 'train.py', *TINY, *args, f'--out_dir={out}'], cwd=ROOT,
                            env=dict(os.environ, **ONE_THREAD), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it once a checkpoint exists and it has logged past it: lines that resume must drop
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            val, train_ = last_logged(out)
            if os.path.exists(ckpt_path) and train_ > val > 0:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    saved_iter = torch.load(ckpt_path, weights_only=True)['iter_num']
    assert 0 < saved_iter < 30
    assert last_logged(out)[1] > saved_iter

    resumed = train([*args, f'--out_dir={out}', '--init_from=resume'])
    assert f'resuming at iteration {saved_iter}' in resumed.stdout
    lines, expected = read_log(out), read_log(reference)
    assert_one_curve(lines)
    # the same rows, RNG, optimizer and learning rate: the resumed curve is the uninterrupted one
    assert [(l['iter'], l['split'], l['lr'], l['tokens']) for l in lines] == \
           [(l['iter'], l['split'], l['lr'], l['tokens']) for l in expected]
    assert [l['loss'] for l in lines] == pytest.approx([l['loss'] for l in expected], abs=1e-5)
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl']  # a save cut short by the kill is cleared
    final, ref = (torch.load(os.path.join(d, 'ckpt.pt'), weights_only=True) for d in (out, reference))
    assert final['iter_num'] == 30 and final['row_order'] == ref['row_order']
    assert final['elapsed'] > 0
    for k, v in ref['model'].items():
        assert torch.allclose(final['model'][k], v, atol=1e-6), k


def test_ddp_with_gloo_on_cpu(data_dir, tmp_path):
    proc = run_script(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *TINY,
                       f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--gradient_accumulation_steps=2',
                       '--max_iters=10', '--eval_interval=5', '--log_interval=1'], env=ONE_THREAD)
    assert proc.stdout.count('parameters') == 1  # only rank 0 prints
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'log.jsonl']
    lines = read_log(tmp_path)
    assert_one_curve(lines)
    assert [l['iter'] for l in lines if l['split'] == 'train'] == list(range(1, 11))
    # two processes x one micro-step x 4 rows each per iteration
    assert lines[-2]['tokens'] == 10 * 2 * 4 * 31
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 10 and ckpt['world_size'] == 2
    assert ckpt['row_order'] == [{'seed': 7, 'epoch': 1, 'pos': 8}] * 2  # 40 of each rank's 32 rows


def test_fine_tune_takes_the_checkpoint_shape(tmp_path):
    base = str(tmp_path / 'base')
    train_tiny_checkpoint(base, block_size=64, steps=5)
    data = write_dataset(tmp_path / 'rows64', block_size=64, n_train=16, n_val=4)
    out = str(tmp_path / 'ft')
    proc = train([f'--data_dir={data}', f'--out_dir={out}', f'--init_from={base}',
                       '--max_iters=3', '--eval_interval=100'])
    assert 'ignored' in proc.stdout
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 3 and ckpt['model_args']['n_embd'] == 64 and ckpt['model_args']['block_size'] == 64

    mismatched = write_dataset(tmp_path / 'rows32', block_size=32, n_train=8, n_val=2)
    proc = train([f'--data_dir={mismatched}', f'--out_dir={tmp_path / "ft2"}',
                       f'--init_from={base}', '--max_iters=3'], check=False)
    assert proc.returncode != 0
    assert 'block_size=64' in proc.stderr and 'block_size=32' in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / 'ft2' / 'ckpt.pt')

"""train.py end to end on a tiny dataset the tests write themselves: learning, exact resume after a kill, DDP, fine-tuning."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint
from conftest import (GPT2, PYTHON, ROOT, SENTENCES, TINY, run_script, train_tiny_checkpoint, write_dataset,
                      write_jsonl)
from tokenizer import get_tokenizer

LOG_KEYS = {'iter', 'split', 'loss', 'lr', 'tokens', 'elapsed'}
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # on a shared 2-core machine, more threads only spin against each other


def train(args, check=True):
    return run_script(['train.py', *TINY, *args], env=ONE_THREAD, check=check)


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
    model, _, _ = load_checkpoint(out)
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

    # diverging under DDP: the master's NaN eval is shared, both processes stop, nothing is saved, nothing hangs
    # (torchrun then sends SIGTERM to whichever process is still exiting: its report may show that signal)
    proc = run_script(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *TINY,
                       f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--init_from=resume', '--max_iters=20',
                       '--eval_interval=1', '--learning_rate=1e9'], env=ONE_THREAD, check=False, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count('error: iteration 11: train loss nan, val loss nan') == 1, proc.stderr  # said once
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['iter_num'] == 10


def test_fine_tune_takes_the_checkpoint_shape(tmp_path):
    base = str(tmp_path / 'base')
    train_tiny_checkpoint(base, block_size=64, steps=5)
    data = write_dataset(tmp_path / 'rows64', block_size=64, n_train=16, n_val=4)
    out = str(tmp_path / 'ft')
    proc = train([f'--data_dir={data}', f'--out_dir={out}', f'--init_from={base}',
                       '--max_iters=3', '--warmup_iters=1', '--eval_interval=100'])
    assert 'ignored' in proc.stdout
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 3 and ckpt['model_args']['n_embd'] == 64 and ckpt['model_args']['block_size'] == 64

    mismatched = write_dataset(tmp_path / 'rows32', block_size=32, n_train=8, n_val=2)
    proc = train([f'--data_dir={mismatched}', f'--out_dir={tmp_path / "ft2"}',
                       f'--init_from={base}', '--max_iters=3', '--warmup_iters=1'], check=False)
    assert proc.returncode != 0
    assert 'block_size=64' in proc.stderr and 'block_size=32' in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / 'ft2' / 'ckpt.pt')


def test_trained_tokenizer_data_trains_a_smaller_model_and_mismatches_stop(tmp_path, trained_tokenizer, data_dir):
    tok = get_tokenizer(trained_tokenizer)
    data = write_dataset(tmp_path / 'trained_rows', tok=tok)
    out = str(tmp_path / 'out')
    proc = train([f'--data_dir={data}', f'--out_dir={out}', '--max_iters=20', '--eval_interval=10'])
    assert repr(tok.name) in proc.stdout  # says which tokenizer it trains with
    lines = read_log(out)
    val = [l['loss'] for l in lines if l['split'] == 'val']
    assert val[0] > 5.5 and val[-1] < val[0] - 2.0, val  # ln(448) ~ 6.1 at the start
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['model_args']['vocab_size'] == 448 and ckpt['model']['lm_head.weight'].shape[0] == 448
    assert ckpt['tokenizer']['name'] == tok.name and 'ranks' in ckpt['tokenizer']

    # resuming that run on GPT-2 data, or fine-tuning it on GPT-2 data: stopped, both tokenizers named
    for init in ('resume', out):
        proc = train([f'--data_dir={data_dir}', f'--out_dir={out if init == "resume" else tmp_path / "ft"}',
                      f'--init_from={init}', '--max_iters=25'], check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
        assert 'tokenizer mismatch' in proc.stderr and repr(tok.name) in proc.stderr and "'gpt2'" in proc.stderr
        assert tok.ranks_sha256[:12] in proc.stderr and GPT2.ranks_sha256[:12] in proc.stderr
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['iter_num'] == 20  # untouched


def test_a_diverged_run_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    out = str(tmp_path / 'out')
    train([f'--data_dir={data_dir}', f'--out_dir={out}', '--max_iters=10', '--eval_interval=5'])
    good = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    # learning_rate=1e9: the first step gives weights whose loss is NaN. Seen by the eval right after that step
    # (eval_interval=1), and by the training loss itself when no eval comes first (eval_interval=100).
    for eval_interval, words in ((1, 'iteration 11: train loss nan, val loss nan'),
                                 (100, 'iteration 12: the loss of micro-step 1 of 2 is nan')):
        proc = train([f'--data_dir={data_dir}', f'--out_dir={out}', '--init_from=resume', '--learning_rate=1e9',
                      '--gradient_accumulation_steps=2', '--max_iters=20', f'--eval_interval={eval_interval}'],
                     check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
        assert words in proc.stderr and 'diverged' in proc.stderr, proc.stderr
        assert f'{out}/ckpt.pt still holds iteration 10' in proc.stderr and '--learning_rate' in proc.stderr
        assert 'saved' not in proc.stdout
        kept = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
        assert kept['iter_num'] == 10 and all(torch.equal(kept['model'][k], v) for k, v in good['model'].items())
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl']
    # and the run goes on from it with a sane rate
    train([f'--data_dir={data_dir}', f'--out_dir={out}', '--init_from=resume', '--max_iters=12'])
    assert all(np.isfinite(l['loss']) for l in read_log(out))


@pytest.mark.slow  # runs train.py
def test_a_warmup_longer_than_the_run_is_fitted_to_it_with_a_note(data_dir, tmp_path):
    """A short trial of a long config (--max_iters=3 with warmup_iters=30): the warmup ends at max_iters, said once."""
    proc = train([f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--max_iters=3', '--warmup_iters=30',
                  '--lr_decay_iters=40', '--eval_interval=3', '--log_interval=1'])
    assert proc.stdout.count('note: warmup_iters=30 is more than max_iters=3; using 3 (and lr_decay_iters=3)') == 1
    lrs = [l['lr'] for l in read_log(tmp_path) if l['split'] == 'train']
    assert lrs == pytest.approx([1e-2 * 1 / 4, 1e-2 * 2 / 4, 1e-2 * 3 / 4])  # a linear warmup over the 3 steps
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['config']['warmup_iters'] == 3 and ckpt['config']['lr_decay_iters'] == 3


@pytest.mark.slow  # compiling takes about a minute on 2 cores (less once inductor's cache holds the graphs)
@pytest.mark.skipif(not any(shutil.which(c) for c in ('g++', 'c++', 'clang++')),
                    reason="torch.compile's CPU backend (inductor) builds C++: no compiler here")
def test_the_gpu_configs_settings_run_on_a_cpu(data_dir, tmp_path):
    """
    What config/train_config.py asks beyond the CPU config, on a CPU: torch.compile (inductor's C++ backend) and
    bfloat16 autocast. A few iterations, a resume that continues them, then the checkpoint generates.
    """
    from engine import generate_ids
    out = str(tmp_path / 'out')
    args = [f'--data_dir={data_dir}', f'--out_dir={out}', '--compile=True', '--dtype=bfloat16', '--n_layer=1',
            '--eval_interval=3', '--log_interval=1']
    first = train([*args, '--max_iters=3'])
    assert 'compiling the model' in first.stdout and 'device cpu, bfloat16' in first.stdout
    resumed = train([*args, '--max_iters=6', '--init_from=resume'])
    assert 'resuming at iteration 3' in resumed.stdout
    lines = read_log(out)
    assert [l['iter'] for l in lines if l['split'] == 'train'] == [1, 2, 3, 4, 5, 6]
    val = [l['loss'] for l in lines if l['split'] == 'val']
    assert len(val) == 3 and val[-1] < val[0] - 0.5, val  # it learns in bfloat16
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['iter_num'] == 6 and not any(k.startswith('_orig_mod.') for k in ckpt['model'])
    assert all(v.dtype == torch.float32 for v in ckpt['model'].values())  # autocast keeps float32 weights
    model, tok, _ = load_checkpoint(out)
    ids = list(generate_ids(model, tok, tok.encode('北京'), max_new_tokens=5, temperature=0))
    assert 1 <= len(ids) <= 5 and all(0 <= i < GPT2.n_vocab for i in ids)


@pytest.mark.slow  # runs prepare.py and train.py
def test_a_moved_project_still_trains(tmp_path, trained_tokenizer):
    """prepare.py, then the whole tree moved elsewhere: meta.json finds the tokenizer relative to itself."""
    project = tmp_path / 'project'
    shutil.copytree(trained_tokenizer, project / 'data' / 'tokenizer')
    write_jsonl(str(project / 'corpus' / 'a.jsonl'), SENTENCES * 4)
    run_script([os.path.join(ROOT, 'data', 'prepare.py'), '--input_dir=corpus', '--tokenizer=data/tokenizer',
                '--dataset=tiny', '--block_size=32', '--workers=1'], cwd=project)
    os.rename(project, tmp_path / 'moved')
    out = tmp_path / 'moved' / 'out'
    train([f'--data_dir={tmp_path / "moved" / "data" / "tiny"}', f'--out_dir={out}', '--max_iters=2',
           '--eval_interval=2'])
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 2 and ckpt['tokenizer']['ranks_sha256'] == get_tokenizer(trained_tokenizer).ranks_sha256


def readme_command(pattern):
    """The one command in README.md that matches pattern (a regex), as printed there."""
    import re
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        found = re.findall(pattern, f.read())
    assert len(found) >= 1, f"README.md no longer shows a command matching {pattern}"
    return found[0]


def test_the_readmes_ddp_command_runs_as_printed(tmp_path, trained_tokenizer):
    """
    torchrun --standalone --nproc_per_node=2 train.py config/train_config_cpu.py, as the README prints it: the CPU
    config's gradient_accumulation_steps=1 cannot be shared by 2 processes, so it is rounded up to 2, and said.
    Only the data (tiny, made with a small trained tokenizer), the output folder and a short schedule are added.
    """
    command = readme_command(r'`(torchrun --standalone --nproc_per_node=2 train\.py config/train_config_cpu\.py)`')
    argv = command.split()
    argv[0] = os.path.join(os.path.dirname(PYTHON), 'torchrun')  # the virtual environment's, as activated
    data = write_dataset(tmp_path / 'data', block_size=128, n_train=40, n_val=4, tok=get_tokenizer(trained_tokenizer))
    proc = subprocess.run([*argv, f'--data_dir={data}', f'--out_dir={tmp_path / "out"}', '--max_iters=2',
                           '--warmup_iters=1', '--eval_interval=2', '--eval_iters=1', '--log_interval=1'], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'gradient_accumulation_steps=1 is not a multiple of the 2 processes; using 2, 1 micro-step(s) per ' \
           'process' in proc.stdout
    assert proc.stdout.count('note: gradient_accumulation_steps') == 1  # the master says it once
    batch = 16  # the CPU config's rows per micro-step and process
    assert f'2 iterations of {2 * batch * 127} tokens' in proc.stdout
    lines = read_log(tmp_path / 'out')
    assert [l['tokens'] for l in lines if l['split'] == 'train'] == [2 * batch * 127, 2 * 2 * batch * 127]
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['world_size'] == 2 and ckpt['config']['gradient_accumulation_steps'] == 2
    assert ckpt['config']['batch_size'] == batch

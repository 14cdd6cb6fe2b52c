"""
Impossible settings and bad files stop a script at once with one line naming the setting or the file: train.py's
settings check, and a broken ckpt.pt or meta.json seen through the scripts.
"""
import json
import os
import runpy
import sys

import pytest
import torch

from conftest import ROOT, TINY, free_port, run_script, train_tiny_checkpoint, write_dataset

TRAIN = os.path.join(ROOT, 'train.py')


def train_in_process(args, monkeypatch):
    """train.py run in this process up to its first stop: the SystemExit's message (checks need no subprocess)."""
    monkeypatch.setattr(sys, 'argv', [TRAIN, *args])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(TRAIN, run_name='__main__')
    return str(e.value)


# (override, words the message must hold): each value is one no run can use
BAD_SETTINGS = [
    ('--gradient_accumulation_steps=0', '--gradient_accumulation_steps=0: must be at least 1'),  # trained nothing, saved it
    ('--eval_interval=0', '--eval_interval=0: must be at least 1'),  # was a ZeroDivisionError
    ('--batch_size=0', '--batch_size=0: must be at least 1'),
    ('--batch_size=-4', '--batch_size=-4'),
    ('--eval_iters=0', '--eval_iters=0'),
    ('--log_interval=0', '--log_interval=0'),
    ('--max_iters=0', '--max_iters=0: must be at least 1'),
    ('--epochs=-1', '--epochs=-1.0'),
    ('--learning_rate=0', '--learning_rate=0.0: must be above 0'),
    ('--learning_rate=1e999', '--learning_rate=inf'),
    ('--min_lr=0.5', '--min_lr=0.5: must be between 0 and learning_rate=0.01'),
    ('--warmup_iters=-1', '--warmup_iters=-1: must be at least 0'),
    ('--lr_decay_iters=2', '--lr_decay_iters=2: must be at least warmup_iters=5'),
    ('--dropout=1.0', '--dropout=1.0'),
    ('--beta2=1.5', '--beta2=1.5'),
    ('--grad_clip=-1.0', '--grad_clip=-1.0'),
    ('--weight_decay=-0.1', '--weight_decay=-0.1'),
    ('--block_size=1', '--block_size=1: must be at least 2'),
    ('--n_head=0', '--n_head=0'),
    ('--n_embd=33', '--n_embd=33: must be a positive multiple of n_head=2'),
    ('--dtype=float8', "--dtype='float8'"),
    ('--sample_mode=shuffle', "--sample_mode='shuffle'"),
    ('--device=gpu', "--device='gpu': expected"),
    ('--device=cuda:7', "--device='cuda:7': GPU 7 asked for"),
]


@pytest.mark.parametrize('override,message', BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_impossible_settings_stop_at_start(override, message, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    text = train_in_process([*TINY, f'--data_dir={tmp_path / "no_data"}', f'--out_dir={out}', '--max_iters=20',
                             override], monkeypatch)
    assert message in text, text
    assert not out.exists()  # stopped before writing anything


def test_a_config_tried_for_fewer_iterations_than_its_warmup_starts(tmp_path, monkeypatch):
    """python train.py config/train_config_cpu.py --max_iters=20 (warmup 30): past the settings, to the data."""
    text = train_in_process(['config/train_config_cpu.py', '--max_iters=20', f'--data_dir={tmp_path / "no_data"}',
                             f'--out_dir={tmp_path / "out"}'], monkeypatch)
    assert 'warmup_iters' not in text and f'{tmp_path / "no_data"}/meta.json missing' in text, text


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_without_cuda_is_a_message_not_a_traceback(tmp_path):
    data = write_dataset(tmp_path / 'data')
    proc = run_script(['train.py', *TINY, f'--data_dir={data}', f'--out_dir={tmp_path / "out"}', '--max_iters=10',
                       '--device=cuda'], check=False, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
    assert "--device='cuda'" in proc.stderr and 'finds 0' in proc.stderr and '--device=cpu' in proc.stderr


def test_out_dir_that_is_a_file_stops(tmp_path, monkeypatch):
    (tmp_path / 'taken').write_text('a file where the run folder should be')
    text = train_in_process([*TINY, f'--out_dir={tmp_path / "taken"}', '--max_iters=10'], monkeypatch)
    assert 'taken' in text and 'is a file' in text


# ----------------------------------------------------------------------------- bad files through the scripts

def test_a_truncated_checkpoint_is_one_line_in_every_script(tmp_path):
    """train.py (resume), sample.py, server.py and the arena load through checkpoint.load_checkpoint: one message, no traceback."""
    data = write_dataset(tmp_path / 'data')
    out = tmp_path / 'out'
    train_tiny_checkpoint(out, steps=1, block_size=32)
    cut = (out / 'ckpt.pt').read_bytes()[:-1000]  # what a copy cut short leaves
    (out / 'ckpt.pt').write_bytes(cut)
    path = str(out / 'ckpt.pt')
    peers = tmp_path / 'peers.json'
    peers.write_text(json.dumps([{'name': '我的模型', 'checkpoint': str(out)}], ensure_ascii=False), encoding='utf-8')
    for args in (['train.py', *TINY, f'--data_dir={data}', f'--out_dir={out}', '--init_from=resume', '--max_iters=5'],
                 ['sample.py', f'--out_dir={out}', '--start=北京', '--max_new_tokens=2', '--device=cpu'],
                 ['server.py', f'--models=m={out}', '--port=1', '--host=127.0.0.1'],
                 ['sample_gradio.py', f'--peers={peers}', f'--port={free_port()}', '--host=127.0.0.1', '--device=cpu']):
        proc = run_script(args, check=False, env={'OMP_NUM_THREADS': '1'}, timeout=120)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, (args[0], proc.stderr)
        assert f'{path}: not a readable checkpoint, truncated or corrupt' in proc.stderr, (args[0], proc.stderr)
    assert (out / 'ckpt.pt').read_bytes() == cut  # nobody wrote over it


@pytest.mark.parametrize('content,words', [
    ('{"kind": "pretrain", "block_size": 32,', 'meta.json:1: not JSON'),
    ('[1, 2]', 'expected a JSON object'),
    ('{"block_size": 32, "tokenizer": {"kind": "gpt2"}}', "kind=None, expected 'pretrain' or 'sft'"),
    ('{"kind": "pretrain", "block_size": "32", "tokenizer": {"kind": "gpt2"}}', "block_size='32'"),
    ('{"kind": "pretrain", "block_size": 32}', 'no tokenizer field'),
    ('{"kind": "pretrain", "block_size": 32, "tokenizer": "gpt2"}', "tokenizer='gpt2'"),
    ('{"kind": "pretrain", "block_size": 32, "tokenizer": {"kind": "gpt2"}, "rows": {"train": "many"}}', "rows="),
    (b'\xff\xfe{}', 'not UTF-8'),
])
def test_an_invalid_meta_json_stops_train_py(content, words, tmp_path, monkeypatch):
    data = write_dataset(tmp_path / 'data')
    meta = tmp_path / 'data' / 'meta.json'
    meta.write_bytes(content if isinstance(content, bytes) else content.encode())
    text = train_in_process([*TINY, f'--data_dir={data}', f'--out_dir={tmp_path / "out"}', '--max_iters=10'], monkeypatch)
    assert words in text and str(meta) in text and 'prepare the data again' in text, text
    assert not (tmp_path / 'out').exists()

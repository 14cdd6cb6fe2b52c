"""
SFT end to end on a tiny model: prepare_sft -> train.py config/train_config_sft.py (fine-tuning a tiny
pretrained checkpoint) -> greedy answers, verbatim, then EOT.
"""
import json
import os

import numpy as np
import torch

from conftest import A_TOKEN, EOT_TOKEN, GPT2, PAD_TOKEN, ROOT, SFT_PAIRS as PAIRS, run_script, write_sft_pairs
from data_utils import RowOrder, get_batch, init_data
from checkpoint import load_checkpoint

BLOCK_SIZE = 64  # the block size of conftest's tiny_checkpoint, the pretrained model fine-tuned here


def sft_loss(out_dir, data_dir):
    """Mean masked loss of a checkpoint over every train row (answers and their EOT only)."""
    model, _, _ = load_checkpoint(str(out_dir), 'cpu')
    data = init_data(str(data_dir), BLOCK_SIZE, 'sft')
    n = len(data['train'])
    x, y, mask = get_batch(data, 'train', n, order=RowOrder(n))
    with torch.no_grad():
        return float(model(x, y, mask)[1])


def greedy(model, tok, ids, max_new_tokens):
    """New ids up to (not including) EOT, by engine.generate_ids at temperature 0."""
    from engine import generate_ids
    return list(generate_ids(model, tok, ids, max_new_tokens=max_new_tokens, temperature=0))


def test_sft_memorises_answers_and_stops(tmp_path, tiny_checkpoint):
    pre, data, out = tiny_checkpoint, tmp_path / 'data_sft', tmp_path / 'sft'
    pairs = tmp_path / 'pairs.jsonl'
    write_sft_pairs(pairs, PAIRS)
    run_script([os.path.join(ROOT, 'data', 'prepare_sft.py'), f'--input={pairs}', f'--out_dir={data}',
                f'--block_size={BLOCK_SIZE}', '--val_fraction=0.2', f'--tokenizer={pre}'])
    before = sft_loss(pre, data)
    proc = run_script(['train.py', 'config/train_config_sft.py', f'--init_from={pre}', f'--data_dir={data}',
                       f'--out_dir={out}', '--device=cpu', '--epochs=0.0', '--max_iters=50', '--batch_size=6',
                       '--learning_rate=0.01', '--min_lr=0.003', '--warmup_iters=0', '--eval_interval=50',
                       '--eval_iters=1', '--log_interval=10'], env={'OMP_NUM_THREADS': '1'}, timeout=240)
    assert 'fine-tuning' in proc.stdout
    after = sft_loss(out, data)
    print(f"SFT loss on the train rows: {before:.3f} before, {after:.3f} after")
    assert before > 2.0 and after < 0.3
    logged = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    assert logged[-1]['iter'] == 50

    enc = GPT2
    model, tok, ckpt = load_checkpoint(str(out), 'cpu')
    assert ckpt['model_args']['block_size'] == BLOCK_SIZE and ckpt['model_args']['n_layer'] == 2
    trained = np.fromfile(data / 'train.bin', dtype=np.uint16).reshape(-1, BLOCK_SIZE).tolist()
    assert len(trained) >= 5
    for row in trained:
        sep, eot = row.index(A_TOKEN), row.index(EOT_TOKEN)
        prompt, answer = row[:sep + 1], row[sep + 1:eot]
        assert all(t == PAD_TOKEN for t in row[eot + 1:])
        got = greedy(model, tok, prompt, max_new_tokens=len(answer) + 8)
        assert enc.decode(got) == enc.decode(answer), enc.decode(prompt)
        # generation stopped on its own: the next greedy token after the answer is EOT
        with torch.no_grad():
            logits, _ = model(torch.tensor([prompt + answer]))
        assert int(logits[0, -1].argmax()) == EOT_TOKEN


def test_block_size_mismatch_stops_with_a_message(tmp_path, tiny_checkpoint):
    pre, data = tiny_checkpoint, tmp_path / 'data_sft'
    pairs = tmp_path / 'pairs.jsonl'
    pairs.write_text(''.join(json.dumps({'question': q, 'answer': a, 'id': i}, ensure_ascii=False) + '\n'
                             for i, q, a in PAIRS), encoding='utf-8')
    run_script([os.path.join(ROOT, 'data', 'prepare_sft.py'), f'--input={pairs}', f'--out_dir={data}',
                '--block_size=32', '--tokenizer=gpt2'])
    proc = run_script(['train.py', 'config/train_config_sft.py', f'--init_from={pre}', f'--data_dir={data}',
                       f'--out_dir={tmp_path / "sft"}', '--device=cpu', '--max_iters=1'], check=False,
                      env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode != 0
    assert f'block_size={BLOCK_SIZE}' in proc.stderr and 'block_size=32' in proc.stderr
    assert not (tmp_path / 'sft' / 'ckpt.pt').exists()


def test_sft_data_of_another_tokenizer_stops_with_both_names(tmp_path, tiny_checkpoint, trained_tokenizer):
    pairs, data = tmp_path / 'pairs.jsonl', tmp_path / 'data_sft'
    write_sft_pairs(pairs, PAIRS)
    run_script([os.path.join(ROOT, 'data', 'prepare_sft.py'), f'--input={pairs}', f'--out_dir={data}',
                f'--block_size={BLOCK_SIZE}', f'--tokenizer={trained_tokenizer}'])
    proc = run_script(['train.py', 'config/train_config_sft.py', f'--init_from={tiny_checkpoint}', f'--data_dir={data}',
                       f'--out_dir={tmp_path / "sft"}', '--device=cpu', '--max_iters=1'], check=False,
                      env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'{tiny_checkpoint}/ckpt.pt' in proc.stderr and f'{data}/meta.json' in proc.stderr
    assert "'gpt2'" in proc.stderr and 'corpus-400' in proc.stderr  # both tokenizers, by name
    assert not (tmp_path / 'sft' / 'ckpt.pt').exists()

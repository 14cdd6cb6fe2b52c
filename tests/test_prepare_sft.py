"""data/prepare_sft.py: exact SFT rows and loss masks for hand-built pairs, skips counted, bad lines named."""
import os

import numpy as np
import pytest
import torch

from conftest import (A_TOKEN, EOT_TOKEN, GPT2, PAD_TOKEN, ROOT, SFT_PAIRS, load_script, run_script,
                      train_tiny_checkpoint, write_sft_pairs as write_pairs)
from data_utils import RowOrder, get_batch, init_data, load_rows, read_meta, sft_mask
from tokenizer import get_tokenizer

PAIRS = SFT_PAIRS[:6]  # the bad lines' numbers asserted below count on six pairs before them
SCRIPT = os.path.join(ROOT, 'data', 'prepare_sft.py')
def expected_row(q, a, block_size, tok=GPT2):
    ids = tok.encode(q) + [tok.a_token] + tok.encode(a) + [tok.eot]
    return ids + [tok.pad] * (block_size - len(ids))


def test_rows_masks_and_meta(tmp_path):
    longest = max(len(expected_row(q, a, 0)) for _, q, a in PAIRS)
    block_size = longest  # the longest pair fills its row exactly: no PAD, EOT in the last slot
    too_long = (5, '黄河是什么？', '中国第二长的河流' * 3)
    inputs = tmp_path / 'pairs.jsonl'
    write_pairs(inputs, PAIRS + [too_long, (6, '什么是##号？', '一个记号'), (7, '空答案是什么？', ''), PAIRS[0]],
                extra_lines=['not json', '{"question": "q", "answer": "a"}', '{"question": 1, "answer": "a", "id": 9}'])
    out = tmp_path / 'sft'
    proc = run_script([SCRIPT, f'--input={inputs}', f'--out_dir={out}', f'--block_size={block_size}',
                       '--val_fraction=0.2', '--tokenizer=gpt2'])
    assert f'{inputs}:11: ' in proc.stderr and f'{inputs}:12: ' in proc.stderr and "'id'" in proc.stderr
    assert f'{inputs}:13: ' in proc.stderr and "'question'" in proc.stderr
    assert sorted(os.listdir(out)) == ['meta.json', 'train.bin', 'val.bin']  # no temporaries left
    meta = read_meta(str(out))
    assert meta['kind'] == 'sft' and meta['block_size'] == block_size and meta['dtype'] == 'uint16'
    assert meta['tokenizer'] == dict(GPT2.facts(), path=None)
    assert (meta['tokenizer']['eot_token'], meta['tokenizer']['pad_token'], meta['tokenizer']['a_token']) == (50256, 50257, 2235)
    assert meta['skipped'] == {'too_long': 1, 'a_token_in_question': 1, 'empty': 1, 'duplicate': 1, 'malformed': 3}
    assert A_TOKEN in GPT2.encode('什么是##号？')  # the skipped question really holds the separator

    rows = np.concatenate([load_rows(str(out), split, block_size, 'sft') for split in ('train', 'val')])
    assert meta['rows']['train'] + meta['rows']['val'] == len(PAIRS) == len(rows)
    assert meta['rows']['val'] >= 1 and meta['rows']['train'] >= 1
    got = sorted(map(tuple, rows.tolist()))
    assert got == sorted(tuple(expected_row(q, a, block_size)) for _, q, a in PAIRS)
    assert meta['tokens']['train'] + meta['tokens']['val'] == int((rows != PAD_TOKEN).sum())
    # whole articles stay on one side: both pairs of article 0 are in the same split
    val = {tuple(r) for r in load_rows(str(out), 'val').tolist()}
    first, second = (tuple(expected_row(q, a, block_size)) for _, q, a in PAIRS[:2])
    assert (first in val) == (second in val)

    # the loss mask, through the batch function train.py uses
    data = init_data(str(out), block_size, 'sft')
    n = meta['rows']['train']
    x, y, mask = get_batch(data, 'train', n, order=RowOrder(n))
    for xi, yi, mi in zip(x.tolist(), y.tolist(), mask.tolist()):
        row = xi + [yi[-1]]
        q_len = row.index(A_TOKEN)
        eot = row.index(EOT_TOKEN)
        want = [0.0] * (block_size - 1)
        for t in range(q_len, eot):  # y[t] = row[t + 1]: answer tokens, then the EOT
            want[t] = 1.0
        assert mi == want
        assert yi[q_len - 1] == A_TOKEN and mi[q_len - 1] == 0.0  # the A_TOKEN target is not learned
        assert yi[eot - 1] == EOT_TOKEN and mi[eot - 1] == 1.0  # the first EOT target is: the model learns to stop


def test_mask_by_hand():
    # question 3 tokens, A, answer 2 tokens, EOT, PAD, PAD (row of 9 -> 8 targets)
    row = torch.tensor([[11, 12, 13, A_TOKEN, 21, 22, EOT_TOKEN, PAD_TOKEN, PAD_TOKEN]])
    assert sft_mask(row[:, 1:], A_TOKEN, EOT_TOKEN).tolist() == [[0, 0, 0, 1, 1, 1, 0, 0]]
    # an A_TOKEN inside the answer is answer text; only the first one separates
    row = torch.tensor([[11, A_TOKEN, 21, A_TOKEN, 22, EOT_TOKEN, PAD_TOKEN, EOT_TOKEN]])
    assert sft_mask(row[:, 1:], A_TOKEN, EOT_TOKEN).tolist() == [[0, 1, 1, 1, 1, 0, 0]]


def test_errors(tmp_path):
    proc = run_script([SCRIPT, f'--input={tmp_path / "missing.jsonl"}', f'--out_dir={tmp_path / "o"}', '--tokenizer=gpt2'], check=False)
    assert proc.returncode != 0 and 'missing.jsonl not found' in proc.stderr
    one = tmp_path / 'one.jsonl'
    write_pairs(one, PAIRS[:2])  # one article: no train/val split possible
    proc = run_script([SCRIPT, f'--input={one}', f'--out_dir={tmp_path / "o"}', '--tokenizer=gpt2'], check=False)
    assert proc.returncode != 0 and '1 article(s) with usable pairs' in proc.stderr
    assert not (tmp_path / 'o' / 'meta.json').exists()
    bad = tmp_path / 'bad.jsonl'
    write_pairs(bad, PAIRS, extra_lines=['{"question": "q"'])
    proc = run_script([SCRIPT, f'--input={bad}', f'--out_dir={tmp_path / "o"}', '--strict=True', '--tokenizer=gpt2'], check=False)
    assert proc.returncode != 0 and f'{bad}:7:' in proc.stderr


def test_rows_in_the_pretrained_checkpoints_tokenizer(tmp_path, trained_tokenizer):
    """--tokenizer=<checkpoint folder>: the rows use the ids of the model that will be fine-tuned."""
    tok = get_tokenizer(trained_tokenizer)
    train_tiny_checkpoint(tmp_path / 'pre', steps=1, tok=tok)
    inputs = tmp_path / 'pairs.jsonl'
    write_pairs(inputs, PAIRS + [(8, '什么是##号？', '一个记号')])
    out = tmp_path / 'sft'
    run_script([SCRIPT, f'--input={inputs}', f'--out_dir={out}', '--block_size=40', '--val_fraction=0.2',
                f'--tokenizer={tmp_path / "pre"}'])
    meta = read_meta(str(out))
    assert meta['tokenizer'] == dict(tok.facts(), path='../pre')  # the checkpoint folder, relative to the data's
    assert 'a_token_in_question' not in meta.get('skipped', {})  # '##' is ordinary text to a trained tokenizer
    rows = np.concatenate([load_rows(str(out), split, 40, 'sft') for split in ('train', 'val')])
    assert sorted(map(tuple, rows.tolist())) == sorted(tuple(expected_row(q, a, 40, tok)) for _, q, a in PAIRS + [(8, '什么是##号？', '一个记号')])
    assert rows[0].tolist().count(399) == 1 and 398 in rows[0]  # <|answer|> and <|endoftext|> of the trained tokenizer
    data = init_data(str(out), 40, 'sft')  # rebuilt from the checkpoint folder meta.json names
    assert data['tokenizer'].facts() == tok.facts()


def test_max_pairs_keeps_the_first_usable_pairs(tmp_path):
    inputs = tmp_path / 'pairs.jsonl'
    write_pairs(inputs, [PAIRS[0], PAIRS[0], (5, '黄河是什么？', '中国第二长的河流' * 30)] + PAIRS[1:])
    out = tmp_path / 'sft'
    run_script([SCRIPT, f'--input={inputs}', f'--out_dir={out}', '--block_size=64', '--max_pairs=3',
                '--tokenizer=gpt2'])
    meta = read_meta(str(out))
    # a duplicate and a pair too long for the row are not counted against the cap
    assert meta['skipped'] == {'duplicate': 1, 'too_long': 1, 'over_max_pairs': len(PAIRS) - 3}
    rows = np.concatenate([load_rows(str(out), split, 64, 'sft') for split in ('train', 'val')])
    assert sorted(map(tuple, rows.tolist())) == sorted(tuple(expected_row(q, a, 64)) for _, q, a in PAIRS[:3])


def test_prepare_sft_raises_and_only_main_exits(tmp_path):
    """The library function raises (a strict bad line, too few articles); main turns that into one line."""
    module = load_script('data/prepare_sft.py')
    bad = tmp_path / 'bad.jsonl'
    write_pairs(bad, PAIRS, extra_lines=['{"question": "q"'])
    with pytest.raises(ValueError, match=f'{bad}:7: not JSON'):
        module.prepare_sft(str(bad), str(tmp_path / 'o'), 'gpt2', 64, 0.2, strict=True)
    with pytest.raises(ValueError, match='1 article'):
        module.prepare_sft(str(bad), str(tmp_path / 'o'), 'gpt2', 64, 0.2, max_pairs=1)
    assert not (tmp_path / 'o').exists()
    meta = module.prepare_sft(str(bad), str(tmp_path / 'o'), 'gpt2', 64, 0.2)
    assert meta['skipped'] == {'malformed': 1} and sorted(os.listdir(tmp_path / 'o')) == ['meta.json', 'train.bin', 'val.bin']

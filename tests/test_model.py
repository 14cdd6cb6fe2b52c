"""The masked loss, the exact pretrain and SFT masks, the batches, and the resumable row order."""
import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from config.train_config import A_TOKEN, EOT_TOKEN, PAD_TOKEN
from data_utils import (RANKS_SHA256, RowOrder, get_batch_pretrain, get_encoding, init_data_pretrain,
                        pretrain_mask, sft_mask)
from model import GPT, GPTConfig


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def test_loss_is_cross_entropy_over_masked_in_positions(tiny_model):
    torch.manual_seed(1)
    x = torch.randint(0, 50257, (2, 6))
    y = torch.randint(0, 50257, (2, 6))
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.float)
    with torch.no_grad():
        kept_logits, loss = tiny_model(x, y, mask)
        logits, unmasked = tiny_model(x, y)
    assert kept_logits.shape == (7, logits.size(-1))  # with a mask, logits of the masked-in positions only
    assert torch.allclose(kept_logits, logits[mask.bool()], atol=1e-5)
    log_probs = F.log_softmax(logits.double(), dim=-1)
    picked = [-log_probs[b, t, y[b, t]].item() for b in range(2) for t in range(6) if mask[b, t]]
    assert len(picked) == 7
    assert loss.item() == pytest.approx(sum(picked) / len(picked), rel=1e-5)
    every = [-log_probs[b, t, y[b, t]].item() for b in range(2) for t in range(6)]
    assert unmasked.item() == pytest.approx(sum(every) / len(every), rel=1e-5)
    assert loss.item() != pytest.approx(unmasked.item(), rel=1e-3)  # the mask really changes it


def test_an_all_zero_mask_gives_zero_loss_not_nan(tiny_model):
    x = torch.randint(0, 100, (1, 4))
    _, loss = tiny_model(x, x, torch.zeros(1, 4))
    assert loss.item() == 0.0


def test_pretrain_mask_stops_before_the_eot():
    y = torch.tensor([[11, 12, 13, EOT_TOKEN, PAD_TOKEN, PAD_TOKEN],
                      [21, 22, 23, 24, 25, 26],  # a row cut before its EOT: all real text
                      [EOT_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]])
    assert pretrain_mask(y).tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]


def test_sft_mask_covers_the_answer_and_its_first_eot():
    enc = get_encoding()
    q, a = enc.encode_ordinary('中国的首都是哪里？'), enc.encode_ordinary('北京。')
    row = q + [A_TOKEN] + a + [EOT_TOKEN] + [PAD_TOKEN] * 4
    y = torch.tensor([row[1:]])
    # targets: question tokens after the first (0), the A_TOKEN (0), the answer (1), the first EOT (1), PAD (0)
    expected = [0] * (len(q) - 1) + [0] + [1] * len(a) + [1] + [0] * 4
    assert sft_mask(y)[0].tolist() == expected


def test_sft_mask_is_exact_on_hand_ids():
    # row: q1 q2 A a1 A a2 EOT PAD EOT PAD; an A inside the answer is answer text, a second EOT is padding
    row = [101, 102, A_TOKEN, 201, A_TOKEN, 202, EOT_TOKEN, PAD_TOKEN, EOT_TOKEN, PAD_TOKEN]
    y = torch.tensor([row[1:]])
    assert sft_mask(y)[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]


def write_rows(folder, rows, block_size, kind='pretrain'):
    os.makedirs(folder, exist_ok=True)
    rows = np.asarray(rows, dtype=np.uint16)
    rows.tofile(os.path.join(folder, 'train.bin'))
    rows[:1].tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump({'kind': kind, 'ranks_sha256': RANKS_SHA256, 'block_size': block_size,
                   'rows': {'train': len(rows), 'val': 1}}, f)
    return str(folder)


def test_get_batch_pretrain_shifts_rows_by_one(tmp_path):
    rows = [[1, 2, 3, 4, EOT_TOKEN, PAD_TOKEN], [5, 6, 7, 8, 9, 10], [11, EOT_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]]
    data = init_data_pretrain(write_rows(tmp_path / 'd', rows, 6), block_size=6)
    order = RowOrder(3, seed=5)
    expected_index = np.random.default_rng(5).permutation(3)[:2].tolist()
    x, y, mask = get_batch_pretrain(data, 'train', 2, order=order)
    want = torch.tensor([rows[i] for i in expected_index])
    assert x.dtype == torch.int64 and x.tolist() == want[:, :-1].tolist() and y.tolist() == want[:, 1:].tolist()
    assert mask.tolist() == pretrain_mask(want[:, 1:]).tolist()


def test_rows_of_another_block_size_are_refused(tmp_path):
    folder = write_rows(tmp_path / 'd', [[1, 2, 3, 4]], 4)
    with pytest.raises(ValueError, match='block_size=4.*block_size=8'):
        init_data_pretrain(folder, block_size=8)
    with open(os.path.join(folder, 'train.bin'), 'ab') as f:
        f.write(b'\0\0')  # half a row more
    with pytest.raises(ValueError, match='not a multiple of one row'):
        init_data_pretrain(folder, block_size=4)


def test_row_order_visits_each_row_once_per_epoch_and_resumes():
    order = RowOrder(10, seed=3)
    taken = [order.take(3) for _ in range(7)]  # 21 rows: two epochs and one row
    flat = [i for batch in taken for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # each epoch is shuffled afresh

    first = RowOrder(10, seed=3)
    first.take(3), first.take(3), first.take(3), first.take(3)
    state = first.state_dict()
    assert state == {'seed': 3, 'epoch': 1, 'pos': 2}
    second = RowOrder(10, seed=99)
    second.load_state_dict(state)
    assert [second.take(3) for _ in range(3)] == taken[4:7]


def test_row_order_splits_rows_between_ranks():
    ranks = [RowOrder(9, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [set(ranks[0].take(4)), set(ranks[1].take(4))]
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 8

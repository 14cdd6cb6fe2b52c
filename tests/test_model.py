"""The masked loss, the exact pretrain and SFT masks, the batches, and the resumable row order."""
import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import A_TOKEN, EOT_TOKEN, GPT2, PAD_TOKEN, train_tiny_checkpoint
from data_utils import RowOrder, get_batch, init_data, pretrain_mask, sft_mask
from checkpoint import load_checkpoint, load_tokenizer, read_checkpoint, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import get_tokenizer


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
    assert pretrain_mask(y, EOT_TOKEN).tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]


def test_sft_mask_covers_the_answer_and_its_first_eot():
    q, a = GPT2.encode('中国的首都是哪里？'), GPT2.encode('北京。')
    row = q + [A_TOKEN] + a + [EOT_TOKEN] + [PAD_TOKEN] * 4
    y = torch.tensor([row[1:]])
    # targets: question tokens after the first (0), the A_TOKEN (0), the answer (1), the first EOT (1), PAD (0)
    expected = [0] * (len(q) - 1) + [0] + [1] * len(a) + [1] + [0] * 4
    assert sft_mask(y, A_TOKEN, EOT_TOKEN)[0].tolist() == expected


def test_sft_mask_is_exact_on_hand_ids():
    # row: q1 q2 A a1 A a2 EOT PAD EOT PAD; an A inside the answer is answer text, a second EOT is padding
    row = [101, 102, A_TOKEN, 201, A_TOKEN, 202, EOT_TOKEN, PAD_TOKEN, EOT_TOKEN, PAD_TOKEN]
    y = torch.tensor([row[1:]])
    assert sft_mask(y, A_TOKEN, EOT_TOKEN)[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    # the same row in a trained tokenizer's ids (a_token 399, eot 398, pad 400): the same mask
    trained = [{A_TOKEN: 399, EOT_TOKEN: 398, PAD_TOKEN: 400}.get(i, i) for i in row]
    assert sft_mask(torch.tensor([trained[1:]]), 399, 398)[0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert pretrain_mask(torch.tensor([[5, 6, 398, 400]]), 398).tolist() == [[1, 1, 0, 0]]


def write_rows(folder, rows, block_size, kind='pretrain'):
    os.makedirs(folder, exist_ok=True)
    rows = np.asarray(rows, dtype=np.uint16)
    rows.tofile(os.path.join(folder, 'train.bin'))
    rows[:1].tofile(os.path.join(folder, 'val.bin'))
    with open(os.path.join(folder, 'meta.json'), 'w') as f:
        json.dump({'kind': kind, 'tokenizer': GPT2.facts(), 'block_size': block_size,
                   'rows': {'train': len(rows), 'val': 1}}, f)
    return str(folder)


def test_get_batch_pretrain_shifts_rows_by_one(tmp_path):
    rows = [[1, 2, 3, 4, EOT_TOKEN, PAD_TOKEN], [5, 6, 7, 8, 9, 10], [11, EOT_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN, PAD_TOKEN]]
    data = init_data(write_rows(tmp_path / 'd', rows, 6), block_size=6)
    order = RowOrder(3, seed=5)
    expected_index = np.random.default_rng(5).permutation(3)[:2].tolist()
    x, y, mask = get_batch(data, 'train', 2, order=order)
    want = torch.tensor([rows[i] for i in expected_index])
    assert x.dtype == torch.int64 and x.tolist() == want[:, :-1].tolist() and y.tolist() == want[:, 1:].tolist()
    assert mask.tolist() == pretrain_mask(want[:, 1:], EOT_TOKEN).tolist()


def test_rows_of_another_block_size_are_refused(tmp_path):
    folder = write_rows(tmp_path / 'd', [[1, 2, 3, 4]], 4)
    with pytest.raises(ValueError, match='block_size=4.*block_size=8'):
        init_data(folder, block_size=8)
    with open(os.path.join(folder, 'train.bin'), 'ab') as f:
        f.write(b'\0\0')  # half a row more
    with pytest.raises(ValueError, match='not a multiple of one row'):
        init_data(folder, block_size=4)


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


def test_a_checkpoint_carries_its_tokenizer(tmp_path, trained_tokenizer):
    tok = get_tokenizer(trained_tokenizer)
    train_tiny_checkpoint(tmp_path / 'ckpt', steps=2, tok=tok)
    model, ckpt_tok, checkpoint = load_checkpoint(str(tmp_path / 'ckpt'))
    assert ckpt_tok.facts() == tok.facts() and model.config.vocab_size == 448
    assert checkpoint['tokenizer']['ranks'].count('\n') == 398  # the ranks travel inside the checkpoint
    assert load_tokenizer(str(tmp_path / 'ckpt')).facts() == tok.facts()  # a checkpoint folder names its tokenizer

    checkpoint['model_args']['vocab_size'] = 384  # fewer rows than the tokenizer's ids
    checkpoint['model'] = {k: v[:384] if v.shape[0] == 448 else v for k, v in checkpoint['model'].items()}
    save_checkpoint(str(tmp_path / 'small'), checkpoint)
    with pytest.raises(ValueError, match='384 token rows, fewer than the 400 ids'):
        load_checkpoint(str(tmp_path / 'small'))


def test_batches_are_cut_after_the_last_masked_in_target_without_changing_the_loss(tmp_path):
    block = 80
    lengths = [7, 40, 12]  # text tokens per row: the widest needs 40 targets, so 64 columns (a multiple of 32)
    rows = [[(11 * i + j) % 500 for j in range(n)] + [EOT_TOKEN] + [PAD_TOKEN] * (block - n - 1)
            for i, n in enumerate(lengths)]
    data = init_data(write_rows(tmp_path / 'd', rows, block), block_size=block)
    x, y, mask = get_batch(data, 'train', 3, order=RowOrder(3, seed=0))
    assert x.shape == y.shape == mask.shape == (3, 64)
    full = torch.tensor([rows[i] for i in RowOrder(3, seed=0).take(3)])
    assert x.tolist() == full[:, :64].tolist() and mask.sum().item() == sum(n - 1 for n in lengths)
    full_mask = pretrain_mask(full[:, 1:], EOT_TOKEN)
    assert full_mask[:, 64:].sum() == 0  # nothing the loss counts was cut
    big = GPT(GPTConfig(block_size=block, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        _, trimmed_loss = big(x, y, mask)
        _, full_loss = big(full[:, :-1], full[:, 1:], full_mask)
    assert trimmed_loss.item() == pytest.approx(full_loss.item(), rel=1e-6)


# ----------------------------------------------------------------------------- broken files

def test_a_broken_checkpoint_is_a_clear_error(tmp_path):
    import collections
    import pickle
    train_tiny_checkpoint(tmp_path / 'good', steps=1)
    good = (tmp_path / 'good' / 'ckpt.pt').read_bytes()
    checkpoint = torch.load(tmp_path / 'good' / 'ckpt.pt', weights_only=True)

    class Runs:  # a pickle that would run a command when loaded without weights_only
        def __reduce__(self):
            return (os.system, ('echo owned',))
    cases = {
        'empty': (b'', 'empty file (0 bytes)'),
        'truncated': (good[:len(good) // 2], 'not a readable checkpoint, truncated or corrupt'),
        'junk': (b'this is not a checkpoint', 'not a readable checkpoint, truncated or corrupt'),
        'code': (None, 'refused, it holds more than tensors and plain values'),
        'plain_pickle': (pickle.dumps({'model': 1}, protocol=2), 'not a readable checkpoint'),
        'not_a_dict': (None, "not a checkpoint of train.py (no 'model_args' and 'model'"),
        'bad_args': (None, "unexpected keyword argument 'n_layers'"),
        'bad_weights': (None, 'its weights do not fit its model_args'),
    }
    for name, (content, words) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        path = folder / 'ckpt.pt'
        if content is not None:
            path.write_bytes(content)
        elif name == 'code':
            torch.save({'model_args': collections.OrderedDict(), 'x': Runs()}, path)
        elif name == 'not_a_dict':
            torch.save([1, 2, 3], path)
        elif name == 'bad_args':
            torch.save(dict(checkpoint, model_args=dict(checkpoint['model_args'], n_layers=3)), path)
        else:
            torch.save(dict(checkpoint, model_args=dict(checkpoint['model_args'], n_embd=32, n_head=2)), path)
        with pytest.raises(ValueError) as e:
            load_checkpoint(str(folder))
        assert str(path) in str(e.value) and words in str(e.value), (name, str(e.value))
        if name not in ('bad_args', 'bad_weights'):  # the file itself is bad: so says the reader other scripts use
            with pytest.raises(ValueError) as e:
                read_checkpoint(str(path), mmap=True)
            assert str(e.value).startswith(f'{path}: '), (name, str(e.value))
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        load_checkpoint(str(tmp_path / 'nowhere'))
    assert read_checkpoint(str(tmp_path / 'good'), mmap=True)['iter_num'] == 1


def test_a_checkpoint_saved_for_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """load_checkpoint reads onto the CPU and then moves the model, so where it was saved does not matter."""
    train_tiny_checkpoint(tmp_path / 'c', steps=1)
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: seen.append(k.get('map_location')) or real_load(*a, **k))
    model, _, _ = load_checkpoint(str(tmp_path / 'c'), 'cpu')
    assert seen == ['cpu'] and next(model.parameters()).device.type == 'cpu'


def test_save_checkpoint_leaves_no_half_file_when_writing_fails(tmp_path, monkeypatch):
    save_checkpoint(str(tmp_path), {'iter_num': 1})

    def disk_full(obj, path):
        with open(path, 'wb') as f:
            f.write(b'half')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', disk_full)
    with pytest.raises(OSError, match='No space left'):
        save_checkpoint(str(tmp_path), {'iter_num': 2})
    assert os.listdir(tmp_path) == ['ckpt.pt']  # the old one, whole; no temporary left
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True) == {'iter_num': 1}


def test_an_invalid_meta_json_names_file_and_field(tmp_path):
    from data_utils import read_meta
    folder = write_rows(tmp_path / 'd', [[1, 2, 3, 4]], 4)
    meta_path = os.path.join(folder, 'meta.json')
    good = json.load(open(meta_path))
    for meta, words in ((dict(good, kind='chat'), "kind='chat'"), (dict(good, block_size=4.0), 'block_size=4.0'),
                        (dict(good, block_size=True), 'block_size=True'), (dict(good, dtype='uint32'), "dtype='uint32'"),
                        (dict(good, rows=[1, 1]), 'rows=[1, 1]'), (dict(good, rows={'train': -1}), 'rows='),
                        ({k: v for k, v in good.items() if k != 'tokenizer'}, 'no tokenizer field'), ('x', 'JSON object')):
        with open(meta_path, 'w') as f:
            json.dump(meta, f)
        with pytest.raises(ValueError) as e:
            init_data(folder, block_size=4)
        assert meta_path in str(e.value) and words in str(e.value), str(e.value)
    with open(meta_path, 'w') as f:
        f.write('{\n  "kind": "pretrain",\n  "block_size": 4\n  "rows": {}\n}')
    with pytest.raises(ValueError, match=r'meta\.json:4: not JSON'):
        read_meta(folder)


def test_token_ids_beyond_the_vocabulary_are_refused_at_load(tmp_path):
    from data_utils import load_rows
    rows = [[1, 2, EOT_TOKEN, PAD_TOKEN]] * 5
    folder = write_rows(tmp_path / 'd', rows, 4)
    assert load_rows(folder, 'train', 4).shape == (5, 4)  # PAD itself is the largest id a row holds
    rows[3] = [1, PAD_TOKEN + 1, EOT_TOKEN, PAD_TOKEN]  # one id past PAD: in the model's rows, but no text maps to it
    write_rows(tmp_path / 'd', rows, 4)
    with pytest.raises(ValueError) as e:
        init_data(folder, block_size=4)
    message = str(e.value)
    assert os.path.join(folder, 'train.bin') in message and 'row 3, position 1' in message, message
    assert f'token id {PAD_TOKEN + 1}' in message and f'largest id {PAD_TOKEN}' in message
    rows[3] = [1, 65535, EOT_TOKEN, PAD_TOKEN]  # past the model's rows: an IndexError mid-training before
    write_rows(tmp_path / 'd', rows, 4)
    with pytest.raises(ValueError, match='token id 65535'):
        load_rows(folder, 'train', 4)


def test_bucketed_order_keeps_every_row_once_and_groups_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    order = RowOrder(1000, seed=4, lengths=lengths, batch_size=8)
    epoch = [order.take(8) for _ in range(125)]
    assert sorted(i for batch in epoch for i in batch) == list(range(1000))  # each row once per epoch
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in epoch])
    plain = RowOrder(1000, seed=4)
    plain_spread = np.mean([lengths[b].max() - lengths[b].min() for b in (plain.take(8) for _ in range(125))])
    assert spread < plain_spread / 5, (spread, plain_spread)  # a batch's rows have about the same length
    assert [lengths[b].min() for b in epoch[:20]] != sorted(lengths[b].min() for b in epoch[:20])  # batches shuffled
    resumed = RowOrder(1000, seed=99, lengths=lengths, batch_size=8)
    resumed.load_state_dict({'seed': 4, 'epoch': 0, 'pos': 800})
    assert [resumed.take(8) for _ in range(25)] == epoch[100:]  # the order is a function of seed and epoch

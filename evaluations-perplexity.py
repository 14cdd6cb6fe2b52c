"""
Perplexity of a checkpoint on a prepared split: exp of the mean negative log-likelihood of the targets
the training loss counts (the pretrain or SFT loss mask, chosen by meta.json's kind). Lower is better;
a model that guessed uniformly among the 50257 GPT-2 ids would score 50257.

    python evaluations-perplexity.py --out_dir=out/pretrain --data_dir=data/sample
    python evaluations-perplexity.py --out_dir=out/sft --data_dir=data/sft --split=val --max_batches=50

Beside it a unigram baseline is printed: exp of the cross-entropy of the same targets under token
frequencies counted on the train split's masked-in targets (add-one smoothed over the 50257 ids).
It is what a model that ignores context entirely could reach, so a model well below it has learned
to use what came before. Results go to --output (default <out_dir>/perplexity_<split>.json).
"""
import json
import math
import os
import sys
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from config.train_config import N_VOCAB
from data_utils import load_rows, pretrain_mask, read_meta, sft_mask
from model import load_checkpoint, pick_device

# -----------------------------------------------------------------------------
out_dir = 'out/pretrain'  # checkpoint folder (ckpt.pt)
data_dir = 'data/sample'  # prepared dataset: meta.json, train.bin, val.bin
split = 'val'  # which .bin to score
batch_size = 8  # rows per forward pass
max_batches = 0  # stop after this many batches; 0 scores every row
device = 'auto'  # auto | cpu | cuda | mps
output = ''  # JSON report; '' means <out_dir>/perplexity_<split>.json
# -----------------------------------------------------------------------------

MASKS = {'pretrain': pretrain_mask, 'sft': sft_mask}
TOKENIZER_KEYS = ('encoding', 'ranks_sha256', 'eot_token', 'pad_token', 'a_token', 'n_vocab')


def check_compatible(meta, checkpoint, data_dir, out_dir):
    """Stops with a message naming both values when the rows were not made for this model."""
    ckpt_block = checkpoint['model_args']['block_size']
    if meta['block_size'] != ckpt_block:
        raise ValueError(f"{data_dir}/meta.json has block_size={meta['block_size']} but the checkpoint in "
                         f"{out_dir} was trained with block_size={ckpt_block}: prepare the data again with "
                         f"--block_size={ckpt_block}")
    theirs = checkpoint.get('tokenizer', {})
    ours = meta.get('tokenizer', meta)  # tokenizer facts may sit at the top of meta.json or under 'tokenizer'
    for key in TOKENIZER_KEYS:
        if key in ours and key in theirs and ours[key] != theirs[key]:
            raise ValueError(f"{data_dir}/meta.json has tokenizer {key}={ours[key]!r} but the checkpoint in "
                             f"{out_dir} has {key}={theirs[key]!r}: the ids mean different things")
    if meta.get('kind') not in MASKS:
        raise ValueError(f"{data_dir}/meta.json: kind={meta.get('kind')!r}, expected one of {sorted(MASKS)}")


def batches(rows, batch_size, max_batches, mask_fn):
    """(x, y, mask) for consecutive rows, in file order so that two runs score the same rows."""
    n_batches = math.ceil(len(rows) / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        batch = torch.from_numpy(rows[b * batch_size:(b + 1) * batch_size].astype(np.int64))
        x, y = batch[:, :-1], batch[:, 1:]
        yield x, y, mask_fn(y)


def unigram_log_probs(train_rows, mask_fn, chunk=4096):
    """log p(id) from the train split's masked-in targets, add-one smoothed so no id has probability 0."""
    counts = np.zeros(N_VOCAB, dtype=np.float64)
    for _, y, mask in tqdm(batches(train_rows, chunk, 0, mask_fn), total=math.ceil(len(train_rows) / chunk),
                           desc='unigram counts (train)', leave=False):
        counts += np.bincount(y[mask.bool()].numpy(), minlength=N_VOCAB)[:N_VOCAB]
    return np.log((counts + 1.0) / (counts.sum() + N_VOCAB))


@torch.no_grad()
def score(model, rows, mask_fn, batch_size, max_batches, device):
    """(sum of target NLL in nats, number of targets, rows scored, counts of the target ids)."""
    total_nll, n_tokens, n_rows = 0.0, 0, 0
    target_counts = np.zeros(N_VOCAB, dtype=np.float64)
    device_type = torch.device(device).type
    # bf16 on a GPU for speed (the model casts logits to float32 for the cross-entropy); float32 elsewhere
    autocast = torch.autocast('cuda', dtype=torch.bfloat16) if device_type == 'cuda' else nullcontext()
    n_batches = math.ceil(len(rows) / batch_size)
    total = min(n_batches, max_batches) if max_batches else n_batches
    for x, y, mask in tqdm(batches(rows, batch_size, max_batches, mask_fn), total=total, desc='perplexity'):
        with autocast:
            _, loss = model(x.to(device), y.to(device), mask.to(device))  # mean NLL over the masked-in targets
        n = int(mask.sum().item())
        total_nll += loss.item() * n
        n_tokens += n
        n_rows += len(x)
        target_counts += np.bincount(y[mask.bool()].numpy(), minlength=N_VOCAB)[:N_VOCAB]
    return total_nll, n_tokens, n_rows, target_counts


def evaluate(out_dir, data_dir, split='val', batch_size=8, max_batches=0, device='cpu', baseline=True):
    """The report as a dict: ppl, loss, tokens, and the unigram baseline beside them."""
    meta = read_meta(data_dir)
    model, checkpoint = load_checkpoint(out_dir, device)
    check_compatible(meta, checkpoint, data_dir, out_dir)
    rows = load_rows(data_dir, split, block_size=meta['block_size'])
    mask_fn = MASKS[meta['kind']]
    total_nll, n_tokens, n_rows, target_counts = score(model, rows, mask_fn, batch_size, max_batches, device)
    if n_tokens == 0:
        raise ValueError(f"{data_dir}/{split}.bin: no masked-in targets in the {n_rows} rows scored")
    loss = total_nll / n_tokens
    report = {'ppl': math.exp(loss), 'loss': loss, 'tokens': n_tokens, 'rows': n_rows,
              'checkpoint': os.path.join(out_dir, 'ckpt.pt'), 'iter_num': checkpoint.get('iter_num'),
              'data': os.path.join(data_dir, f'{split}.bin'), 'kind': meta['kind'], 'split': split}
    if baseline:
        log_p = unigram_log_probs(load_rows(data_dir, 'train', block_size=meta['block_size']), mask_fn)
        unigram_loss = float(-(target_counts * log_p).sum() / n_tokens)
        report.update(unigram_ppl=math.exp(unigram_loss), unigram_loss=unigram_loss)
    return report


def main():
    dev = pick_device(device)
    try:
        report = evaluate(out_dir, data_dir, split, batch_size, max_batches, dev)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    path = output or os.path.join(out_dir, f'perplexity_{split}.json')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(report, f, ensure_ascii=False, indent=2)
    print(f"{report['checkpoint']} (iter {report['iter_num']}) on {report['data']} ({report['kind']} rows)")
    print(f"perplexity      {report['ppl']:10.2f}   mean loss {report['loss']:.4f} nats over "
          f"{report['tokens']:,} target tokens in {report['rows']:,} rows")
    print(f"unigram baseline {report['unigram_ppl']:9.2f}   mean loss {report['unigram_loss']:.4f} "
          f"(train-split token frequencies, no context; uniform guessing would be {N_VOCAB})")
    print(f"wrote {path}")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

"""
Perplexity and bits per character of a checkpoint on a prepared split: the negative log-likelihood of the
targets the training loss counts (the pretrain or SFT loss mask, chosen by meta.json's kind). Lower is
better; a model that guessed uniformly among n_vocab ids would score a perplexity of n_vocab.

    python evaluations-perplexity.py --out_dir=out/pretrain --data_dir=data/sample
    python evaluations-perplexity.py --out_dir=out/sft --data_dir=data/sft --split=val --max_batches=50

Perplexity is per token, so two tokenizers' perplexities do not compare: GPT-2 spends ~2.2 tokens on a
Chinese character, a BPE trained on the corpus ~0.7. Bits per character (and per UTF-8 byte) do: the
total NLL in bits divided by the characters (bytes) of the scored target tokens. A character is counted by
the token that holds its first byte, so a character split across tokens counts once.
Beside them a unigram baseline: the same targets under token frequencies counted on the train split's
masked-in targets (add-one smoothed over the n_vocab ids), what a model that ignores context could reach.
Results go to --output (default <out_dir>/perplexity_<split>.json).
"""
import json
import math
import os
import sys
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from data_utils import load_rows, mask_fn, read_meta
from checkpoint import load_checkpoint
from model import pick_device
from tokenizer import same_tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out/pretrain'  # checkpoint folder (ckpt.pt)
data_dir = 'data/sample'  # prepared dataset: meta.json, train.bin, val.bin
split = 'val'  # which .bin to score
batch_size = 8  # rows per forward pass
max_batches = 0  # stop after this many batches; 0 scores every row
device = 'auto'  # auto | cpu | cuda | mps
output = ''  # JSON report; '' means <out_dir>/perplexity_<split>.json
# -----------------------------------------------------------------------------

def check_compatible(meta, tok, checkpoint, data_dir, out_dir):
    """Stops with a message naming both values when the rows were not made for this model."""
    ckpt_block = checkpoint['model_args']['block_size']
    if meta['block_size'] != ckpt_block:
        raise ValueError(f"{data_dir}/meta.json has block_size={meta['block_size']} but the checkpoint in "
                         f"{out_dir} was trained with block_size={ckpt_block}: prepare the data again with "
                         f"--block_size={ckpt_block}")
    # the ids mean different things under another tokenizer (older metas keep the facts at the top level)
    same_tokenizer(meta.get('tokenizer', meta), tok.facts(), f"{data_dir}/meta.json", f"{out_dir}/ckpt.pt")
    if meta.get('kind') not in ('pretrain', 'sft'):
        raise ValueError(f"{data_dir}/meta.json: kind={meta.get('kind')!r}, expected 'pretrain' or 'sft'")


def text_sizes(tok):
    """(UTF-8 bytes, characters) each id stands for; specials stand for none. Characters = lead bytes."""
    n_bytes, n_chars = np.zeros(tok.n_vocab), np.zeros(tok.n_vocab)
    specials = set(tok.special_tokens.values())
    for i in range(tok.n_vocab):
        if i not in specials:
            b = tok.token_bytes(i)
            n_bytes[i], n_chars[i] = len(b), sum(1 for c in b if c & 0xC0 != 0x80)
    return n_bytes, n_chars


def batches(rows, batch_size, max_batches, mask_fn):
    """(x, y, mask) for consecutive rows, in file order so that two runs score the same rows."""
    n_batches = math.ceil(len(rows) / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        batch = torch.from_numpy(rows[b * batch_size:(b + 1) * batch_size].astype(np.int64))
        x, y = batch[:, :-1], batch[:, 1:]
        yield x, y, mask_fn(y)


def unigram_log_probs(train_rows, mask_fn, n_vocab, chunk=4096):
    """log p(id) from the train split's masked-in targets, add-one smoothed so no id has probability 0."""
    counts = np.zeros(n_vocab, dtype=np.float64)
    for _, y, mask in tqdm(batches(train_rows, chunk, 0, mask_fn), total=math.ceil(len(train_rows) / chunk),
                           desc='unigram counts (train)', leave=False):
        counts += np.bincount(y[mask.bool()].numpy(), minlength=n_vocab)[:n_vocab]
    return np.log((counts + 1.0) / (counts.sum() + n_vocab))


@torch.no_grad()
def score(model, n_vocab, rows, mask_fn, batch_size, max_batches, device):
    """(sum of target NLL in nats, number of targets, rows scored, counts of the target ids)."""
    total_nll, n_tokens, n_rows = 0.0, 0, 0
    target_counts = np.zeros(n_vocab, dtype=np.float64)
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
        target_counts += np.bincount(y[mask.bool()].numpy(), minlength=n_vocab)[:n_vocab]
    return total_nll, n_tokens, n_rows, target_counts


def evaluate(out_dir, data_dir, split='val', batch_size=8, max_batches=0, device='cpu', baseline=True):
    """The report as a dict: ppl, loss, bits per character and byte, and the unigram baseline beside them."""
    meta = read_meta(data_dir)
    model, tok, checkpoint = load_checkpoint(out_dir, device)
    check_compatible(meta, tok, checkpoint, data_dir, out_dir)
    rows = load_rows(data_dir, split, block_size=meta['block_size'])
    masks = mask_fn(meta['kind'], tok)
    total_nll, n_tokens, n_rows, target_counts = score(model, tok.n_vocab, rows, masks, batch_size, max_batches, device)
    if n_tokens == 0:
        raise ValueError(f"{data_dir}/{split}.bin: no masked-in targets in the {n_rows} rows scored")
    n_bytes, n_chars = (float(target_counts @ sizes) for sizes in text_sizes(tok))
    loss = total_nll / n_tokens
    bits = total_nll / math.log(2)
    report = {'ppl': math.exp(loss), 'loss': loss, 'bits_per_char': bits / max(n_chars, 1),
              'bits_per_byte': bits / max(n_bytes, 1), 'tokens': n_tokens, 'chars': int(n_chars), 'bytes': int(n_bytes),
              'rows': n_rows, 'tokenizer': tok.facts(), 'checkpoint': os.path.join(out_dir, 'ckpt.pt'),
              'iter_num': checkpoint.get('iter_num'), 'data': os.path.join(data_dir, f'{split}.bin'),
              'kind': meta['kind'], 'split': split}
    if baseline:
        log_p = unigram_log_probs(load_rows(data_dir, 'train', block_size=meta['block_size']), masks, tok.n_vocab)
        unigram_nll = float(-(target_counts * log_p).sum())
        report.update(unigram_ppl=math.exp(unigram_nll / n_tokens), unigram_loss=unigram_nll / n_tokens,
                      unigram_bits_per_char=unigram_nll / math.log(2) / max(n_chars, 1))
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
          f"{report['tokens']:,} target tokens in {report['rows']:,} rows ({report['tokenizer']['name']} tokenizer)")
    print(f"bits per char   {report['bits_per_char']:10.3f}   bits per byte {report['bits_per_byte']:.3f} "
          f"({report['chars']:,} characters, {report['bytes']:,} bytes)")
    print(f"unigram baseline {report['unigram_ppl']:9.2f}   mean loss {report['unigram_loss']:.4f}, "
          f"{report['unigram_bits_per_char']:.3f} bits per char (train-split token frequencies, no context; "
          f"uniform guessing would be {report['tokenizer']['n_vocab']})")
    print(f"wrote {path}")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

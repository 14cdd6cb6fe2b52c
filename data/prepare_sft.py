"""
Packs question/answer pairs (sft/sft_generate.py's output) into SFT rows for train.py (DESIGN.md §2).

    python data/prepare_sft.py --tokenizer=out/pretrain --block_size=256      # the pretrained checkpoint's tokenizer
    python data/prepare_sft.py --tokenizer=out/pretrain --block_size=256 --max_pairs=600   # a subset to memorise
    python data/prepare_sft.py --input=sft/sft_saves.jsonl --out_dir=data/sft --tokenizer=data/tokenizer \
        --block_size=256 --val_fraction=0.05

A row is encode(question) + [A_TOKEN] + encode(answer) + [EOT], then PAD to block_size; the tokenizer and
block size must be those of the checkpoint that will be fine-tuned (--tokenizer accepts its folder, and
train.py checks both). A pair that does not fit, has an empty field, repeats an earlier pair, or whose
question itself encodes to A_TOKEN (GPT-2's A_TOKEN is the ordinary token '##'; the loss mask takes the
first one in a row as the separator) is skipped and counted. Whole articles (by id) go to train or val, decided by a
hash of the id, so the split does not depend on the order the generator finished articles in.
Writes data/<dataset>/{train,val}.bin and meta.json (kind 'sft') under temporary names, renamed at the end.
"""
import os
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data_utils import finish_prepared, jsonl_objects  # noqa: E402
from checkpoint import load_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
input = 'sft/sft_saves.jsonl'  # {"question", "answer", "id"} per line
tokenizer = 'data/tokenizer'  # the pretrained model's: its checkpoint folder, a tokenizer folder, or 'gpt2'
dataset = 'sft'
out_dir = ''  # default data/<dataset>
block_size = 128  # tokens per row: the block_size of the checkpoint to fine-tune
val_fraction = 0.05  # share of articles (not pairs) held out; at least one article
max_pairs = 0  # keep only the first N usable pairs (in file order; 0 = all): a small model memorises a subset in minutes
strict = False  # stop at the first malformed line instead of skipping it
# -----------------------------------------------------------------------------


def sft_row(tok, question, answer, block_size):
    """(row of block_size ids, None), or (None, reason it is skipped)."""
    if not question.strip() or not answer.strip():
        return None, 'empty'
    q = tok.encode(question)
    if tok.a_token in q:
        return None, 'a_token_in_question'
    ids = q + [tok.a_token] + tok.encode(answer) + [tok.eot]
    if len(ids) > block_size:
        return None, 'too_long'
    return ids + [tok.pad] * (block_size - len(ids)), None


def in_val(article_id, val_fraction):
    return zlib.crc32(str(article_id).encode()) / 2 ** 32 < val_fraction


def read_pairs(path, skipped, strict=False):
    """Yields (id, question, answer) per good line; a bad one is reported as path:line and counted."""
    for line_no, record, problem in jsonl_objects(path):
        if record is not None:
            fields = [record.get(k) for k in ('id', 'question', 'answer')]
            bad = [k for k, v, t in zip(('id', 'question', 'answer'), fields, (int, str, str)) if not isinstance(v, t)]
            if bad:
                problem = ('malformed', f'field {bad[0]!r} missing or not a{"n int" if bad[0] == "id" else " string"}')
        if problem:
            message = f"{path}:{line_no}: {problem[1]}"
            if strict:
                sys.exit(f"error: {message}")
            print(f"skipped {message}", file=sys.stderr)
            skipped['malformed'] = skipped.get('malformed', 0) + 1
            continue
        yield tuple(fields)


def main():
    if not os.path.exists(input):
        sys.exit(f"error: {input} not found: run sft/sft_generate.py first (or pass --input=...)")
    if not 0 < val_fraction < 1:
        sys.exit(f"error: --val_fraction={val_fraction} must be between 0 and 1 (train.py evaluates on val rows)")
    if not 2 <= block_size <= 65536:
        sys.exit(f"error: --block_size={block_size}: must be between 2 and 65536 (the pretrained model's block_size)")
    folder = out_dir or os.path.join('data', dataset)
    if os.path.exists(folder) and not os.path.isdir(folder):
        sys.exit(f"error: --out_dir={folder}: a file is in the way; the rows and meta.json go into a folder")
    try:
        tok = load_tokenizer(tokenizer)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: --tokenizer={tokenizer}: {e}")
    skipped, seen, rows = {}, set(), {}  # rows: article id -> its rows
    n_pairs = kept = 0
    for article_id, question, answer in read_pairs(input, skipped, strict):
        if max_pairs and kept >= max_pairs:
            skipped['over_max_pairs'] = skipped.get('over_max_pairs', 0) + 1
            continue
        n_pairs += 1
        key = (question.strip(), answer.strip())
        if key in seen:
            skipped['duplicate'] = skipped.get('duplicate', 0) + 1
            continue
        seen.add(key)
        row, reason = sft_row(tok, question.strip(), answer.strip(), block_size)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        rows.setdefault(article_id, []).append(np.array(row, dtype=np.uint16))
        kept += 1
    ids = sorted(rows)
    if len(ids) < 2:
        sys.exit(f"error: {input}: {len(ids)} article(s) with usable pairs; a train/val split needs at least 2 "
                 f"(skipped: {skipped})")
    val_ids = {i for i in ids if in_val(i, val_fraction)}
    if not val_ids or len(val_ids) == len(ids):  # tiny inputs: keep both splits non-empty
        val_ids = {ids[-1]}
    splits = {name: np.array([r for i in ids if (i in val_ids) == (name == 'val') for r in rows[i]],
                             dtype=np.uint16).reshape(-1, block_size) for name in ('train', 'val')}
    tokens = {name: int((a != tok.pad).sum()) for name, a in splits.items()}
    meta = dict(kind='sft', tokenizer=dict(tok.facts(), path=tok.path), block_size=block_size, dtype='uint16',
                rows={name: len(a) for name, a in splits.items()}, tokens=tokens,
                fill_ratio=round(sum(tokens.values()) / sum(a.size for a in splits.values()), 6),
                articles={'train': len(ids) - len(val_ids), 'val': len(val_ids)}, pairs=n_pairs, skipped=skipped,
                val_fraction=val_fraction, split='val if crc32(str(id)) / 2**32 < val_fraction (whole articles)',
                source={'input': input, 'bytes': os.path.getsize(input), 'pairs': n_pairs})
    try:
        os.makedirs(folder, exist_ok=True)
        for name, array in splits.items():
            array.tofile(os.path.join(folder, f'{name}.bin.tmp'))
        finish_prepared(folder, meta)
    except OSError as e:
        sys.exit(f"error: writing {folder}: {e}")
    finally:  # after a failure, no stale temporaries
        for name in ('train.bin', 'val.bin', 'meta.json'):
            if os.path.exists(os.path.join(folder, name + '.tmp')):
                os.remove(os.path.join(folder, name + '.tmp'))
    print(f"{n_pairs} pairs from {input}: {meta['rows']['train']} train / {meta['rows']['val']} val rows of "
          f"{block_size} tokens (fill {meta['fill_ratio']:.0%}), skipped {skipped or 'none'} -> {folder}/")


if __name__ == '__main__':
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
    main()

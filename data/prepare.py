"""
Turns a folder of pretraining JSONL ({"text": ...} per line) into rows of token ids for train.py:
<out_dir>/train.bin and val.bin (uint16, rows of exactly block_size tokens) and meta.json (README: Formats).

    python data/fetch_sample.py       # People's Daily 1998-01 -> data/people_daily/199801.jsonl
    python data/train_tokenizer.py --input_dir=data/people_daily --out_dir=data/tokenizer    # ~10 s
    python data/prepare.py --input_dir=data/people_daily --dataset=sample --block_size=128    # the CPU recipe, ~3 s
    python data/prepare.py --input_dir=data/people_daily --dataset=sample_gpt2 --tokenizer=gpt2 --block_size=128
    python data/prepare.py --input_dir=/path/to/wiki_zh --dataset=wiki --block_size=512 --workers=16

--tokenizer is a folder written by data/train_tokenizer.py (the default, data/tokenizer) or 'gpt2'; meta.json
records which, so train.py and every later stage use the same one.

One article makes one row: the article cleaned (corpus.clean_article), cut to the longest prefix that ends
with 。 and still fits in the row with the EOT, then EOT, then PAD to the end. Nothing is packed across
articles, so every row starts at an article's start and ends on a full sentence. An article with no such
prefix is skipped and counted ('no_period'), as are empty ones and bad lines ('malformed', 'non_utf8').
The split is by article: an article goes to val when a hash of its cleaned text falls below val_fraction, so
reruns give the same split and duplicated articles never straddle train and val.
The output is byte-identical for any --workers; memory stays flat however large the corpus (articles stream
through the workers in chunks and rows are written as they come back); everything is written under
temporary names and renamed at the end, so a killed run leaves nothing a reader accepts.
"""
import collections
import multiprocessing
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from corpus import clean_article, find_jsonl, in_val, iter_articles  # noqa: E402
from data_utils import tokenizer_record, write_prepared  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
input_dir = 'data/people_daily'  # folder walked recursively for *.jsonl
tokenizer = 'data/tokenizer'  # a folder from data/train_tokenizer.py, or 'gpt2' (GPT-2's BPE, 2-3x more tokens per character)
dataset = 'sample'  # names the output folder data/<dataset>
out_dir = ''  # '' means data/<dataset>
block_size = 512  # tokens per row, EOT and PAD included; train.py must use the same
val_fraction = 0.01  # share of the articles that go to val.bin
workers = os.cpu_count() or 1  # processes that clean and tokenize
strict = False  # True: a malformed or non-UTF-8 line stops the run instead of being skipped
chunk_size = 256  # articles per task handed to a worker
# -----------------------------------------------------------------------------
MAX_BLOCK_SIZE = 65536  # rows are stored whole, PAD included: 128 KB a row, and no article needs more

_WORDY = '\u4e00-\u9fa5\u3400-\u4db5０-９Ａ-Ｚａ-ｚ0-9A-Za-z'  # characters that are surely \p{L} or \p{N}
# A 。 followed by a letter, digit or space (or the end) ends a pre-tokenizer chunk of the GPT-2 pattern, so
# the text on either side of it encodes independently. Followed by punctuation (。” 。） 。。) it does not:
# the punctuation run is one chunk. The sets are narrower than \p{L}\p{N}\s on purpose: a 。 they miss is
# still found below, just encoded the slow way.
_CLOSED_STOP = re.compile(f'。(?=[{_WORDY} \t\u3000]|$)')
_WORD_CHAR = re.compile(f'[{_WORDY}]')


def fit_prefix(enc, text, budget):
    """
    encode_ordinary(p) for the longest prefix p of text that ends with 。 and encodes to at most budget
    tokens, or None. Sentences are encoded one by one, only until the first that overflows; then the 。
    inside that sentence (those followed by punctuation) are tried from the right, each prefix encoded whole.
    """
    ids, start = [], 0
    stops = [m.end() for m in _CLOSED_STOP.finditer(text)]
    for i, end in enumerate(stops + [len(text)]):
        piece = text[start:end]
        piece_ids = enc.encode_ordinary(piece)
        room = budget - len(ids)
        closed = i < len(stops)
        if closed and len(piece_ids) <= room:
            ids += piece_ids  # exact: the pre-tokenizer splits right after this 。
            start = end
            continue
        limit = len(piece) - 1 if closed else len(piece)  # the closing 。 did not fit
        if len(piece_ids) > room:
            # Token number `room` of the piece is one too many. Once a letter or digit follows it, its chunk
            # is complete before any later 。, so every prefix ending at that 。 holds it too: skip them.
            # Without this, text with no closed 。 (dialogue: 。”) would be encoded once per 。 in it.
            first_over = len(enc.decode_bytes(piece_ids[:room + 1]).decode('utf-8', 'ignore'))
            word = _WORD_CHAR.search(piece, first_over)
            if word:
                limit = min(limit, word.start())
        stop = piece.rfind('。', 0, limit)
        while stop >= 0:
            tail = enc.encode_ordinary(piece[:stop + 1])
            if len(tail) <= room:
                return ids + tail
            stop = piece.rfind('。', 0, stop)
        return ids or None


def make_rows(task):
    """A chunk of raw texts -> (train row bytes, val row bytes, counts); runs in a worker."""
    texts, block_size, val_fraction, tokenizer = task
    tok = get_tokenizer(tokenizer)  # cached: built once per worker process
    counts = collections.Counter()
    rows = {'train': [], 'val': []}
    for raw in texts:
        cleaned = clean_article(raw)
        if not cleaned:
            counts['empty'] += 1
            continue
        ids = fit_prefix(tok.enc, cleaned, block_size - 1)
        if ids is None:
            counts['no_period'] += 1
            continue
        split = 'val' if in_val(cleaned, val_fraction) else 'train'
        rows[split].append(ids + [tok.eot])
        counts[f'tokens_{split}'] += len(ids) + 1
        counts[f'chars_{split}'] += len(tok.decode(ids))
    out = []
    for split in ('train', 'val'):
        block = np.full((len(rows[split]), block_size), tok.pad, dtype=np.uint16)
        for i, ids in enumerate(rows[split]):
            block[i, :len(ids)] = ids
        out.append(block.tobytes())
    return out[0], out[1], counts


def ordered_map(fn, tasks, n_workers):
    """
    fn over tasks on n_workers processes, results in input order. At most 2 tasks per worker are in flight:
    Pool.imap would read the whole corpus ahead into its queue whenever the workers are slower than the reader.
    """
    if n_workers <= 1:
        yield from map(fn, tasks)
        return
    with multiprocessing.Pool(n_workers) as pool:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= 2 * n_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def move_last_row(src, dst, row_bytes, tok):
    """Moves the last row of open file src to the end of open file dst; returns its (non-PAD tokens, characters)."""
    src.seek(-row_bytes, os.SEEK_END)
    row = src.read(row_bytes)
    src.seek(-row_bytes, os.SEEK_END)
    src.truncate()
    dst.seek(0, os.SEEK_END)
    dst.write(row)
    ids = np.frombuffer(row, dtype=np.uint16)
    ids = ids[ids != tok.pad]
    return len(ids), len(tok.decode(ids[:-1].tolist()))  # the last id is the row's EOT


def prepare(input_dir, out_dir, block_size, val_fraction, n_workers, strict, tokenizer='gpt2', chunk_size=256):
    """Writes train.bin, val.bin and meta.json into out_dir and returns the meta dict."""
    if not 2 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"--block_size={block_size}: must be between 2 (one token and the EOT) and {MAX_BLOCK_SIZE} "
                         f"(each row is stored whole: {block_size} tokens would take {block_size * 2:,} bytes a row)")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"--val_fraction={val_fraction}: must be at least 0 and below 1")
    if n_workers < 1 or chunk_size < 1:
        raise ValueError(f"--workers={n_workers}, --chunk_size={chunk_size}: both must be at least 1")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out_dir={out_dir}: a file is in the way; the rows and meta.json go into a folder")
    if tokenizer != 'gpt2' and not os.path.exists(tokenizer):  # the usual first run on a new corpus
        raise FileNotFoundError(
            f"no tokenizer at --tokenizer={tokenizer}: train one on this corpus with "
            f"python data/train_tokenizer.py --input_dir={input_dir} --out_dir={tokenizer} "
            f"(seconds on a few million characters), or use GPT-2's BPE with --tokenizer=gpt2 "
            f"(nothing to train, 2-3 tokens per Chinese character)")
    tok = get_tokenizer(tokenizer)  # fails here, before any work, if the tokenizer is incomplete or tampered with
    if tok.n_vocab > 65535:
        raise ValueError(f"{tok.describe()}: ids do not fit in uint16")
    files = find_jsonl(input_dir)
    if not files:
        raise FileNotFoundError(f"{input_dir}: no *.jsonl files in it or below it")
    skipped = {'no_period': 0, 'empty': 0, 'malformed': 0, 'non_utf8': 0}
    per_file = collections.Counter()
    counts = collections.Counter()

    def tasks(bar):
        chunk = []
        for _, path, _, raw in iter_articles(input_dir, skipped, strict):
            per_file[path] += 1
            chunk.append(raw)
            if len(chunk) == chunk_size:
                yield chunk, block_size, val_fraction, tokenizer
                bar.update(len(chunk))
                chunk = []
        if chunk:
            yield chunk, block_size, val_fraction, tokenizer
            bar.update(len(chunk))

    def write_rows(out):
        from tqdm import tqdm
        row_bytes = block_size * 2
        with tqdm(desc='prepare', unit=' articles', unit_scale=True) as bar:
            for train_bytes, val_bytes, chunk_counts in ordered_map(make_rows, tasks(bar), n_workers):
                out['train'].write(train_bytes)
                out['val'].write(val_bytes)
                counts.update(chunk_counts)
                counts['train'] += len(train_bytes) // row_bytes
                counts['val'] += len(val_bytes) // row_bytes
        for reason in ('no_period', 'empty'):
            skipped[reason] = counts[reason]
        total = counts['train'] + counts['val']
        if total == 0 or (val_fraction > 0 and total < 2):
            raise ValueError(f"{input_dir}: only {total} usable article(s) (skipped: {skipped}); need at least "
                             f"{2 if val_fraction > 0 else 1} for train{' and val' if val_fraction > 0 else ''}")
        # a tiny corpus may hash no article into one split; borrow one row so both splits exist
        for src, dst in (('train', 'val'), ('val', 'train')):
            if val_fraction > 0 and counts[dst] == 0:
                moved, chars = move_last_row(out[src], out[dst], row_bytes, tok)
                counts[src], counts[dst] = counts[src] - 1, 1
                counts[f'tokens_{src}'] -= moved
                counts[f'tokens_{dst}'] = moved
                counts[f'chars_{src}'] -= chars
                counts[f'chars_{dst}'] = chars
                print(f"note: no article hashed into {dst}; moved the last {src} row there")
        return dict(kind='pretrain', tokenizer=tokenizer_record(tok, out_dir), block_size=block_size, dtype='uint16',
                    rows={'train': counts['train'], 'val': counts['val']},
                    tokens={'train': counts['tokens_train'], 'val': counts['tokens_val']},
                    chars={'train': counts['chars_train'], 'val': counts['chars_val']},
                    fill_ratio=round((counts['tokens_train'] + counts['tokens_val']) / (total * block_size), 6),
                    articles=sum(per_file.values()), skipped=skipped, val_fraction=val_fraction,
                    split='val if the first 8 bytes of sha256(cleaned text) / 2**64 < val_fraction',
                    source={'input_dir': input_dir,
                            'files': [{'path': os.path.relpath(p, input_dir).replace(os.sep, '/'),
                                       'bytes': os.path.getsize(p), 'articles': per_file[p]} for p in files]})

    return write_prepared(out_dir, write_rows)  # temporary names, synced, renamed with meta.json last


def main():
    out = out_dir or os.path.join('data', dataset)
    t0 = time.time()
    try:
        meta = prepare(input_dir, out, block_size, val_fraction, workers, strict, tokenizer, chunk_size)
    except (ValueError, OSError) as e:  # OSError: a full disk, a folder we may not write, a file that vanished
        sys.exit(f"error: {e}")
    rows, tokens = meta['rows'], meta['tokens']
    print(f"read {meta['articles']:,} articles from {len(meta['source']['files'])} file(s) in {input_dir}; "
          f"{get_tokenizer(tokenizer).describe()}")
    print(f"wrote {out}/train.bin: {rows['train']:,} rows, {out}/val.bin: {rows['val']:,} rows "
          f"(block_size={block_size}, {tokens['train'] + tokens['val']:,} non-PAD tokens, fill ratio {meta['fill_ratio']:.3f})")
    print("skipped: " + ', '.join(f"{k}={v}" for k, v in meta['skipped'].items()))
    print(f"done in {time.time() - t0:.1f}s with {workers} worker(s)")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configurator.py')).read())
    main()

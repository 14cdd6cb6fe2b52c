"""
What every stage shares about data: the offline GPT-2 tokenizer, the article reader and cleaner,
the prepared .bin rows, and the loss masks (DESIGN.md §1-§2).

    from data_utils import get_encoding, iter_articles, init_data_pretrain, get_batch_pretrain
"""
import functools
import glob
import json
import os
import re
import sys

import numpy as np

from config.train_config import A_TOKEN, ENCODING_NAME, EOT_TOKEN, N_VOCAB, PAD_TOKEN

ROOT = os.path.dirname(os.path.abspath(__file__))
# GPT-2's BPE ranks, copied from whisper/assets/gpt2.tiktoken in the openai-whisper==20250625 sdist;
# tiktoken.get_encoding("gpt2") would download them and fails offline.
RANKS_PATH = os.path.join(ROOT, 'data', 'gpt2.tiktoken')
RANKS_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'
# tiktoken's r50k_base / gpt2 pre-tokenizer pattern
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=None)
def get_encoding(ranks_path=RANKS_PATH):
    """The GPT-2 encoding, built from the shipped ranks file; a file with another hash is refused."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    if not os.path.exists(ranks_path):
        raise FileNotFoundError(f"{ranks_path}: GPT-2 ranks file missing (it ships with the project)")
    try:
        ranks = load_tiktoken_bpe(ranks_path, expected_hash=RANKS_SHA256)
    except ValueError as e:
        raise ValueError(f"{ranks_path}: not the GPT-2 ranks file, expected sha256 {RANKS_SHA256} ({e})")
    return tiktoken.Encoding(name=ENCODING_NAME, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={'<|endoftext|>': EOT_TOKEN}, explicit_n_vocab=N_VOCAB)


def tokenizer_facts():
    """What a .bin or checkpoint was made with; compared before they are used together."""
    return {'encoding': ENCODING_NAME, 'ranks_sha256': RANKS_SHA256, 'eot_token': EOT_TOKEN,
            'pad_token': PAD_TOKEN, 'a_token': A_TOKEN, 'n_vocab': N_VOCAB}


# ----------------------------------------------------------------------------- articles

# markup and the empty brackets the encyclopedia dump leaves where links and templates were removed
_LEFTOVERS = re.compile(r'<[^>]{0,50}>|（[;；,，、\s]*）|\([;；,，、\s]*\)|《\s*》|【|】')


def clean_article(text):
    """The seed's cleaning: drop a leading title (text before the first blank line), newlines and leftovers."""
    text = text.strip()
    head, sep, rest = text.partition('\n\n')
    if sep and rest.strip() and '。' not in head:
        text = rest
    text = re.sub(r'\s*\n\s*', '', text)
    return _LEFTOVERS.sub('', text).strip()


def find_jsonl(input_dir):
    """Every *.jsonl below input_dir, in a stable order (so article ids and splits are reproducible)."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"{input_dir}: no such folder")
    return sorted(glob.glob(os.path.join(input_dir, '**', '*.jsonl'), recursive=True))


def jsonl_objects(path):
    """
    Yields (line_no, record, problem) for each non-blank line of a JSONL file, streaming: record is the
    line's JSON object, or None and problem = (reason, detail) with reason 'non_utf8' or 'malformed'.
    Each caller decides whether a problem is skipped, counted or fatal, and checks its own fields.
    """
    with open(path, 'rb') as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode('utf-8'))
            except UnicodeDecodeError as e:
                yield line_no, None, ('non_utf8', f'not UTF-8 ({e.reason} at byte {e.start})')
            except json.JSONDecodeError as e:
                yield line_no, None, ('malformed', f'not JSON ({e.msg}, column {e.colno})')
            else:
                if isinstance(record, dict):
                    yield line_no, record, None
                else:
                    yield line_no, None, ('malformed', 'expected a JSON object')


def iter_articles(input_dir, skipped=None, strict=False):
    """
    Yields (article_id, path, line_no, raw_text) for every {"text": ...} line below input_dir, streaming.
    article_id counts the good records in file order; it is the id sft_generate.py writes.
    A bad line is reported as path:line on stderr and counted in `skipped` by reason
    ('malformed', 'non_utf8'); strict=True makes it a ValueError instead.
    """
    article_id = 0
    for path in find_jsonl(input_dir):
        for line_no, record, problem in jsonl_objects(path):
            if record is not None and not isinstance(record.get('text'), str):
                problem = ('malformed', 'no "text" string field')
            if problem:
                reason, detail = problem
                message = f"{path}:{line_no}: {detail}"
                if strict:
                    raise ValueError(message)
                print(f"skipped {message}", file=sys.stderr)
                if skipped is not None:
                    skipped[reason] = skipped.get(reason, 0) + 1
                continue
            yield article_id, path, line_no, record['text']
            article_id += 1


# ----------------------------------------------------------------------------- prepared rows

def read_meta(data_dir):
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: run data/prepare.py (or data/prepare_sft.py) first")
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def load_rows(data_dir, split, block_size=None, kind=None):
    """Rows of a prepared split as a read-only memmap of shape (n_rows, block_size), checked against meta.json."""
    meta = read_meta(data_dir)
    if block_size is not None and meta['block_size'] != block_size:
        raise ValueError(f"{data_dir}/meta.json has block_size={meta['block_size']} but the config asks "
                         f"for block_size={block_size}; prepare again or set --block_size={meta['block_size']}")
    if kind is not None and meta['kind'] != kind:
        raise ValueError(f"{data_dir} holds {meta['kind']} rows, expected {kind} rows")
    if meta.get('ranks_sha256', RANKS_SHA256) != RANKS_SHA256:
        raise ValueError(f"{data_dir} was tokenized with another ranks file ({meta['ranks_sha256']})")
    block_size = meta['block_size']
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing")
    row_bytes = block_size * np.dtype(np.uint16).itemsize
    size = os.path.getsize(path)
    if size % row_bytes:
        raise ValueError(f"{path} is {size} bytes, not a multiple of one row ({block_size} tokens = "
                         f"{row_bytes} bytes): truncated or prepared with another block_size")
    expected = meta.get('rows', {}).get(split)
    if expected is not None and expected != size // row_bytes:
        raise ValueError(f"{path} has {size // row_bytes} rows but meta.json says {expected}")
    if size == 0:
        raise ValueError(f"{path} has no rows")
    return np.memmap(path, dtype=np.uint16, mode='r', shape=(size // row_bytes, block_size))


def finish_prepared(out_dir, meta, splits=('train', 'val')):
    """
    The last step of a prepare run: out_dir/{split}.bin.tmp are written; this writes meta.json.tmp, syncs
    them all, and renames them into place. The old meta.json goes first and the new one comes last, so in
    between a reader finds no meta and refuses: a killed run never leaves .bin files a reader accepts.
    """
    names = [f'{split}.bin' for split in splits] + ['meta.json']
    with open(os.path.join(out_dir, 'meta.json.tmp'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, ensure_ascii=False, indent=2)
        f.write('\n')
    for name in names:
        with open(os.path.join(out_dir, name + '.tmp'), 'rb') as f:
            os.fsync(f.fileno())
    if os.path.exists(os.path.join(out_dir, 'meta.json')):
        os.remove(os.path.join(out_dir, 'meta.json'))
    for name in names:
        os.replace(os.path.join(out_dir, name + '.tmp'), os.path.join(out_dir, name))


def pretrain_mask(y):
    """1 on real text targets; 0 on the EOT target and everything after it (the PAD tail)."""
    import torch
    return (torch.cumsum((y == EOT_TOKEN).int(), dim=-1) == 0).float()


def sft_mask(y):
    """
    1 on answer-token targets and on the first EOT target, so the model learns to stop;
    0 on the question, on the A_TOKEN target and after the first EOT. The seed masked from each EOT
    inclusive, so its models never learned to end an answer.
    """
    import torch
    seen_a = torch.cumsum((y == A_TOKEN).int(), dim=-1)
    after_a = (seen_a > 0) & ~((y == A_TOKEN) & (seen_a == 1))
    eots = (y == EOT_TOKEN).int()
    up_to_first_eot = (torch.cumsum(eots, dim=-1) - eots) == 0
    return (after_a & up_to_first_eot).float()


class RowOrder:
    """
    Walks every row once per epoch in a shuffled order; under DDP each rank walks its own slice.
    The state is three ints, so a checkpoint can resume mid-epoch.
    """
    def __init__(self, n_rows, seed=1337, rank=0, world_size=1):
        self.n_rows, self.seed, self.rank, self.world_size = n_rows, seed, rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = None

    def _order(self):
        if self._perm is None:
            perm = np.random.default_rng(self.seed + self.epoch).permutation(self.n_rows)
            self._perm = perm[self.rank::self.world_size]
        return self._perm

    def take(self, n):
        out = []
        while len(out) < n:
            order = self._order()
            if self.pos >= len(order):
                self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
                continue
            chunk = order[self.pos:self.pos + n - len(out)]
            self.pos += len(chunk)
            out.extend(chunk.tolist())
        return out

    def state_dict(self):
        return {'seed': self.seed, 'epoch': self.epoch, 'pos': self.pos}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.pos, self._perm = state['seed'], state['epoch'], state['pos'], None


def _init_data(data_dir, block_size, kind):
    return {'meta': read_meta(data_dir),
            'train': load_rows(data_dir, 'train', block_size, kind),
            'val': load_rows(data_dir, 'val', block_size, kind)}


def _get_batch(data, split, batch_size, device, mask_fn, order=None, generator=None):
    import torch
    rows = data[split]
    if order is not None:
        index = order.take(batch_size)
    else:
        index = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
    batch = torch.from_numpy(rows[np.asarray(index)].astype(np.int64))
    x, y = batch[:, :-1], batch[:, 1:]
    mask = mask_fn(y)
    if torch.device(device).type == 'cuda':
        return (x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True),
                mask.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device), mask.to(device)


def init_data_pretrain(data_dir, block_size=None):
    return _init_data(data_dir, block_size, 'pretrain')


def get_batch_pretrain(data, split, batch_size, device='cpu', order=None, generator=None):
    """x = row[:-1], y = row[1:], mask = pretrain_mask(y); random rows, or the next ones of `order`."""
    return _get_batch(data, split, batch_size, device, pretrain_mask, order, generator)


def init_data_sft(data_dir, block_size=None):
    return _init_data(data_dir, block_size, 'sft')


def get_batch_sft(data, split, batch_size, device='cpu', order=None, generator=None):
    """As get_batch_pretrain, with the SFT mask (answers and their first EOT only)."""
    return _get_batch(data, split, batch_size, device, sft_mask, order, generator)

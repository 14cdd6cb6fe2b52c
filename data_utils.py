"""
What every stage shares about prepared data: the .bin rows and meta.json (README: Formats), how they are
written and read, the loss masks and the batches. Reading the corpus is corpus.py's; token ids, tokenizer.py's.

    from data_utils import init_data, get_batch, write_prepared
"""
import contextlib
import json
import os

import numpy as np


# ----------------------------------------------------------------------------- prepared rows

def read_meta(data_dir):
    """data_dir/meta.json, checked for the fields every reader relies on: a ValueError names the file and field."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: run data/prepare.py (or data/prepare_sft.py) first")
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); prepare the data again")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not JSON ({e.msg}, column {e.colno}); prepare the data again")
    problem = meta_problem(meta)
    if problem:
        raise ValueError(f"{path}: {problem}; prepare the data again")
    return meta


def meta_problem(meta):
    """What makes a meta.json unusable, or None."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    if meta.get('kind') not in ('pretrain', 'sft'):
        return f"kind={meta.get('kind')!r}, expected 'pretrain' or 'sft'"
    if type(meta.get('block_size')) is not int or meta['block_size'] < 2:
        return f"block_size={meta.get('block_size')!r}, expected a whole number of at least 2"
    if meta.get('dtype', 'uint16') != 'uint16':
        return f"dtype={meta['dtype']!r}, expected 'uint16'"
    rows = meta.get('rows', {})
    if not isinstance(rows, dict) or not all(type(n) is int and n >= 0 for n in rows.values()):
        return f"rows={rows!r}, expected counts per split such as {{\"train\": 100, \"val\": 1}}"
    if 'tokenizer' not in meta and 'encoding' not in meta:
        return "no tokenizer field: which tokenizer made these ids is unknown"
    if 'tokenizer' in meta and not isinstance(meta['tokenizer'], dict):
        return f"tokenizer={meta['tokenizer']!r}, expected the tokenizer's facts as an object"
    return None


def load_rows(data_dir, split, block_size=None, kind=None):
    """Rows of a prepared split as a read-only memmap of shape (n_rows, block_size), checked against meta.json."""
    meta = read_meta(data_dir)
    if block_size is not None and meta['block_size'] != block_size:
        raise ValueError(f"{data_dir}/meta.json has block_size={meta['block_size']} but the config asks "
                         f"for block_size={block_size}; prepare again or set --block_size={meta['block_size']}")
    if kind is not None and meta['kind'] != kind:
        raise ValueError(f"{data_dir} holds {meta['kind']} rows, expected {kind} rows")
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
    rows = np.memmap(path, dtype=np.uint16, mode='r', shape=(size // row_bytes, block_size))
    pad = (meta.get('tokenizer') or {}).get('pad_token')  # the facts prepare wrote; older metas: GPT-2's, rebuilt
    check_ids(rows, path, pad if type(pad) is int else data_tokenizer(meta, data_dir).pad)
    return rows


def check_ids(rows, path, pad):
    """
    Stops on an id above PAD, the largest a prepared row holds: past the model's rows it would crash training
    (on a GPU as an unreadable device-side assert), below them train on an id no text maps to. One pass over the
    file, in slices, at disk speed (0.4 GB cached: 0.03 s), once per run, against a crash hours in.
    """
    step = max(1, (1 << 24) // rows.shape[1])  # 32 MB of ids per slice
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        if chunk.max() > pad:
            row, col = np.argwhere(chunk > pad)[0]
            raise ValueError(f"{path}: row {start + row}, position {col} holds token id {chunk[row, col]}, above the "
                             f"largest id {pad} (PAD) of the tokenizer in meta.json: the file is corrupt or was made "
                             f"with another tokenizer; prepare the data again")


def write_prepared(out_dir, write_rows, splits=('train', 'val')):
    """
    Writes a prepared dataset into out_dir and returns its meta dict. write_rows(files) writes each split's rows
    into files[split] (open 'w+b', under a temporary name) and returns the meta dict. Then meta.json.tmp is
    written, all are synced and renamed into place: the old meta.json goes first and the new one comes last, so
    in between a reader finds no meta.json and refuses; a failed or killed run never leaves .bin files a reader
    accepts, and no temporary file is left behind (a stale one from a killed run is overwritten, never read).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out_dir={out_dir}: a file is in the way; the rows and meta.json go into a folder")
    os.makedirs(out_dir, exist_ok=True)
    names = [f'{split}.bin' for split in splits] + ['meta.json']  # meta.json last
    tmp = {name: os.path.join(out_dir, name + '.tmp') for name in names}
    try:
        with contextlib.ExitStack() as stack:
            files = {split: stack.enter_context(open(tmp[f'{split}.bin'], 'w+b')) for split in splits}
            meta = write_rows(files)
            for f in files.values():
                f.flush()
                os.fsync(f.fileno())
        with open(tmp['meta.json'], 'w', encoding='utf-8', newline='\n') as f:  # the same bytes on Windows
            json.dump(meta, f, ensure_ascii=False, indent=2)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(os.path.join(out_dir, 'meta.json')):
            os.remove(os.path.join(out_dir, 'meta.json'))
        for name in names:
            os.replace(tmp[name], os.path.join(out_dir, name))
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)
    return meta


def tokenizer_record(tok, data_dir):
    """
    What meta.json says of the tokenizer: its facts, and a trained one's folder relative to data_dir, so that
    moving the project (or the data and tokenizer folders together) keeps the data readable.
    """
    path = tok.path
    if path is not None:
        try:
            path = os.path.relpath(path, data_dir).replace(os.sep, '/')
        except ValueError:  # Windows: another drive has no relative path
            pass
    return dict(tok.facts(), path=path)


def data_tokenizer(meta, data_dir):
    """The tokenizer a dataset was made with, from its meta.json (and, for a trained one, the folder it names)."""
    facts = meta.get('tokenizer') or {k: meta[k] for k in ('encoding', 'ranks_sha256') if k in meta}  # older metas
    if isinstance(facts.get('path'), str) and not os.path.isabs(facts['path']):  # relative to the data (or absolute)
        facts = dict(facts, path=os.path.normpath(os.path.join(data_dir, facts['path'])))
    from checkpoint import load_tokenizer  # the facts' path may name the checkpoint SFT rows were made for
    try:
        return load_tokenizer(facts)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{data_dir}/meta.json: {e}")


def pretrain_mask(y, eot):
    """1 on real text targets; 0 on the EOT target and everything after it (the PAD tail)."""
    import torch
    return (torch.cumsum((y == eot).int(), dim=-1) == 0).float()


def sft_mask(y, a_token, eot):
    """
    1 on answer-token targets and on the first EOT target, so the model learns to stop;
    0 on the question, on the A_TOKEN target and after the first EOT. The first EOT is learned, or a model
    never learns to end an answer.
    """
    import torch
    seen_a = torch.cumsum((y == a_token).int(), dim=-1)
    after_a = (seen_a > 0) & ~((y == a_token) & (seen_a == 1))
    eots = (y == eot).int()
    up_to_first_eot = (torch.cumsum(eots, dim=-1) - eots) == 0
    return (after_a & up_to_first_eot).float()


class RowOrder:
    """
    Walks every row once per epoch in a shuffled order; under DDP each rank walks its own slice.
    With `lengths` (tokens per row), batches are made of rows of similar length: get_batch then cuts off
    most of the PAD, which on a CPU is a quarter of a step's time. The order stays a function of the seed,
    the epoch and the rank, so the state is still three ints and a checkpoint can resume mid-epoch.
    """
    BUCKET_BATCHES = 64  # rows are sorted by length within windows of this many batches, then batches shuffled

    def __init__(self, n_rows, seed=1337, rank=0, world_size=1, lengths=None, batch_size=1):
        self.n_rows, self.seed, self.rank, self.world_size = n_rows, seed, rank, world_size
        self.lengths, self.batch_size = lengths, batch_size
        self.epoch, self.pos = 0, 0
        self._perm = None

    def _order(self):
        if self._perm is None:
            rng = np.random.default_rng(self.seed + self.epoch)
            perm = rng.permutation(self.n_rows)[self.rank::self.world_size]
            if self.lengths is not None and self.batch_size > 1:
                window = self.BUCKET_BATCHES * self.batch_size
                batches = []
                for start in range(0, len(perm), window):
                    part = perm[start:start + window]
                    part = part[np.argsort(self.lengths[part], kind='stable')]
                    batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
                perm = np.concatenate([batches[i] for i in rng.permutation(len(batches))])
            self._perm = perm
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


def row_lengths(rows, pad):
    """Tokens before the PAD tail of each row, read in slices so a large memmap is never loaded whole."""
    step = max(1, 2 ** 24 // rows.shape[1])
    return np.concatenate([(rows[i:i + step] != pad).sum(axis=1) for i in range(0, len(rows), step)])


def mask_fn(kind, tok):
    """The loss mask of a kind of rows, for this tokenizer's ids."""
    if kind == 'sft':
        return lambda y: sft_mask(y, tok.a_token, tok.eot)
    return lambda y: pretrain_mask(y, tok.eot)


def init_data(data_dir, block_size=None, kind=None):
    """meta, tokenizer, loss mask and the train/val rows of a prepared dataset (kind, if given, is checked)."""
    meta = read_meta(data_dir)
    tok = data_tokenizer(meta, data_dir)
    return {'meta': meta, 'tokenizer': tok, 'mask_fn': mask_fn(meta['kind'], tok),
            'train': load_rows(data_dir, 'train', block_size, kind),
            'val': load_rows(data_dir, 'val', block_size, kind)}


TRIM_MULTIPLE = 32  # batches are cut to the longest row's width, rounded up to this


def get_batch(data, split, batch_size, device='cpu', order=None, generator=None):
    """
    x = row[:-1], y = row[1:], mask = the rows' loss mask of y; random rows, or the next ones of `order`.
    Columns past the batch's last masked-in target are cut off (see below): widths vary from batch to batch.
    """
    import torch
    rows = data[split]
    if order is not None:
        index = order.take(batch_size)
    else:
        index = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
    batch = torch.from_numpy(rows[np.asarray(index)].astype(np.int64))
    x, y = batch[:, :-1], batch[:, 1:]
    mask = data['mask_fn'](y)
    # Rows end in PAD, which the mask leaves out. The model is causal, so dropping the columns after the last
    # masked-in target changes no logit and no loss, and the work shrinks to what the rows hold: a pretrain row
    # is half PAD, an SFT row mostly PAD. Widths are rounded up to TRIM_MULTIPLE so a compiled model sees few shapes.
    used = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else 1
    width = min(x.size(1), -(-used // TRIM_MULTIPLE) * TRIM_MULTIPLE)
    x, y, mask = x[:, :width], y[:, :width], mask[:, :width]
    if torch.device(device).type == 'cuda':
        return (x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True),
                mask.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device), mask.to(device)


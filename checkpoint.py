"""
The checkpoint, out_dir/ckpt.pt: the one module that reads and writes it, above both the network (model.py) and
the tokenizer (tokenizer.py), which know nothing of each other.

    from checkpoint import load_checkpoint, save_checkpoint
    model, tok, checkpoint = load_checkpoint('out/sft', 'cpu')   # the network, the tokenizer it was trained with
    save_checkpoint('out/sft', checkpoint)                      # through a temporary file and a rename

What a ckpt.pt holds is in the README's Formats section. read_checkpoint() opens one (clear errors for an empty,
truncated or foreign file) and passes it through migrate(), the one place older layouts are brought up to date.
load_tokenizer() is tokenizer.get_tokenizer() that also accepts a checkpoint (its folder, its ckpt.pt, or a
dataset's facts whose path names one), for the scripts that prepare data for a model to fine-tune.
"""
import os
import pickle

import torch

from model import GPT, GPTConfig
from tokenizer import get_tokenizer, same_tokenizer

FILE = 'ckpt.pt'


def checkpoint_path(path):
    """out_dir/ckpt.pt for a folder; a file path as it is."""
    return os.path.join(path, FILE) if os.path.isdir(path) else path


def is_checkpoint(path):
    path = checkpoint_path(str(path))
    return os.path.isfile(path) and path.endswith('.pt')


def migrate(checkpoint):
    """
    A checkpoint dict in today's layout. Checkpoints written before trained tokenizers named theirs with
    'encoding' (always GPT-2's) or not at all; both become today's facts {'kind': 'gpt2', ...}.
    """
    facts = dict(checkpoint.get('tokenizer') or {'kind': 'gpt2'})
    if 'kind' not in facts and 'encoding' in facts:
        facts['kind'] = facts.pop('encoding')
    checkpoint['tokenizer'] = facts
    return checkpoint


def read_checkpoint(path, mmap=False):
    """
    The dict in path/ckpt.pt (or the file path), loaded with weights_only=True onto the CPU (mmap=True: its
    tensors are read only when touched), migrated. A missing file is a FileNotFoundError; an empty, truncated,
    corrupt or foreign one a ValueError naming the file and what is wrong with it, so every caller can say so in
    one line.
    """
    path = checkpoint_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint (train one with train.py, or check --out_dir)")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a checkpoint; train again or restore a copy")
    try:  # onto the CPU first: a checkpoint saved on a GPU must load on a machine without one
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # what weights_only=True refuses, among torch's generic advice
        detail = [line.strip() for line in str(e).splitlines() if line.strip()
                  and not line.startswith(('Weights only load failed', 'Please file an issue', 'Check the documentation'))]
        raise ValueError(f"{path}: refused, it holds more than tensors and plain values ({' '.join(detail)[:200]})")
    except Exception as e:  # RuntimeError, KeyError, EOFError...: torch says "truncated or corrupt" many ways
        first = (str(e).strip().splitlines() or [''])[0]
        raise ValueError(f"{path}: not a readable checkpoint, truncated or corrupt ({type(e).__name__}: {first[:120]})")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('model_args'), dict) \
            or not isinstance(checkpoint.get('model'), dict):
        raise ValueError(f"{path}: not a checkpoint of train.py (no 'model_args' and 'model' dicts in it)")
    return migrate(checkpoint)


def load_tokenizer(source='gpt2'):
    """get_tokenizer(source), where source may also be a checkpoint, or facts whose path is a checkpoint."""
    if isinstance(source, dict):
        path = source.get('path')
        if 'ranks' not in source and path and is_checkpoint(path):
            tok = load_tokenizer(path)
            same_tokenizer(source, tok.facts(), f"tokenizer {source.get('name')!r}", path)
            return tok
        return get_tokenizer(source)
    if is_checkpoint(source):
        facts = read_checkpoint(source, mmap=True)['tokenizer']
        try:  # a trained tokenizer's ranks travel inside the checkpoint; its path then names the checkpoint
            return get_tokenizer(dict(facts, path=os.path.abspath(source)) if 'ranks' in facts else facts)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{checkpoint_path(source)}: its tokenizer: {e}")
    return get_tokenizer(source)


def load_checkpoint(path, device='cpu'):
    """
    (model in eval mode on device, its tokenizer, the checkpoint dict) from path/ckpt.pt. The tokenizer is rebuilt
    from the checkpoint alone. Errors as read_checkpoint's: FileNotFoundError, or a ValueError naming the file.
    """
    path = checkpoint_path(path)
    checkpoint = read_checkpoint(path)
    try:
        config = GPTConfig(**checkpoint['model_args'])
        tok = get_tokenizer(checkpoint['tokenizer'])
    except (TypeError, ValueError, KeyError, FileNotFoundError) as e:
        raise ValueError(f"{path}: {e}")
    if config.vocab_size < tok.n_vocab:
        raise ValueError(f"{path}: the model has {config.vocab_size} token rows, fewer than "
                         f"the {tok.n_vocab} ids of its {tok.describe()}")
    try:
        model = GPT(config)
        model.load_state_dict(checkpoint['model'])
    except (RuntimeError, AssertionError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its weights do not fit its model_args {checkpoint['model_args']} ({str(e)[:300]})")
    return model.to(device).eval(), tok, checkpoint


def save_checkpoint(out_dir, checkpoint):
    """Writes out_dir/ckpt.pt through a temporary file and a rename, so a kill never leaves half a checkpoint."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, FILE)
    tmp = path + f'.tmp{os.getpid()}'
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: the old ckpt.pt stays, the half-written copy goes
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path

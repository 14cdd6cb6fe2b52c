"""
Everything about token ids: which tokenizer a dataset or a checkpoint speaks, and its special ids.

    from tokenizer import get_tokenizer
    tok = get_tokenizer('gpt2')                 # GPT-2's byte-level BPE, from the ranks file the project ships
    tok = get_tokenizer('data/tokenizer')       # a byte-level BPE trained by data/train_tokenizer.py
    tok = get_tokenizer(meta['tokenizer'])      # the one a dataset's meta.json (or a checkpoint dict) names
    ids = tok.encode('北京是中国的首都。') + [tok.eot]

Two kinds, both run by tiktoken:
- gpt2: GPT-2's ranks (data/gpt2.tiktoken, from the openai-whisper==20250625 sdist; tiktoken.get_encoding('gpt2')
  would download them and fails offline). eot = 50256 ('<|endoftext|>'); the answer separator is GPT-2's own
  token '##' (2235), which the seed used; pad = 50257.
- trained: M mergeable ranks trained by rustbpe on the user's corpus, then the specials '<|endoftext|>' = M
  (eot) and '<|answer|>' = M+1 (a_token); n_vocab = M+2, pad = M+2. Users still end a question with '##'
  (engine.encode_prompt turns it into a_token), and ordinary text can never encode to a special.
For both: pad is the first id past the tokenizer, so encoding text never produces it; the model has
n_vocab + 1 rows rounded up to a multiple of 64 (vocab_size); a sampler only ever emits ids < n_vocab.

A tokenizer folder holds tokenizer.tiktoken (tiktoken's own format: one 'base64(token) rank' line per
token) and tokenizer.json (name, split pattern, specials and their ids, n_vocab, the ranks' sha256,
and train_tokenizer.py's compression report). A tokenizer's facts (kind, name, sha256, ids, n_vocab)
travel in meta.json and ckpt.pt; a trained one's ranks travel inside ckpt.pt too, so a checkpoint alone
can be served anywhere. Where two artifacts meet, same_tokenizer() stops a mismatch with both names.
"""
import base64
import functools
import hashlib
import json
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
GPT2_RANKS_PATH = os.path.join(ROOT, 'data', 'gpt2.tiktoken')
GPT2_RANKS_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'
# GPT-2's pre-tokenizer split (tiktoken's r50k_base). Trained tokenizers use it too: llama.cpp ('gpt-2') and
# Hugging Face know it, and a 。 followed by a letter ends a chunk, which prepare.py's sentence cut relies on.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PATTERNS = {'gpt2': GPT2_PATTERN}  # split patterns by the name other runtimes know them by
EOT_TEXT, ANSWER_TEXT = '<|endoftext|>', '<|answer|>'
RANKS_FILE, CONFIG_FILE = 'tokenizer.tiktoken', 'tokenizer.json'
FACT_KEYS = ('kind', 'name', 'ranks_sha256', 'eot_token', 'a_token', 'pad_token', 'n_vocab')


class Tokenizer:
    """A tiktoken Encoding with the ids every stage needs: eot, a_token (the answer separator), pad, n_vocab."""

    def __init__(self, kind, name, ranks, ranks_sha256, pattern_name, a_token=None, path=None):
        import tiktoken
        self.kind, self.name, self.ranks_sha256, self.pattern_name, self.path = kind, name, ranks_sha256, pattern_name, path
        self.ranks = ranks  # bytes -> rank, kept for export and for the checkpoint
        m = len(ranks)
        self.eot = m  # <|endoftext|> follows the ranks, in GPT-2 (50256) as in a trained tokenizer
        self.a_token = m + 1 if kind == 'trained' else a_token
        specials = {EOT_TEXT: self.eot, **({ANSWER_TEXT: self.a_token} if kind == 'trained' else {})}
        self.n_vocab = max([m - 1, *specials.values()]) + 1
        self.pad = self.n_vocab
        self.enc = tiktoken.Encoding(name=name, pat_str=PATTERNS[pattern_name], mergeable_ranks=ranks,
                                     special_tokens=specials, explicit_n_vocab=self.n_vocab)
        self.special_tokens = specials

    @property
    def vocab_size(self):
        """Rows of the model's embedding: every id and PAD, rounded up to a multiple of 64 for speed."""
        return (self.n_vocab + 1 + 63) // 64 * 64

    def encode(self, text):
        """Ids of ordinary text: special-token strings in it are plain text, never specials."""
        return self.enc.encode_ordinary(text)

    def token_bytes(self, i):
        return self.enc.decode_single_token_bytes(i)

    def decode(self, ids):
        """Text of ids < n_vocab; bytes that do not form whole UTF-8 characters are dropped."""
        return self.enc.decode_bytes(list(ids)).decode('utf-8', errors='ignore')

    def facts(self):
        """What a .bin or checkpoint records about the tokenizer it was made with."""
        return {'kind': self.kind, 'name': self.name, 'ranks_sha256': self.ranks_sha256, 'eot_token': self.eot,
                'a_token': self.a_token, 'pad_token': self.pad, 'n_vocab': self.n_vocab, 'pattern': self.pattern_name}

    def for_checkpoint(self):
        """The facts, and a trained tokenizer's ranks as text, so that ckpt.pt alone rebuilds it."""
        return dict(self.facts(), **({'ranks': ranks_text(self.ranks)} if self.kind == 'trained' else {}))

    def describe(self):
        return f"{self.kind} tokenizer {self.name!r} (sha256 {self.ranks_sha256[:12]}…, {self.n_vocab} ids)"


def ranks_text(ranks):
    """tiktoken's file format: 'base64(token) rank' per line, by rank."""
    return ''.join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


def parse_ranks(text, where):
    ranks = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise ValueError(f"{where}:{line_no}: not a 'base64(token) rank' line ({e})")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{where}: ranks are not 0..{len(ranks) - 1}, each once")
    return ranks


def sha256_text(text):
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


@functools.lru_cache(maxsize=None)
def gpt2(ranks_path=GPT2_RANKS_PATH):
    """GPT-2's encoding from the shipped ranks file; a file with another hash is refused."""
    if not os.path.exists(ranks_path):
        raise FileNotFoundError(f"{ranks_path}: GPT-2 ranks file missing (it ships with the project)")
    with open(ranks_path, encoding='utf-8') as f:
        text = f.read()
    if sha256_text(text) != GPT2_RANKS_SHA256:
        raise ValueError(f"{ranks_path}: not the GPT-2 ranks file, expected sha256 {GPT2_RANKS_SHA256}, "
                         f"got {sha256_text(text)}")
    return Tokenizer('gpt2', 'gpt2', parse_ranks(text, ranks_path), GPT2_RANKS_SHA256, 'gpt2', a_token=2235)


@functools.lru_cache(maxsize=16)
def _trained(name, text, sha256, pattern_name, where, path):
    if sha256_text(text) != sha256:
        raise ValueError(f"{where}: ranks have sha256 {sha256_text(text)}, but the tokenizer says {sha256}: "
                         f"the ranks file was changed or belongs to another tokenizer")
    if pattern_name not in PATTERNS:
        raise ValueError(f"{where}: unknown split pattern {pattern_name!r}; known: {', '.join(PATTERNS)}")
    return Tokenizer('trained', name, parse_ranks(text, where), sha256, pattern_name, path=path)


def load_folder(folder):
    """A trained tokenizer from its folder (tokenizer.json + tokenizer.tiktoken), checked against its sha256."""
    config_path, ranks_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, RANKS_FILE)
    for path in (config_path, ranks_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing: train a tokenizer with data/train_tokenizer.py "
                                    f"--out_dir={folder}, or use --tokenizer=gpt2")
    try:
        with open(config_path, encoding='utf-8') as f:
            config = json.load(f)
        with open(ranks_path, encoding='utf-8') as f:
            text = f.read()
        tok = _trained(config['name'], text, config['ranks_sha256'], config.get('pattern', 'gpt2'), ranks_path,
                       os.path.abspath(folder))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: not a tokenizer folder ({type(e).__name__}: {e})")
    if (config.get('eot_token'), config.get('a_token'), config.get('n_vocab')) != (tok.eot, tok.a_token, tok.n_vocab):
        raise ValueError(f"{config_path}: ids eot={config.get('eot_token')} a_token={config.get('a_token')} "
                         f"n_vocab={config.get('n_vocab')} do not match its ranks ({tok.eot}, {tok.a_token}, {tok.n_vocab})")
    return tok


def get_tokenizer(source='gpt2'):
    """
    The tokenizer named by source: 'gpt2'; a tokenizer folder; or the facts dict of a meta.json / checkpoint (a
    trained one is rebuilt from the ranks inside a checkpoint, else from its path). A checkpoint's own tokenizer:
    checkpoint.load_checkpoint, or checkpoint.load_tokenizer for a checkpoint folder.
    """
    if isinstance(source, dict):
        kind = source.get('kind') or source.get('encoding')  # 'encoding': checkpoints from before trained tokenizers
        if kind == 'gpt2':
            tok = gpt2()
            if source.get('ranks_sha256', tok.ranks_sha256) != tok.ranks_sha256:
                raise ValueError(f"made with GPT-2 ranks of sha256 {source['ranks_sha256']}, this project ships {tok.ranks_sha256}")
            return tok
        if kind != 'trained':
            raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'gpt2' or 'trained')")
        if 'ranks' in source:
            return _trained(source['name'], source['ranks'], source['ranks_sha256'], source.get('pattern', 'gpt2'),
                            f"the checkpoint's tokenizer {source['name']!r}", source.get('path'))
        if not source.get('path'):
            raise ValueError(f"trained tokenizer {source.get('name')!r}: neither its ranks nor the path of its files")
        tok = get_tokenizer(source['path'])
        same_tokenizer(source, tok.facts(), f"tokenizer {source.get('name')!r}", source['path'])
        return tok
    source = str(source)
    if source == 'gpt2':
        return gpt2()
    if os.path.isdir(source) and os.path.exists(os.path.join(source, CONFIG_FILE)):
        return load_folder(source)
    raise FileNotFoundError(f"tokenizer {source!r}: not 'gpt2', a tokenizer folder (with {CONFIG_FILE}) or a "
                            f"checkpoint; train one with: python data/train_tokenizer.py --out_dir={source}")


def same_tokenizer(a, b, a_name, b_name):
    """Stops (ValueError) when two artifacts' tokenizer facts differ, naming both tokenizers."""
    def kind(f):
        return f.get('kind') or f.get('encoding')
    diff = [k for k in FACT_KEYS[2:] if a.get(k) != b.get(k)] + (['kind'] if kind(a) != kind(b) else [])
    if diff:
        def show(f):
            return f"{kind(f)} {f.get('name', kind(f))!r} (sha256 {str(f.get('ranks_sha256'))[:12]}…, n_vocab {f.get('n_vocab')})"
        raise ValueError(f"tokenizer mismatch: {a_name} was made with {show(a)}, {b_name} with {show(b)} "
                         f"(differ in {', '.join(diff)}); use the same tokenizer for both")

"""
Trains a byte-level BPE tokenizer on a folder of pretraining JSONL ({"text": ...} per line), for Chinese far
better than GPT-2's (which splits most characters into 2-3 tokens). rustbpe trains, tiktoken runs it.

    python data/fetch_sample.py                                                   # the sample corpus
    python data/train_tokenizer.py --input_dir=data/people_daily --out_dir=data/tokenizer          # ~10 s
    python data/train_tokenizer.py --input_dir=/path/to/wiki_zh --vocab_size=16384 --max_chars=2000000000
    python data/prepare.py --tokenizer=data/tokenizer --input_dir=data/people_daily                 # then use it

Articles are read and cleaned exactly as prepare.py reads them, and only the train split is learned from
(prepare's split by a hash of the cleaned text), so the compression report below is measured on text the
tokenizer never saw. Writes <out_dir>/tokenizer.tiktoken (the ranks, tiktoken's format) and
<out_dir>/tokenizer.json (name, split pattern, specials and their ids, n_vocab, sha256 of the ranks, the
corpus it was trained on and the report); the same corpus and settings give byte-identical files.

--vocab_size counts every id, the two specials included: 8,192 gives 8,190 merged ranks, <|endoftext|> =
8190, <|answer|> = 8191, PAD = 8192, and a model embedding of 8,256 rows. How to choose it: the report
prints tokens per character; on the 1.8 M-character sample corpus 4,096 / 8,192 / 16,384 give about 0.76 /
0.66 / 0.60 tokens per character. A bigger vocabulary packs more text in a row, but every id needs enough
examples to be learned, and a CPU model pays for each row of its output layer (README: the comparison).
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from corpus import clean_article, find_jsonl, in_val, iter_articles  # noqa: E402
from tokenizer import (ANSWER_TEXT, CONFIG_FILE, EOT_TEXT, PATTERNS, RANKS_FILE, Tokenizer, get_tokenizer,  # noqa: E402
                       ranks_text, sha256_text)

# -----------------------------------------------------------------------------
input_dir = 'data/people_daily'  # folder walked recursively for *.jsonl, as prepare.py walks it
out_dir = 'data/tokenizer'  # tokenizer.tiktoken and tokenizer.json go here
vocab_size = 8192  # ids in all, the 2 specials included; at most 65,535 so ids and PAD fit uint16
pattern = 'gpt2'  # pre-tokenizer split, by the name llama.cpp / Hugging Face know it (see tokenizer.PATTERNS)
name = ''  # the tokenizer's name in meta.json and checkpoints; '' = <corpus folder>-<vocab_size>
max_chars = 1_000_000_000  # learn from at most this many characters (memory stays bounded on a huge corpus)
val_fraction = 0.01  # the same split as prepare.py: these articles are only measured, never learned from
block_size = 256  # the report gives characters per row at this size
# -----------------------------------------------------------------------------


def corpus(input_dir, val_fraction, max_chars, bar=None):
    """(train texts, cut short at max_chars, as a generator; val texts, a list) of cleaned articles."""
    val = []

    def train():
        seen = 0
        for _, _, _, raw in iter_articles(input_dir):
            text = clean_article(raw)
            if bar is not None:
                bar.update(1)
            if not text:
                continue
            if in_val(text, val_fraction):
                val.append(text)
                continue
            if seen + len(text) > max_chars:
                return
            seen += len(text)
            yield text
    return train(), val


def compression(tok, texts, block_size):
    """Tokens per character, bytes per token, characters a row holds, CJK characters that are one token."""
    chars = sum(len(t) for t in texts)
    n_bytes = sum(len(t.encode('utf-8')) for t in texts)
    tokens = sum(len(ids) for ids in tok.enc.encode_ordinary_batch(texts, num_threads=2))
    cjk = {c for t in texts for c in t if '\u4e00' <= c <= '\u9fff'}
    single = sum(1 for c in cjk if len(tok.encode(c)) == 1)
    return {'chars': chars, 'tokens': tokens, 'tokens_per_char': round(tokens / max(chars, 1), 4),
            'bytes_per_token': round(n_bytes / max(tokens, 1), 3),
            'chars_per_row': round((block_size - 1) * chars / max(tokens, 1), 1),
            'cjk_chars': len(cjk), 'cjk_single_token': single}


def train_tokenizer(input_dir, out_dir, vocab_size, pattern='gpt2', name='', max_chars=10 ** 9,
                    val_fraction=0.01, block_size=256):
    """Trains, writes the two files (both under temporary names, then renamed) and returns the tokenizer.json dict."""
    import rustbpe
    from tqdm import tqdm
    if not 258 <= vocab_size <= 65535:
        raise ValueError(f"--vocab_size={vocab_size}: needs 256 byte tokens + 2 specials at least, and at most "
                         f"65,535 ids so that ids and PAD fit in uint16")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out_dir={out_dir}: a file is in the way; the tokenizer's two files go into a folder")
    if pattern not in PATTERNS:
        raise ValueError(f"--pattern={pattern!r}: known patterns are {', '.join(PATTERNS)}")
    files = find_jsonl(input_dir)
    if not files:
        raise FileNotFoundError(f"{input_dir}: no *.jsonl files in it or below it")
    bpe = rustbpe.Tokenizer()
    with tqdm(desc='reading', unit=' articles', unit_scale=True) as bar:
        train_texts, val_texts = corpus(input_dir, val_fraction, max_chars, bar)
        counted = {'articles': 0, 'chars': 0}

        def counting(texts):
            for t in texts:
                counted['articles'] += 1
                counted['chars'] += len(t)
                yield t
        bpe.train_from_iterator(counting(train_texts), vocab_size=vocab_size - 2, pattern=PATTERNS[pattern])
    if counted['articles'] == 0:
        raise ValueError(f"{input_dir}: no text to learn from")
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    if len(ranks) < vocab_size - 2:
        print(f"note: the corpus gave only {len(ranks)} ranks (asked for {vocab_size - 2}); n_vocab is {len(ranks) + 2}")
    text = ranks_text(ranks)
    m = len(ranks)
    config = {'name': name or f"{os.path.basename(os.path.normpath(input_dir))}-{m + 2}", 'kind': 'trained',
              'pattern': pattern, 'pattern_regex': PATTERNS[pattern], 'ranks_file': RANKS_FILE,
              'ranks_sha256': sha256_text(text), 'special_tokens': {EOT_TEXT: m, ANSWER_TEXT: m + 1},
              'eot_token': m, 'a_token': m + 1, 'pad_token': m + 2, 'n_vocab': m + 2,
              'trained_on': {'input_dir': input_dir, 'files': [os.path.relpath(p, input_dir).replace(os.sep, '/') for p in files],
                             'articles': counted['articles'], 'chars': counted['chars'], 'max_chars': max_chars,
                             'val_fraction': val_fraction}}
    tok = Tokenizer('trained', config['name'], ranks, config['ranks_sha256'], pattern, path=os.path.abspath(out_dir))
    measured_on = val_texts or None
    if measured_on is None:
        print("note: no article fell in the val split; the report is measured on the training text")
        measured_on = list(corpus(input_dir, 0.0, max_chars)[0])
    config['compression'] = {'measured_on': 'val' if val_texts else 'train', 'block_size': block_size,
                             'gpt2': compression(get_tokenizer('gpt2'), measured_on, block_size),
                             'trained': compression(tok, measured_on, block_size)}
    config_text = json.dumps(config, ensure_ascii=False, indent=2) + '\n'
    write_pair(out_dir, {RANKS_FILE: text, CONFIG_FILE: config_text})
    return config


def write_pair(out_dir, files):
    """
    Writes {name: text} into out_dir as a pair: every file in full under a temporary name first, then the renames
    back to back. A failure or a kill while writing leaves the previous tokenizer whole, never new ranks beside
    the old tokenizer.json (a folder every reader refuses, its old ranks lost).
    """
    os.makedirs(out_dir, exist_ok=True)
    tmp = {name: os.path.join(out_dir, name + '.tmp') for name in files}
    try:
        for name, text in files.items():
            with open(tmp[name], 'w', encoding='utf-8', newline='\n') as f:  # the same bytes on Windows
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name in files:
            os.replace(tmp[name], os.path.join(out_dir, name))
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)


def main():
    t0 = time.time()
    try:
        config = train_tokenizer(input_dir, out_dir, vocab_size, pattern, name, max_chars, val_fraction, block_size)
    except (ValueError, OSError) as e:  # OSError: a full disk, a folder we may not write
        sys.exit(f"error: {e}")
    c = config['compression']
    g, t = c['gpt2'], c['trained']
    print(f"trained {config['name']!r} on {config['trained_on']['articles']:,} articles "
          f"({config['trained_on']['chars']:,} characters) in {time.time() - t0:.1f}s: n_vocab {config['n_vocab']}, "
          f"<|endoftext|> = {config['eot_token']}, <|answer|> = {config['a_token']}, PAD = {config['pad_token']}")
    print(f"compression on the {c['measured_on']} split ({t['chars']:,} characters):")
    print(f"  {'':24}{'GPT-2':>10}{'trained':>10}")
    for key, label in (('tokens_per_char', 'tokens per character'), ('bytes_per_token', 'bytes per token'),
                       ('chars_per_row', f"characters per {c['block_size']}-row"),
                       ('cjk_single_token', f"one-token CJK (of {t['cjk_chars']})")):
        print(f"  {label:24}{g[key]:>10}{t[key]:>10}")
    print(f"wrote {os.path.join(out_dir, RANKS_FILE)} and {os.path.join(out_dir, CONFIG_FILE)}")


if __name__ == '__main__':
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
    main()

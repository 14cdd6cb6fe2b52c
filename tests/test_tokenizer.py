"""tokenizer.py and data/train_tokenizer.py: exact ids, round trips, hashes, one loader only (README: Formats)."""
import ast
import json
import os
import shutil

import pytest

from conftest import A_TOKEN, EOT_TOKEN, GPT2, N_VOCAB, PAD_TOKEN, ROOT, run_script, train_test_tokenizer, write_jsonl
from tokenizer import (CONFIG_FILE, GPT2_RANKS_PATH, GPT2_RANKS_SHA256, RANKS_FILE, get_tokenizer, gpt2, ranks_text,
                       same_tokenizer, sha256_text)

MIXED = [
    '北京是中国的首都。北京有很多名胜古迹。',
    '他说：“今天很好。”（新华社记者 兰红光 摄）１９９８年',
    '混合 English 和中文，emoji 🐼🎉，全角ＡＢＣ１２３，标点……——《》【】',
    '第一行\n\n第二行\t制表符  两个空格 <|endoftext|> <|answer|> ##',
    'plain ASCII: GPT-2 (2019) & friends!',
]


def test_gpt2_exact_ids():
    enc = GPT2.enc
    assert (GPT2.eot, GPT2.a_token, GPT2.pad, GPT2.n_vocab, GPT2.vocab_size) == (50256, 2235, 50257, 50257, 50304)
    assert (EOT_TOKEN, A_TOKEN, PAD_TOKEN, N_VOCAB) == (GPT2.eot, GPT2.a_token, GPT2.pad, GPT2.n_vocab)
    assert enc.n_vocab == 50257
    assert enc.encode('<|endoftext|>', allowed_special={'<|endoftext|>'}) == [50256]
    assert GPT2.encode('##') == [2235]
    assert GPT2.encode('。') == [16764]
    assert GPT2.encode('hello world') == [31373, 995]
    assert GPT2.encode('北京') == [44293, 245, 12859, 105]
    assert 50256 not in GPT2.encode('<|endoftext|>')  # text that spells a special is not the special
    assert GPT2.facts() == {'kind': 'gpt2', 'name': 'gpt2', 'ranks_sha256': GPT2_RANKS_SHA256, 'eot_token': 50256,
                            'a_token': 2235, 'pad_token': 50257, 'n_vocab': 50257, 'pattern': 'gpt2'}
    assert get_tokenizer('gpt2') is GPT2 and get_tokenizer({'kind': 'gpt2'}) is GPT2
    assert get_tokenizer({'encoding': 'gpt2', 'ranks_sha256': GPT2_RANKS_SHA256}) is GPT2  # an older checkpoint's facts


@pytest.mark.parametrize('text', MIXED)
def test_gpt2_round_trip(text):
    ids = GPT2.encode(text)
    assert all(0 <= i < N_VOCAB and i != EOT_TOKEN for i in ids)
    assert GPT2.decode(ids) == text


def test_gpt2_ranks_file_with_wrong_hash_refused(tmp_path):
    good = tmp_path / 'good.tiktoken'
    shutil.copy(GPT2_RANKS_PATH, good)
    assert gpt2(str(good)).encode('。') == [16764]  # a faithful copy loads
    data = bytearray(good.read_bytes())
    i = data.index(b' 100\n')  # a rank number, so the file still parses; only the hash tells
    data[i + 1:i + 4] = b'101'
    bad = tmp_path / 'bad.tiktoken'
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        gpt2(str(bad))
    assert str(bad) in str(e.value) and GPT2_RANKS_SHA256 in str(e.value)
    with pytest.raises(FileNotFoundError, match='missing'):
        gpt2(str(tmp_path / 'nope.tiktoken'))


def test_trained_tokenizer_ids_and_round_trips(trained_tokenizer):
    tok = get_tokenizer(trained_tokenizer)
    config = json.load(open(os.path.join(trained_tokenizer, 'tokenizer.json'), encoding='utf-8'))
    m = len(tok.ranks)
    assert m == 398 and (tok.eot, tok.a_token, tok.pad, tok.n_vocab) == (398, 399, 400, 400)
    assert tok.vocab_size == 448  # 401 rows rounded up to a multiple of 64
    assert config['special_tokens'] == {'<|endoftext|>': 398, '<|answer|>': 399} and config['n_vocab'] == 400
    assert tok.enc.encode('<|endoftext|><|answer|>', allowed_special='all') == [398, 399]
    for text in MIXED:
        ids = tok.encode(text)
        assert all(0 <= i < m for i in ids), text  # never a special, never PAD
        assert tok.decode(ids) == text
    # trained on this corpus, frequent Chinese words are single tokens, unlike GPT-2's 2-3 per character
    assert len(tok.encode('北京是中国的首都。')) < len(GPT2.encode('北京是中国的首都。')) / 3
    assert tok.kind == 'trained' and config['pattern'] == 'gpt2' and config['ranks_sha256'] == tok.ranks_sha256


def test_training_is_deterministic(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    train_test_tokenizer(a)
    train_test_tokenizer(b, corpus=a / 'corpus')  # the same corpus, trained again
    for name in ('tokenizer.tiktoken', 'tokenizer.json'):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_tampered_ranks_refused_by_sha256(tmp_path, trained_tokenizer):
    folder = tmp_path / 'tok'
    shutil.copytree(trained_tokenizer, folder)
    lines = (folder / 'tokenizer.tiktoken').read_text().splitlines(keepends=True)
    lines[300], lines[301] = lines[300].split()[0] + ' 301\n', lines[301].split()[0] + ' 300\n'  # two ranks swapped
    (folder / 'tokenizer.tiktoken').write_text(''.join(lines))
    with pytest.raises(ValueError, match='sha256') as e:
        get_tokenizer(str(folder))
    assert 'tokenizer.tiktoken' in str(e.value)
    os.remove(folder / 'tokenizer.tiktoken')
    with pytest.raises(FileNotFoundError, match='train_tokenizer.py'):
        get_tokenizer(str(folder))
    with pytest.raises(FileNotFoundError, match='not .gpt2., a tokenizer folder'):
        get_tokenizer(str(tmp_path / 'nowhere'))


def test_checkpoint_facts_rebuild_the_tokenizer_alone(trained_tokenizer):
    tok = get_tokenizer(trained_tokenizer)
    saved = tok.for_checkpoint()
    assert set(saved) == set(tok.facts()) | {'ranks'}
    again = get_tokenizer(saved)  # no folder needed: the ranks travel with the facts
    assert again.facts() == tok.facts() and again.encode(MIXED[2]) == tok.encode(MIXED[2])
    assert 'ranks' not in GPT2.for_checkpoint()  # GPT-2's ranks ship with the project
    with pytest.raises(ValueError, match='sha256'):
        get_tokenizer(dict(saved, ranks=saved['ranks'].replace(' 5\n', ' 6\n', 1)))


def test_mismatch_names_both_tokenizers(trained_tokenizer):
    tok = get_tokenizer(trained_tokenizer)
    same_tokenizer(tok.facts(), dict(tok.facts()), 'a', 'b')  # equal facts pass
    with pytest.raises(ValueError) as e:
        same_tokenizer(GPT2.facts(), tok.facts(), 'data/sft/meta.json', 'out/pretrain/ckpt.pt')
    message = str(e.value)
    assert 'data/sft/meta.json' in message and 'out/pretrain/ckpt.pt' in message
    assert "'gpt2'" in message and repr(tok.name) in message
    assert GPT2_RANKS_SHA256[:12] in message and tok.ranks_sha256[:12] in message


def test_train_tokenizer_script_reports_compression(tmp_path):
    corpus = tmp_path / 'corpus'
    write_jsonl(str(corpus / 'a.jsonl'), [f'第{i}号文件说，北京是中国的首都。上海是中国最大的城市。' for i in range(300)])
    proc = run_script(['data/train_tokenizer.py', f'--input_dir={corpus}', f'--out_dir={tmp_path / "tok"}',
                       '--vocab_size=400', '--val_fraction=0.1', '--block_size=128'])
    config = json.load(open(tmp_path / 'tok' / 'tokenizer.json', encoding='utf-8'))
    report = config['compression']
    assert report['measured_on'] == 'val' and report['block_size'] == 128
    assert report['trained']['tokens_per_char'] < report['gpt2']['tokens_per_char'] / 2
    assert f"{report['trained']['tokens_per_char']}" in proc.stdout and 'characters per 128-row' in proc.stdout
    assert 250 < config['trained_on']['articles'] < 300  # the val articles are measured, not learned from
    assert config['n_vocab'] == 400 and "<|endoftext|> = 398" in proc.stdout
    bad = run_script(['data/train_tokenizer.py', f'--input_dir={corpus}', '--vocab_size=70000'], check=False)
    assert bad.returncode != 0 and '--vocab_size=70000' in bad.stderr and 'uint16' in bad.stderr


def _downloading_calls(source):
    """Lines that call tiktoken.get_encoding / encoding_for_model (which download the ranks), or import them."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr in ('get_encoding', 'encoding_for_model')
                and isinstance(node.value, ast.Name) and node.value.id == 'tiktoken'):
            hits.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tiktoken') and any(
                a.name in ('get_encoding', 'encoding_for_model') for a in node.names):
            hits.append(node.lineno)
    return hits


def test_checker_finds_calls():
    assert _downloading_calls('import tiktoken\nenc = tiktoken.get_encoding("gpt2")\n') == [2]
    assert _downloading_calls('from tiktoken import get_encoding\n') == [1]
    assert _downloading_calls('# tiktoken.get_encoding("gpt2") would download\nx = "tiktoken.get_encoding"\n') == []


def test_no_script_calls_tiktoken_get_encoding():
    """Every script gets its tokenizer from tokenizer.get_tokenizer(), which works offline."""
    this = os.path.abspath(__file__)
    offenders, checked = [], 0
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('__pycache__', 'node_modules', 'runs')]
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith('.py') or os.path.abspath(path) == this:
                continue
            with open(path, encoding='utf-8') as f:
                source = f.read()
            checked += 1
            offenders += [f"{os.path.relpath(path, ROOT)}:{line}" for line in _downloading_calls(source)]
    assert checked >= 5  # the walk really saw the project
    assert offenders == [], f"use tokenizer.get_tokenizer() instead of tiktoken's downloader: {offenders}"


def train_tokenizer_module():
    import sys
    sys.path.insert(0, os.path.join(ROOT, 'data'))
    import train_tokenizer
    return train_tokenizer


@pytest.mark.parametrize('failure', ['report', 'second_file'])
def test_a_failure_between_the_two_files_keeps_the_previous_tokenizer(tmp_path, monkeypatch, failure):
    """A retrain that dies after the ranks are made (in the report, or writing tokenizer.json) changes nothing."""
    tt = train_tokenizer_module()
    folder = tmp_path / 'tok'
    old = train_test_tokenizer(folder, vocab_size=300)
    before = {name: (folder / name).read_bytes() for name in (RANKS_FILE, CONFIG_FILE)}
    if failure == 'report':  # a kill (KeyboardInterrupt stands in for it) while the report is measured
        def killed(*args):
            raise KeyboardInterrupt
        monkeypatch.setattr(tt, 'compression', killed)
    else:  # a full disk when the second file is written
        def full_disk(path, *args, **kwargs):
            if str(path).endswith(CONFIG_FILE + '.tmp'):
                raise OSError(28, 'No space left on device')
            return open(path, *args, **kwargs)
        monkeypatch.setattr(tt, 'open', full_disk, raising=False)
    with pytest.raises((KeyboardInterrupt, OSError)):
        train_test_tokenizer(folder, vocab_size=320, corpus=folder / 'corpus')
    assert sorted(os.listdir(folder)) == ['corpus', CONFIG_FILE, RANKS_FILE]  # no temporary file left
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert get_tokenizer(str(folder)).facts() == old.facts()
    monkeypatch.undo()
    assert get_tokenizer(str(train_test_tokenizer(folder, vocab_size=320, corpus=folder / 'corpus').path)).n_vocab == 320


@pytest.mark.slow  # runs the script
def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    corpus = write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), MIXED)
    proc = run_script(['data/train_tokenizer.py', f'--input_dir={os.path.dirname(corpus)}', '--out_dir=README.md',
                       '--vocab_size=300'], check=False)
    assert proc.returncode == 1 and proc.stderr == ("error: --out_dir=README.md: a file is in the way; the "
                                                    "tokenizer's two files go into a folder\n"), proc.stderr


def write_tokenizer_folder(folder, text, name='hand-made'):
    """A tokenizer folder whose tokenizer.json agrees with its ranks text (sha256 and ids), whatever it holds."""
    os.makedirs(folder, exist_ok=True)
    (folder / RANKS_FILE).write_text(text, encoding='utf-8')
    m = len(text.splitlines())
    config = {'name': name, 'kind': 'trained', 'pattern': 'gpt2', 'ranks_sha256': sha256_text(text),
              'eot_token': m, 'a_token': m + 1, 'n_vocab': m + 2}
    (folder / CONFIG_FILE).write_text(json.dumps(config), encoding='utf-8')
    return str(folder)


@pytest.mark.slow  # runs prepare.py too
def test_ranks_without_every_byte_are_refused_not_a_rust_panic(tmp_path):
    byte_level = {bytes([b]): b for b in range(256)}
    whole = get_tokenizer(write_tokenizer_folder(tmp_path / 'whole', ranks_text({**byte_level, '北'.encode(): 256})))
    assert whole.decode(whole.encode('北京!')) == '北京!' and whole.n_vocab == 259
    ranks = {t: (r if r < 0x21 else r - 1) for t, r in byte_level.items() if t != b'!'}  # '!' dropped, renumbered
    folder = write_tokenizer_folder(tmp_path / 'no_bang', ranks_text(ranks))
    with pytest.raises(ValueError) as e:
        get_tokenizer(folder)
    assert str(e.value) == (f"{folder}/{RANKS_FILE}: 1 of the 256 single bytes have no token (the first: 0x21); "
                            f"a byte-level BPE needs all of them to encode any text")
    proc = run_script(['data/prepare.py', f'--tokenizer={folder}', f'--input_dir={tmp_path}'], check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr and '0x21' in proc.stderr, proc.stderr
    twice = write_tokenizer_folder(tmp_path / 'twice', ranks_text(byte_level) + ranks_text({b'!': 256}))
    with pytest.raises(ValueError, match=r"tokenizer.tiktoken:257: token b'!' has a rank already \(33\)"):
        get_tokenizer(twice)


@pytest.mark.parametrize('field', ['ranks_sha256', 'name'])
def test_facts_without_a_field_name_it(trained_tokenizer, field):
    facts = get_tokenizer(trained_tokenizer).for_checkpoint()
    del facts[field]
    with pytest.raises(ValueError, match=f"the trained tokenizer's facts have no '{field}' field"):
        get_tokenizer(facts)
    del facts['ranks']  # then rebuilt from its folder
    with pytest.raises(ValueError, match=f"the trained tokenizer's facts have no '{field}' field"):
        get_tokenizer(dict(facts, path=trained_tokenizer))

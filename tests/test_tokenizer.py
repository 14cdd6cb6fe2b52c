"""The offline GPT-2 tokenizer (DESIGN.md §1): exact ids, round trips, the hash check, one loader only."""
import ast
import os
import shutil

import pytest

from conftest import ROOT
from config.train_config import A_TOKEN, EOT_TOKEN, N_VOCAB, PAD_TOKEN
from data_utils import RANKS_PATH, RANKS_SHA256, get_encoding, tokenizer_facts


def test_exact_ids():
    enc = get_encoding()
    assert enc.n_vocab == N_VOCAB == 50257
    assert enc.encode('<|endoftext|>', allowed_special={'<|endoftext|>'}) == [EOT_TOKEN] == [50256]
    assert enc.encode_ordinary('##') == [A_TOKEN] == [2235]
    assert enc.encode_ordinary('。') == [16764]
    assert enc.eot_token == EOT_TOKEN
    assert PAD_TOKEN == enc.n_vocab  # the first id past the tokenizer
    # ordinary text that spells the special token is not the special token
    assert EOT_TOKEN not in enc.encode_ordinary('<|endoftext|>')
    with pytest.raises(ValueError):
        enc.encode('<|endoftext|>')  # disallowed unless asked for
    assert tokenizer_facts() == {'encoding': 'gpt2', 'ranks_sha256': RANKS_SHA256, 'eot_token': 50256,
                                 'pad_token': 50257, 'a_token': 2235, 'n_vocab': 50257}


def test_known_encodings():
    enc = get_encoding()
    assert enc.encode_ordinary('hello world') == [31373, 995]
    assert enc.encode_ordinary('北京') == [44293, 245, 12859, 105]
    assert enc.decode([16764]) == '。'


@pytest.mark.parametrize('text', [
    '北京是中国的首都。北京有很多名胜古迹。',
    '他说：“今天很好。”（新华社记者 兰红光 摄）１９９８年',
    '混合 English 和中文，emoji 🐼，全角ＡＢＣ１２３，标点……——《》【】',
    '第一行\n\n第二行\t制表符  两个空格',
])
def test_round_trip(text):
    enc = get_encoding()
    ids = enc.encode_ordinary(text)
    assert all(0 <= i < N_VOCAB and i != EOT_TOKEN for i in ids)
    assert enc.decode(ids) == text
    assert enc.decode_bytes(ids) == text.encode('utf-8')


def test_ranks_file_with_wrong_hash_refused(tmp_path):
    good = tmp_path / 'good.tiktoken'
    shutil.copy(RANKS_PATH, good)
    assert get_encoding(str(good)).encode_ordinary('。') == [16764]  # a faithful copy loads

    data = bytearray(good.read_bytes())
    i = data.index(b' 100\n')  # a rank number, so the file still parses; only the hash tells
    data[i + 1:i + 4] = b'101'
    bad = tmp_path / 'bad.tiktoken'
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        get_encoding.__wrapped__(str(bad))  # the uncached function, so no earlier result is reused
    assert str(bad) in str(e.value) and RANKS_SHA256 in str(e.value)
    with pytest.raises(ValueError):
        get_encoding(str(bad))


def test_missing_ranks_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing'):
        get_encoding.__wrapped__(str(tmp_path / 'nope.tiktoken'))


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
    """Every script gets the tokenizer from data_utils.get_encoding(), which works offline."""
    this = os.path.abspath(__file__)
    offenders, checked = [], 0
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('__pycache__', 'node_modules')]
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith('.py') or os.path.abspath(path) == this:
                continue
            with open(path, encoding='utf-8') as f:
                source = f.read()
            checked += 1
            offenders += [f"{os.path.relpath(path, ROOT)}:{line}" for line in _downloading_calls(source)]
    assert checked >= 5  # the walk really saw the project
    assert offenders == [], f"use data_utils.get_encoding() instead of tiktoken's downloader: {offenders}"

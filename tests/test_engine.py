"""The engine: KV cache equals full recompute, sampling rules, the UTF-8 streamer, chat prompts."""
import threading

import pytest
import torch

from config.train_config import A_TOKEN, EOT_TOKEN, N_VOCAB
from conftest import SENTENCES
from data_utils import get_encoding
from engine import (decode_text, encode_prompt, generate_ids, generate_text, sample_next, stream_text,
                    text_pieces, window)
from model import GPT, GPTConfig, KVCache, load_checkpoint


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One-token steps gain nothing from threads, and on a busy 2-core machine spinning threads make them 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_model(seed=0, block_size=32, dtype=torch.float64):
    """A seeded random tiny model; float64 so that cached and recomputed logits never differ in argmax."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval().to(dtype)
    with torch.no_grad():  # a larger spread than GPT-2's init: peaked, varied logits instead of near ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


@torch.no_grad()
def recompute_loop(model, prompt, n, temperature=0, top_k=None, seed=0):
    """The reference: recompute the whole context every step, with the engine's documented window rule."""
    max_ctx, keep = window(model.config)
    generator = torch.Generator().manual_seed(seed)
    tokens, start, out = list(prompt), 0, []
    for _ in range(n):
        if len(tokens) - start > max_ctx:
            start = len(tokens) - keep
        logits, _ = model(torch.tensor([tokens[start:]]))
        next_id = sample_next(logits[0, -1], temperature, top_k, generator)
        if next_id == EOT_TOKEN:
            break
        out.append(next_id)
        tokens.append(next_id)
    return out


def test_window_rule_is_documented_shape():
    assert window(GPTConfig(block_size=512)) == (511, 383)
    assert window(GPTConfig(block_size=32)) == (31, 23)


@pytest.mark.parametrize('prompt_len', [10, 40])  # 40 > block_size: the prompt itself is cut to the window
def test_greedy_kv_cache_equals_full_recompute_past_block_size(prompt_len):
    model = random_model()
    prompt = list(range(1000, 1000 + prompt_len))
    want = recompute_loop(model, prompt, 100)
    got = list(generate_ids(model, prompt, max_new_tokens=100, temperature=0))
    assert len(want) == 100 and len(set(want)) > 10  # long and varied, so the comparison means something
    assert got == want


def test_sampled_kv_cache_equals_full_recompute_with_same_seed():
    model = random_model(seed=1)
    prompt = [464, 3290, 318]
    want = recompute_loop(model, prompt, 80, temperature=1.0, top_k=50, seed=7)
    got = list(generate_ids(model, prompt, max_new_tokens=80, temperature=1.0, top_k=50, seed=7))
    assert len(want) == 80 and got == want


def test_greedy_cache_equals_recompute_float32_trained_model(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    for sentence in SENTENCES:
        prompt = get_encoding().encode_ordinary(sentence[:2])
        assert list(generate_ids(model, prompt, max_new_tokens=100, temperature=0)) == recompute_loop(model, prompt, 100)


@torch.no_grad()
def test_chunked_prefill_matches_one_forward():
    model = random_model(seed=2)
    idx = torch.tensor([list(range(2000, 2020))])
    full = model.lm_head(model.transformer.ln_f(_hidden(model, idx)))
    cache = KVCache(model.config, 1, 'cpu', torch.float64)
    a, _ = model(idx[:, :7], kv_cache=cache)
    b, _ = model(idx[:, 7:], kv_cache=cache)  # a chunk after cached tokens: needs the offset causal mask
    assert cache.pos == 20
    assert torch.allclose(a[0, -1], full[0, 6], atol=1e-10) and torch.allclose(b[0, -1], full[0, -1], atol=1e-10)


def _hidden(model, idx):
    pos = torch.arange(idx.size(1))
    x = model.transformer.wte(idx) + model.transformer.wpe(pos)
    for block in model.transformer.h:
        x = block(x)
    return x


def test_sampler_never_emits_padding_ids():
    logits = torch.zeros(50304)
    logits[N_VOCAB:] = 100.0  # PAD and the padding ids are the most likely by far
    logits[123] = 1.0
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0, None, g) == 123
    assert sample_next(logits, 1.0, 1, g) == 123
    draws = {sample_next(logits, 2.0, None, g) for _ in range(200)}
    assert max(draws) < N_VOCAB and len(draws) > 50


def test_top_k_limits_candidates():
    logits = torch.arange(50304, dtype=torch.float32) / 1000.0  # highest real ids: 50256, 50255, 50254
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 5.0, 3, g) for _ in range(200)} == {50254, 50255, 50256}


def test_stops_at_eot_and_never_yields_it(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    enc = get_encoding()
    prompt = enc.encode_ordinary('熊猫')
    ids = list(generate_ids(model, prompt, max_new_tokens=200, temperature=0))
    assert EOT_TOKEN not in ids and len(ids) < 200
    assert enc.decode(prompt + ids) == SENTENCES[2]


def test_seeded_requests_are_reproducible_and_independent_across_threads():
    model = random_model(seed=3, dtype=torch.float32)
    kwargs = dict(max_new_tokens=40, temperature=1.0, top_k=None)
    serial = {s: list(generate_ids(model, [500, 600], seed=s, **kwargs)) for s in range(6)}
    assert len({tuple(v) for v in serial.values()}) == 6
    results = {}

    def work(s):
        results[s] = list(generate_ids(model, [500, 600], seed=s, **kwargs))
    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == serial


def test_generation_leaves_global_rng_alone():
    model = random_model(seed=4, dtype=torch.float32)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    list(generate_ids(model, [1, 2, 3], max_new_tokens=10, temperature=1.0))
    list(generate_ids(model, [1, 2, 3], max_new_tokens=10, temperature=1.0, seed=5))
    assert torch.equal(before, torch.get_rng_state())


def test_closing_the_stream_stops_the_model():
    model = random_model(seed=5, dtype=torch.float32)
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        stream = stream_text(model, [1000, 1001], max_new_tokens=100, temperature=1.0, seed=0)
        next(stream)
        stream.close()
        n = len(calls)
        assert 1 <= n < 10
    finally:
        hook.remove()


def test_bad_arguments_are_refused():
    model = random_model(dtype=torch.float32)
    for kwargs, msg in [(dict(temperature=-0.5), 'temperature'), (dict(top_k=0), 'top_k')]:
        with pytest.raises(ValueError, match=msg):
            list(generate_ids(model, [1], **kwargs))
    with pytest.raises(ValueError, match='empty prompt'):
        list(generate_ids(model, []))


# ----------------------------------------------------------------------------- text

def test_streamer_pieces_are_whole_characters(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    enc = get_encoding()
    for sentence in SENTENCES:
        prompt = enc.encode_ordinary(sentence[:2])
        ids = list(generate_ids(model, prompt, max_new_tokens=100, temperature=0))
        halves = [i for i in ids if _not_whole(enc.decode_single_token_bytes(i))]
        assert halves, 'the test needs tokens that hold part of a character'
        pieces = list(stream_text(model, prompt, max_new_tokens=100, temperature=0))
        assert ''.join(pieces) == enc.decode(ids) == sentence[2:]
        assert all('\ufffd' not in p and p for p in pieces)
        assert len(pieces) > 5


def _not_whole(b):
    try:
        b.decode('utf-8')
        return False
    except UnicodeDecodeError:
        return True


def test_text_pieces_hold_back_split_characters_and_drop_broken_bytes():
    enc = get_encoding()
    ids = enc.encode_ordinary('熊猫喜欢吃竹子。')
    assert list(text_pieces(ids)) == list('熊猫喜欢吃竹子。')
    # cut mid-character, and bytes that never form a character: nothing broken comes out
    junk = [enc.encode_single_token(b'\xe7'), enc.encode_single_token(b'\x80')] + ids + ids[:1]
    pieces = list(text_pieces(junk))
    assert '\ufffd' not in ''.join(pieces)
    assert ''.join(pieces) == decode_text(junk)
    assert ''.join(pieces).endswith('竹子。') and enc.decode(junk).count('\ufffd') >= 1


def test_random_model_stream_never_shows_replacement_character():
    model = random_model(seed=6, dtype=torch.float32)
    ids = list(generate_ids(model, [1000], max_new_tokens=150, temperature=1.0, top_k=None, seed=1))
    pieces = list(stream_text(model, [1000], max_new_tokens=150, temperature=1.0, top_k=None, seed=1))
    assert ''.join(pieces) == decode_text(ids) and '\ufffd' not in ''.join(pieces)


def test_encode_prompt_chat_forms():
    enc = get_encoding()
    q = enc.encode_ordinary('中国的首都是哪里？')
    assert encode_prompt('中国的首都是哪里？', chat=True) == q + [A_TOKEN]
    assert encode_prompt('中国的首都是哪里？##') == q + [A_TOKEN]
    assert encode_prompt('中国的首都是哪里？ ## \n') == q + [A_TOKEN]
    assert encode_prompt('中国的首都是哪里？##', chat=True) == q + [A_TOKEN]
    assert encode_prompt('北京是') == enc.encode_ordinary('北京是')
    assert encode_prompt(' 北京') == enc.encode_ordinary(' 北京')


def test_generate_text_chat_returns_answer_only(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    text = generate_text(model, '长江##', temperature=0)
    assert text == generate_text(model, '长江', chat=True, temperature=0)
    assert '##' not in text and not text.startswith('长江')
    assert generate_text(model, '长江', temperature=0) == SENTENCES[1][2:]

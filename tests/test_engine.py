"""The engine: KV cache equals full recompute, sampling rules, the UTF-8 streamer, chat prompts."""
import threading

import pytest
import torch

from conftest import A_TOKEN, EOT_TOKEN, GPT2, N_VOCAB, SENTENCES, random_model
from engine import (GREEDY_BELOW, candidates, encode_prompt, generate_ids, generate_text, penalize, sample_next,
                    stream_text, text_pieces, window)
from checkpoint import load_checkpoint
from model import GPTConfig, KVCache


pytestmark = pytest.mark.usefixtures('one_thread')  # one-token steps: threads only add contention


@torch.no_grad()
def recompute_loop(model, prompt, n, temperature=0, top_k=None, seed=0, presence=0.0, frequency=0.0):
    """
    The reference: recompute the whole context every step, with the engine's documented window rule;
    greedy is a plain argmax, and the penalties count the generated ids only (not the prompt's).
    """
    max_ctx, keep = window(model.config)
    generator = torch.Generator().manual_seed(seed)
    tokens, start, out = list(prompt), 0, []
    counts = torch.zeros(N_VOCAB)
    for _ in range(n):
        if len(tokens) - start > max_ctx:
            start = len(tokens) - keep
        logits = model(torch.tensor([tokens[start:]]))[0][0, -1, :N_VOCAB].float()
        logits = logits - presence * (counts > 0).float() - frequency * counts
        if temperature == 0:
            next_id = int(torch.argmax(logits))
        else:
            next_id = sample_next(logits, N_VOCAB, generator, temperature, top_k)
        if next_id == EOT_TOKEN:
            break
        out.append(next_id)
        tokens.append(next_id)
        counts[next_id] += 1
    return out


def test_window_rule_is_documented_shape():
    assert window(GPTConfig(block_size=512)) == (511, 383)
    assert window(GPTConfig(block_size=32)) == (31, 23)


@pytest.mark.parametrize('prompt_len', [10, 40])  # 40 > block_size: the prompt itself is cut to the window
def test_greedy_kv_cache_equals_full_recompute_past_block_size(prompt_len):
    model = random_model()
    prompt = list(range(1000, 1000 + prompt_len))
    want = recompute_loop(model, prompt, 100)
    got = list(generate_ids(model, GPT2, prompt, max_new_tokens=100, temperature=0))
    assert len(want) == 100 and len(set(want)) > 10  # long and varied, so the comparison means something
    assert got == want


def test_sampled_kv_cache_equals_full_recompute_with_same_seed():
    model = random_model(seed=1)
    prompt = [464, 3290, 318]
    want = recompute_loop(model, prompt, 80, temperature=1.0, top_k=50, seed=7)
    got = list(generate_ids(model, GPT2, prompt, max_new_tokens=80, temperature=1.0, top_k=50, seed=7))
    assert len(want) == 80 and got == want


def test_greedy_cache_equals_recompute_float32_trained_model(tiny_checkpoint):
    model, _, _ = load_checkpoint(tiny_checkpoint)
    for sentence in SENTENCES:
        prompt = GPT2.encode(sentence[:2])
        assert list(generate_ids(model, GPT2, prompt, max_new_tokens=100, temperature=0)) == recompute_loop(model, prompt, 100)


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
    assert sample_next(logits, N_VOCAB, g, 0) == 123
    assert sample_next(logits, N_VOCAB, g, 1.0, 1) == 123
    draws = {sample_next(logits, N_VOCAB, g, 2.0) for _ in range(200)}
    assert max(draws) < N_VOCAB and len(draws) > 50


def test_top_k_limits_candidates():
    logits = torch.arange(50304, dtype=torch.float32) / 1000.0  # highest real ids: 50256, 50255, 50254
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, N_VOCAB, g, 5.0, 3) for _ in range(200)} == {50254, 50255, 50256}


def test_stops_at_eot_and_never_yields_it(tiny_checkpoint):
    model, _, _ = load_checkpoint(tiny_checkpoint)
    prompt = GPT2.encode('熊猫')
    ids = list(generate_ids(model, GPT2, prompt, max_new_tokens=200, temperature=0))
    assert EOT_TOKEN not in ids and len(ids) < 200
    assert GPT2.decode(prompt + ids) == SENTENCES[2]


def test_seeded_requests_are_reproducible_and_independent_across_threads():
    model = random_model(seed=3, dtype=torch.float32)
    kwargs = dict(max_new_tokens=40, temperature=1.0, top_k=None)
    serial = {s: list(generate_ids(model, GPT2, [500, 600], seed=s, **kwargs)) for s in range(6)}
    assert len({tuple(v) for v in serial.values()}) == 6
    results = {}

    def work(s):
        results[s] = list(generate_ids(model, GPT2, [500, 600], seed=s, **kwargs))
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
    list(generate_ids(model, GPT2, [1, 2, 3], max_new_tokens=10, temperature=1.0))
    list(generate_ids(model, GPT2, [1, 2, 3], max_new_tokens=10, temperature=1.0, seed=5))
    assert torch.equal(before, torch.get_rng_state())


def test_closing_the_stream_stops_the_model():
    model = random_model(seed=5, dtype=torch.float32)
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        stream = stream_text(model, GPT2, [1000, 1001], max_new_tokens=100, temperature=1.0, seed=0)
        next(stream)
        stream.close()
        n = len(calls)
        assert 1 <= n < 10
    finally:
        hook.remove()


def test_bad_arguments_are_refused():
    model = random_model(dtype=torch.float32)
    for kwargs, msg in [(dict(temperature=-0.5), 'temperature'), (dict(top_k=0), 'top_k'),
                        (dict(temperature=float('nan')), 'temperature'), (dict(top_p=-0.1), 'top_p'),
                        (dict(top_p=1.01), 'top_p'), (dict(presence_penalty=2.5), 'presence_penalty'),
                        (dict(frequency_penalty=-2.01), 'frequency_penalty'), (dict(top_p='0.9'), 'top_p')]:
        with pytest.raises(ValueError, match=msg):
            list(generate_ids(model, GPT2, [1], **kwargs))
    with pytest.raises(ValueError, match='empty prompt'):
        list(generate_ids(model, GPT2, []))


# ----------------------------------------------------------------------------- top_p, penalties, tiny temperatures

# the engine's ids before top_p and the penalties existed (random_model(seed=8), prompt [464, 3290, 318], 40 tokens):
# with them off, greedy and seeded samples must stay exactly these
TODAY_GREEDY = [22268, 13148, 38103, 38103, 38103, 38103, 11014, 13148, 27856, 43019, 17427, 17427, 17427, 17427,
                17427, 17427, 47482, 47482, 40281, 34491, 17427, 9939, 17427, 9939, 43019, 43019, 43019, 34491, 34491,
                17427, 17427, 17427, 9939, 43019, 38328, 49484, 34491, 12373, 34491, 34491]
TODAY_TOP_K_50_SEED_7 = [5522, 43621, 40439, 22347, 18, 36453, 14916, 14595, 24956, 14595, 38658, 24615, 36441, 13148,
                         6115, 3275, 13831, 49576, 8277, 28548, 20150, 8995, 14268, 7298, 38397, 31867, 16056, 34667,
                         11014, 3275, 34491, 34491, 42621, 37534, 4394, 29514, 45618, 9939, 26773, 6527]


def test_new_options_off_by_default_keep_todays_ids():
    model, prompt = random_model(seed=8), [464, 3290, 318]
    assert list(generate_ids(model, GPT2, prompt, max_new_tokens=40, temperature=0)) == TODAY_GREEDY
    assert list(generate_ids(model, GPT2, prompt, max_new_tokens=40, temperature=0, top_p=1.0, presence_penalty=0.0,
                             frequency_penalty=0.0)) == TODAY_GREEDY
    assert list(generate_ids(model, GPT2, prompt, max_new_tokens=40, temperature=1.0, top_k=50, seed=7)) == TODAY_TOP_K_50_SEED_7


def test_penalties_exact_effect_on_hand_built_logits():
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    counts = torch.tensor([0.0, 1.0, 2.0, 0.0])
    assert penalize(logits, counts, 0.5, 0.25).tolist() == [1.0, 1.25, 2.0, 4.0]  # -= 0.5*[c>0] + 0.25*c
    assert penalize(logits, counts, -1.0, 0.0).tolist() == [1.0, 3.0, 4.0, 4.0]  # negative: encourage repeats
    # through the sampler: id 3 leads by 1.0 but has been said twice; frequency 0.75 costs it 1.5
    logits, counts = torch.tensor([0.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 0.0, 2.0])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, 4, g, 0) == 3
    assert sample_next(logits, 4, g, 0, counts=counts, frequency_penalty=0.75) == 2
    assert sample_next(logits, 4, g, 0, counts=counts, frequency_penalty=0.25) == 3  # 3 - 0.5 still leads
    assert sample_next(logits, 4, g, 0, counts=counts, presence_penalty=1.5) == 2  # once, whatever the count
    assert sample_next(logits, 4, g, 0, counts=counts, presence_penalty=0.5) == 3


def test_penalties_count_generated_ids_only_and_break_loops():
    model, prompt = random_model(seed=8), [464, 3290, 318]
    got = list(generate_ids(model, GPT2, prompt, max_new_tokens=40, temperature=0, frequency_penalty=1.0, presence_penalty=0.5))
    assert got == recompute_loop(model, prompt, 40, presence=0.5, frequency=1.0)
    assert max(got.count(i) for i in got) < max(TODAY_GREEDY.count(i) for i in TODAY_GREEDY)  # 17427 said 12 times today
    # the prompt does not count: after ... 38103 in the prompt, greedy says 38103 again, penalties or not
    looping = prompt + TODAY_GREEDY[:3]
    for kwargs in (dict(presence_penalty=2.0), dict(frequency_penalty=2.0)):
        assert list(generate_ids(model, GPT2, looping, max_new_tokens=1, temperature=0, **kwargs)) == [38103] == TODAY_GREEDY[3:4]
        assert list(generate_ids(model, GPT2, looping, max_new_tokens=2, temperature=0, **kwargs))[1] != 38103  # said once: now it counts


def test_top_p_exact_effect_on_hand_built_logits():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    ids, probs = candidates(logits, 1.0, top_p=0.7)  # 0.5 < 0.7, then 0.75 >= 0.7: the two most likely
    assert ids.tolist()[:2] == [0, 1] and torch.allclose(probs, torch.tensor([2 / 3, 1 / 3, 0, 0]))
    ids, probs = candidates(logits, 1.0, top_p=1.0)  # off: every id, untouched and in id order
    assert ids is None and torch.allclose(probs, torch.tensor([0.5, 0.25, 0.125, 0.125]))
    ids, probs = candidates(logits, 1.0, top_p=0.0)  # at least one id survives
    assert ids[0] == 0 and probs.tolist() == [1.0, 0.0, 0.0, 0.0]
    ids, probs = candidates(logits, 0.5, top_p=0.7)  # temperature first: 0.5 sharpens the top id to 0.727 alone
    assert ids[0] == 0 and probs.tolist() == [1.0, 0.0, 0.0, 0.0]
    ids, probs = candidates(torch.log(torch.tensor([0.1, 0.4, 0.2, 0.3])), 1.0, top_k=3, top_p=0.5)
    assert ids.tolist() == [1, 3, 2] and torch.allclose(probs, torch.tensor([4 / 7, 3 / 7, 0]))  # top-k 3, then 4/9 < 0.5
    g = torch.Generator().manual_seed(0)
    draws = [sample_next(logits, 4, g, 1.0, top_p=0.7) for _ in range(600)]
    assert set(draws) == {0, 1} and 300 < draws.count(0) < 500  # 2/3 of 600 = 400


def test_tiny_temperature_is_greedy_not_nan():
    logits = torch.tensor([0.0, 30.0, 29.0, -5.0])
    g = torch.Generator().manual_seed(0)
    assert torch.isnan(torch.softmax(logits / 1e-40, dim=-1)).any()  # what the sampler did before the threshold
    for t in (1e-40, 5e-324, GREEDY_BELOW / 2):
        assert sample_next(logits, 4, g, t) == 1
    model, prompt = random_model(seed=8), [464, 3290, 318]
    assert list(generate_ids(model, GPT2, prompt, max_new_tokens=40, temperature=1e-40, top_k=None, seed=1)) == TODAY_GREEDY


# ----------------------------------------------------------------------------- text

def test_streamer_pieces_are_whole_characters(tiny_checkpoint):
    model, _, _ = load_checkpoint(tiny_checkpoint)
    for sentence in SENTENCES:
        prompt = GPT2.encode(sentence[:2])
        ids = list(generate_ids(model, GPT2, prompt, max_new_tokens=100, temperature=0))
        halves = [i for i in ids if _not_whole(GPT2.token_bytes(i))]
        assert halves, 'the test needs tokens that hold part of a character'
        pieces = list(stream_text(model, GPT2, prompt, max_new_tokens=100, temperature=0))
        assert ''.join(pieces) == GPT2.decode(ids) == sentence[2:]
        assert all('\ufffd' not in p and p for p in pieces)
        assert len(pieces) > 5


def _not_whole(b):
    try:
        b.decode('utf-8')
        return False
    except UnicodeDecodeError:
        return True


def test_text_pieces_hold_back_split_characters_and_drop_broken_bytes():
    enc = GPT2.enc
    ids = GPT2.encode('熊猫喜欢吃竹子。')
    assert list(text_pieces(GPT2, ids)) == list('熊猫喜欢吃竹子。')
    # cut mid-character, and bytes that never form a character: nothing broken comes out
    junk = [enc.encode_single_token(b'\xe7'), enc.encode_single_token(b'\x80')] + ids + ids[:1]
    pieces = list(text_pieces(GPT2, junk))
    assert '\ufffd' not in ''.join(pieces)
    assert ''.join(pieces) == GPT2.decode(junk)
    assert ''.join(pieces).endswith('竹子。') and enc.decode(junk).count('\ufffd') >= 1


def test_random_model_stream_never_shows_replacement_character():
    model = random_model(seed=6, dtype=torch.float32)
    ids = list(generate_ids(model, GPT2, [1000], max_new_tokens=150, temperature=1.0, top_k=None, seed=1))
    pieces = list(stream_text(model, GPT2, [1000], max_new_tokens=150, temperature=1.0, top_k=None, seed=1))
    assert ''.join(pieces) == GPT2.decode(ids) and '\ufffd' not in ''.join(pieces)


def test_encode_prompt_chat_forms():
    q = GPT2.encode('中国的首都是哪里？')
    assert encode_prompt(GPT2, '中国的首都是哪里？', chat=True) == q + [A_TOKEN]
    assert encode_prompt(GPT2, '中国的首都是哪里？##') == q + [A_TOKEN]
    assert encode_prompt(GPT2, '中国的首都是哪里？ ## \n') == q + [A_TOKEN]
    assert encode_prompt(GPT2, '中国的首都是哪里？##', chat=True) == q + [A_TOKEN]
    assert encode_prompt(GPT2, '北京是') == GPT2.encode('北京是') == [44293, 245, 12859, 105, 42468]
    assert encode_prompt(GPT2, ' 北京') == GPT2.encode(' 北京')


def test_generate_text_chat_returns_answer_only(tiny_checkpoint):
    model, _, _ = load_checkpoint(tiny_checkpoint)
    text = generate_text(model, GPT2, '长江##', temperature=0)
    assert text == generate_text(model, GPT2, '长江', chat=True, temperature=0)
    assert '##' not in text and not text.startswith('长江')
    assert generate_text(model, GPT2, '长江', temperature=0) == SENTENCES[1][2:]

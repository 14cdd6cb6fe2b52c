"""
The one generation engine: every script that makes text (sample.py, server.py, the arena, the
evaluations) calls it.

    from engine import encode_prompt, generate_ids, stream_text, generate_text
    from checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint('out/sft', 'cpu')   # tok: the tokenizer it was trained with
    print(generate_text(model, tok, '中国的首都是哪里？', chat=True, temperature=0))
    for piece in stream_text(model, tok, encode_prompt(tok, '北京是'), max_new_tokens=50, seed=1):
        print(piece, end='', flush=True)

The loop itself knows token ids only: the tokenizer passed in gives the EOT it stops at and n_vocab, the
first id it may never emit; turning text into ids and back happens at the edges (encode_prompt, text_pieces).

How it works:
- KV cache (model.KVCache): the prompt runs through the model once (prefill), keeping every
  layer's keys and values; each later step feeds only the newest token, one position, and
  attends to the cached ones: one position of work per token instead of nanoGPT's whole context.
  (On a CPU a small model's step is then bound by reading the output matrix, one row per token id, so
  the gain grows with depth and context: tests/bench/bench_sample.py measures it.)
- Window: rows were trained as x = row[:-1], so the model knows positions 0..block_size-2 and the
  context stays within block_size-1 tokens. When the next token would not fit, the context
  restarts from the most recent KEEP_FRACTION (3/4) of that window, re-prefilled in one forward;
  generation then runs cached again for the remaining quarter. Keeping 3/4 rather than everything
  costs one prefill per block_size/4 tokens instead of one per token, and the model still sees at
  least 3/4 of a window of context.
- Sampling, in this order: logits of ids >= n_vocab (PAD and the padding rows) are never candidates;
  the presence/frequency penalties (OpenAI's: logit -= presence * [count > 0] + frequency * count,
  counting the ids generated so far; the prompt does not count, as with OpenAI, so an answer may name
  its question's subject again: 羊侃的字是祖忻); a temperature below GREEDY_BELOW (0 included) is
  greedy, the argmax; otherwise top-k, softmax at the temperature, then top-p (nucleus: the fewest
  most likely ids whose probability reaches top_p), drawn with a torch.Generator private to the
  call, so concurrent requests never share or disturb an RNG and a seed reproduces a sample. Off
  (top_p 1, penalties 0, the defaults) they change nothing: the ids are those of the engine before
  them. Generation stops before EOT, which is never yielded.
- Text: a byte-level BPE can split a Chinese character across tokens (GPT-2's does for most of them,
  a trained one for rare ones), so a token's bytes are sometimes part of a character. stream_text
  holds bytes back (an incremental UTF-8 decoder) until they decode whole, so a U+FFFD never appears;
  bytes that can never form a character (a model can emit them) are dropped, not replaced. until_stop
  cuts the text before a stop string (OpenAI's "stop"), holding back a tail that may begin one.
- Chat: a question (a prompt ending in '##', which users type whatever the tokenizer) becomes
  encode(question) + [a_token] (the SFT row layout), and only the new tokens come back, so an answer
  never contains its question.
"""
import codecs

import torch

from model import KVCache

KEEP_FRACTION = 0.75  # share of the window kept when the context is full and is re-prefilled
# a temperature under this is greedy (issue 10: logits / 1e-40 overflow float32 and softmax gives NaN); at 1e-5
# a runner-up 0.001 below the top logit already has e^-100 of its chance, so nothing a user can see changes
GREEDY_BELOW = 1e-5
PENALTY_LIMIT = 2.0  # presence/frequency penalties lie in [-2, 2], OpenAI's range


def encode_prompt(tok, text, chat=False):
    """Token ids for a prompt; a question (chat=True, or text ending in '##') ends with the tokenizer's a_token."""
    stripped = text.rstrip()
    if chat or stripped.endswith('##'):
        if stripped.endswith('##'):
            stripped = stripped[:-2].rstrip()
        return tok.encode(stripped) + [tok.a_token]
    return tok.encode(text)


def window(config):
    """(max tokens of context, tokens kept when it is full) for a model config."""
    max_ctx = config.block_size - 1
    return max_ctx, max(1, int(max_ctx * KEEP_FRACTION))


def check_sampling(temperature=1.0, top_k=None, top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0):
    """Raises ValueError naming the first bad setting (the server answers it as a 400, the scripts print it)."""
    for name, value in dict(temperature=temperature, top_p=top_p, presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or abs(value) == float('inf'):
            raise ValueError(f'"{name}" must be a finite number, got {value!r}')
    if temperature < 0:
        raise ValueError(f'"temperature" must be >= 0 (0 = greedy), got {temperature}')
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f'"top_k" must be >= 1 (or None for all ids), got {top_k}')
    if not 0 <= top_p <= 1:
        raise ValueError(f'"top_p" must be between 0 and 1, got {top_p}')
    for name, value in (('presence_penalty', presence_penalty), ('frequency_penalty', frequency_penalty)):
        if not -PENALTY_LIMIT <= value <= PENALTY_LIMIT:
            raise ValueError(f'"{name}" must be between -{PENALTY_LIMIT:g} and {PENALTY_LIMIT:g}, got {value}')


def penalize(logits, counts, presence_penalty, frequency_penalty):
    """OpenAI's penalties: logit[j] -= presence * (count[j] > 0) + frequency * count[j]."""
    return logits - presence_penalty * (counts > 0).to(logits.dtype) - frequency_penalty * counts


def candidates(logits, temperature, top_k=None, top_p=1.0):
    """(ids, probs): the ids a token is drawn from (None: all, in id order) and their probabilities."""
    ids = None
    if top_k is not None and top_k < logits.numel():
        logits, ids = torch.topk(logits, top_k)  # sorted, most likely first
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:  # nucleus: the most likely ids whose mass first reaches top_p (at least one)
        if ids is None:
            probs, ids = torch.sort(probs, descending=True)
        keep = torch.cumsum(probs, 0) - probs < top_p  # mass of the more likely ids is still short of top_p
        keep[0] = True
        probs = probs * keep
        probs = probs / probs.sum()
    return ids, probs


def sample_next(logits, n_vocab, generator, temperature=1.0, top_k=None, top_p=1.0, counts=None,
                presence_penalty=0.0, frequency_penalty=0.0):
    """One id from the last position's logits (1-D, any length >= n_vocab); only ids < n_vocab."""
    logits = logits[:n_vocab].float()
    if counts is not None:
        logits = penalize(logits, counts, presence_penalty, frequency_penalty)
    if temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    ids, probs = candidates(logits, temperature, top_k, top_p)
    choice = int(torch.multinomial(probs.cpu(), 1, generator=generator))  # on the CPU: one generator kind everywhere
    return int(ids[choice]) if ids is not None else choice


def generate_ids(model, tok, prompt_ids, max_new_tokens=225, temperature=0.1, top_k=20, top_p=1.0,
                 presence_penalty=0.0, frequency_penalty=0.0, seed=None):
    """New token ids, one at a time, KV-cached; stops before EOT or after max_new_tokens. Bad arguments raise here."""
    if not prompt_ids:
        raise ValueError('empty prompt: give at least one token')
    check_sampling(temperature, top_k, top_p, presence_penalty, frequency_penalty)
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy, private to this call
    else:
        generator.manual_seed(seed)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, presence_penalty=presence_penalty,
                    frequency_penalty=frequency_penalty)
    return _generate(model, tok.eot, tok.n_vocab, list(prompt_ids), max_new_tokens, sampling, generator)


@torch.inference_mode()  # holds for every step of the generator, in whichever thread runs it
def _generate(model, eot, n_vocab, tokens, max_new_tokens, sampling, generator):
    param = next(model.parameters())
    device = param.device
    cache = KVCache(model.config, 1, device, param.dtype)
    max_ctx, keep = window(model.config)
    start = len(tokens) - keep if len(tokens) > max_ctx else 0
    penalized = sampling['presence_penalty'] or sampling['frequency_penalty']
    counts = torch.zeros(n_vocab, device=device) if penalized else None  # of the generated ids only, not the prompt's

    def prefill():
        cache.pos = 0
        idx = torch.tensor([tokens[start:]], dtype=torch.long, device=device)
        return model(idx, kv_cache=cache)[0][0, -1]

    logits = prefill()
    for _ in range(max_new_tokens):
        next_id = sample_next(logits, n_vocab, generator, counts=counts, **sampling)
        if next_id == eot:
            return
        yield next_id
        tokens.append(next_id)
        if counts is not None:
            counts[next_id] += 1
        if len(tokens) - start > max_ctx:  # window full: restart it from the most recent `keep` tokens
            start = len(tokens) - keep
            logits = prefill()
        else:
            idx = torch.tensor([[next_id]], dtype=torch.long, device=device)
            logits = model(idx, kv_cache=cache)[0][0, -1]


def text_pieces(tok, ids):
    """Whole-character text pieces of a stream of ids: bytes are held back until they decode whole."""
    decoder = codecs.getincrementaldecoder('utf-8')(errors='ignore')  # keeps a partial character for later
    for i in ids:
        piece = decoder.decode(tok.token_bytes(i))
        if piece:
            yield piece
    tail = decoder.decode(b'', final=True)  # a character cut off by max_new_tokens is dropped
    if tail:
        yield tail


def until_stop(pieces, stops, state):
    """
    Text pieces up to the first of the stop strings, which is not returned (state['stopped'] is then set);
    a tail that may be the start of one is held back until it cannot be, so a stream never shows part of one.
    It ends at the stop; the caller then closes the generation under it.
    """
    held, longest = '', max(map(len, stops))
    for piece in pieces:
        held += piece
        found = [i for i in (held.find(s) for s in stops) if i >= 0]
        if found:
            state['stopped'] = True
            yield held[:min(found)]
            return
        keep = next((k for k in range(min(len(held), longest - 1), 0, -1)
                     if any(s.startswith(held[-k:]) for s in stops)), 0)
        yield held[:len(held) - keep]
        held = held[len(held) - keep:]
    yield held


def stream_text(model, tok, prompt_ids, **kwargs):
    """Text pieces of the new tokens (see generate_ids for kwargs), each made of whole UTF-8 characters."""
    ids = generate_ids(model, tok, prompt_ids, **kwargs)
    try:
        yield from text_pieces(tok, ids)
    finally:
        ids.close()  # a caller that stops early stops the model too


def generate_text(model, tok, prompt, chat=False, **kwargs):
    """The whole continuation (or answer, for a question) of a prompt text."""
    return ''.join(stream_text(model, tok, encode_prompt(tok, prompt, chat=chat), **kwargs))

"""
The one generation engine: every script that makes text (sample.py, server.py, the arena, the
evaluations) calls it.

    from engine import encode_prompt, generate_ids, stream_text, generate_text
    from model import load_checkpoint
    model, _ = load_checkpoint('out/sft', 'cpu')
    print(generate_text(model, '中国的首都是哪里？', chat=True, temperature=0))
    for piece in stream_text(model, encode_prompt('北京是'), max_new_tokens=50, seed=1):
        print(piece, end='', flush=True)

How it works:
- KV cache (model.KVCache): the prompt runs through the model once (prefill), keeping every
  layer's keys and values; each later step feeds only the newest token, one position, and
  attends to the cached ones: one position of work per token instead of nanoGPT's whole context.
  (On a CPU a small model's step is then bound by reading the 50304-row output matrix, so the gain
  grows with depth and context: tests/bench/bench_sample.py measures it.)
- Window: rows were trained as x = row[:-1], so the model knows positions 0..block_size-2 and the
  context stays within block_size-1 tokens. When the next token would not fit, the context
  restarts from the most recent KEEP_FRACTION (3/4) of that window, re-prefilled in one forward;
  generation then runs cached again for the remaining quarter. Keeping 3/4 rather than everything
  costs one prefill per block_size/4 tokens instead of one per token, and the model still sees at
  least 3/4 of a window of context.
- Sampling: logits past id 50256 (PAD and the padding ids up to 50304) are never candidates;
  temperature 0 is greedy (argmax); otherwise top-k then softmax at the temperature, drawn with a
  torch.Generator private to the call, so concurrent requests never share or disturb an RNG and a
  seed reproduces a sample. Generation stops before EOT, which is never yielded.
- Text: GPT-2's byte-level BPE splits most Chinese characters across two or three tokens, so a
  token's bytes are often half a character. stream_text holds bytes back (an incremental UTF-8
  decoder) until they decode whole, so a U+FFFD never appears; bytes that can never form a
  character (a model can emit them) are dropped, not replaced.
- Chat: a question becomes encode(question) + [A_TOKEN] (the SFT row layout), and only the new
  tokens come back, so an answer never contains its question.
"""
import codecs

import torch

from config.train_config import A_TOKEN, EOT_TOKEN, N_VOCAB
from data_utils import get_encoding
from model import KVCache

KEEP_FRACTION = 0.75  # share of the window kept when the context is full and is re-prefilled


def encode_prompt(text, chat=False):
    """Token ids for a prompt; a question (chat=True, or text ending in '##') ends with A_TOKEN."""
    enc = get_encoding()
    stripped = text.rstrip()
    if chat or stripped.endswith('##'):
        if stripped.endswith('##'):
            stripped = stripped[:-2].rstrip()
        return enc.encode_ordinary(stripped) + [A_TOKEN]
    return enc.encode_ordinary(text)


def window(config):
    """(max tokens of context, tokens kept when it is full) for a model config."""
    max_ctx = config.block_size - 1
    return max_ctx, max(1, int(max_ctx * KEEP_FRACTION))


def sample_next(logits, temperature, top_k, generator):
    """One id from the last position's logits (1-D, any length >= N_VOCAB); only ids < N_VOCAB."""
    logits = logits[:N_VOCAB].float()
    if temperature == 0:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < N_VOCAB:
        logits, ids = torch.topk(logits, top_k)
    else:
        ids = None
    probs = torch.softmax(logits / temperature, dim=-1).cpu()  # drawn on the CPU: one generator kind everywhere
    choice = int(torch.multinomial(probs, 1, generator=generator))
    return int(ids[choice]) if ids is not None else choice


def generate_ids(model, prompt_ids, max_new_tokens=225, temperature=0.1, top_k=20, seed=None):
    """New token ids, one at a time, KV-cached; stops before EOT or after max_new_tokens. Bad arguments raise here."""
    if not prompt_ids:
        raise ValueError('empty prompt: give at least one token')
    if temperature < 0:
        raise ValueError(f'temperature must be >= 0, got {temperature}')
    if top_k is not None and top_k < 1:
        raise ValueError(f'top_k must be >= 1 (or None), got {top_k}')
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy, private to this call
    else:
        generator.manual_seed(seed)
    return _generate(model, list(prompt_ids), max_new_tokens, temperature, top_k, generator)


@torch.inference_mode()  # holds for every step of the generator, in whichever thread runs it
def _generate(model, tokens, max_new_tokens, temperature, top_k, generator):
    param = next(model.parameters())
    device = param.device
    cache = KVCache(model.config, 1, device, param.dtype)
    max_ctx, keep = window(model.config)
    start = len(tokens) - keep if len(tokens) > max_ctx else 0

    def prefill():
        cache.pos = 0
        idx = torch.tensor([tokens[start:]], dtype=torch.long, device=device)
        return model(idx, kv_cache=cache)[0][0, -1]

    logits = prefill()
    for _ in range(max_new_tokens):
        next_id = sample_next(logits, temperature, top_k, generator)
        if next_id == EOT_TOKEN:
            return
        yield next_id
        tokens.append(next_id)
        if len(tokens) - start > max_ctx:  # window full: restart it from the most recent `keep` tokens
            start = len(tokens) - keep
            logits = prefill()
        else:
            idx = torch.tensor([[next_id]], dtype=torch.long, device=device)
            logits = model(idx, kv_cache=cache)[0][0, -1]


def text_pieces(ids):
    """Whole-character text pieces of a stream of ids: bytes are held back until they decode whole."""
    enc = get_encoding()
    decoder = codecs.getincrementaldecoder('utf-8')(errors='ignore')  # keeps a partial character for later
    for i in ids:
        piece = decoder.decode(enc.decode_single_token_bytes(i))
        if piece:
            yield piece
    tail = decoder.decode(b'', final=True)  # a character cut off by max_new_tokens is dropped
    if tail:
        yield tail


def stream_text(model, prompt_ids, **kwargs):
    """Text pieces of the new tokens (see generate_ids for kwargs), each made of whole UTF-8 characters."""
    ids = generate_ids(model, prompt_ids, **kwargs)
    try:
        yield from text_pieces(ids)
    finally:
        ids.close()  # a caller that stops early stops the model too


def decode_text(ids):
    """What stream_text's pieces add up to for these ids: whole characters, invalid bytes dropped."""
    return get_encoding().decode_bytes(list(ids)).decode('utf-8', errors='ignore')


def generate_text(model, prompt, chat=False, **kwargs):
    """The whole continuation (or answer, for a question) of a prompt text."""
    return ''.join(stream_text(model, encode_prompt(prompt, chat=chat), **kwargs))

"""
The one generation engine: every script that makes text (sample.py, server.py, the arena, the
evaluations) calls it.

    from engine import Engine, Sampling, encode_prompt, generate_ids, stream_text, generate_text
    from checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint('out/sft', 'cpu')   # tok: the tokenizer it was trained with
    print(generate_text(model, tok, '中国的首都是哪里？', chat=True, temperature=0))
    for piece in stream_text(model, tok, encode_prompt(tok, '北京是'), Sampling(seed=1)):
        print(piece, end='', flush=True)
    engine = Engine(model, tok, slots=8)           # many requests at once, one forward per step for all
    request = engine.submit(encode_prompt(tok, '北京是'), Sampling())
    print(tok.decode(list(request.ids())))

Sampling settings are one value, `Sampling`, checked when it is made. Two sets of defaults, named here only:
- Sampling(): the demo's, for /generate, sample.py, the arena and Rouge-L: temperature 0.1 and top-k 20
  (near greedy), and OpenAI's presence and frequency penalties at 1.0, because without them a small model's
  near-greedy text loops (the main command measured it);
- Sampling.openai(): OpenAI's (temperature 1, every id, top_p 1, penalties 0), what the /v1 routes' clients
  expect, and the base of the keyword API (generate_ids(model, tok, ids, temperature=0) is plain greedy).

The loop itself knows token ids only: the tokenizer passed in gives the EOT it stops at and n_vocab, the
first id it may never emit; turning text into ids and back happens at the edges (encode_prompt, text_pieces).

How it works:
- Batch: rows that generate together. Slot i of a preallocated KV cache (model.KVCache: layers, slots,
  heads, block, head_dim) holds row i's keys and values; a row's prompt is prefilled alone into its slot
  (all but its last token), then every step feeds each row's newest token at that row's own position, all
  rows in one forward pass, each attending to its own positions only. No left padding: GPT-2's learned
  positions stay those of training, and no work is spent on pads. A row that ends hands its slot to the last
  row, so the active rows are always slots 0..B-1 and a step reads the cache as one slice, never a gather.
  One request alone (generate_ids) is a batch of one slot, stepped in the caller's thread.
- Engine: one thread per model owns a batch of `slots` rows; requests wait in a bounded queue and take a
  free slot at the next step; each one's ids come back through its own queue. A request that is cancelled
  (its client left, or a stop string ended it) leaves at the next step.
- Window: rows were trained as x = row[:-1], so the model knows positions 0..block_size-2 and the context
  stays within block_size-1 tokens. When the next token would not fit, the row restarts from the most recent
  KEEP_FRACTION (3/4) of that window, re-prefilled: one prefill per block_size/4 tokens instead of one per
  token, and the model still sees at least 3/4 of a window of context.
- Sampling, per row and for all rows at once, in this order: logits of ids >= n_vocab (PAD and the padding
  rows) are never candidates; the presence/frequency penalties (OpenAI's: logit -= presence * [count > 0] +
  frequency * count, counting the ids generated so far; the prompt does not count, as with OpenAI, so an
  answer may name its question's subject again: 羊侃的字是祖忻); a temperature below GREEDY_BELOW (0
  included) is greedy, the argmax; otherwise top-k (before the softmax), softmax at the temperature, then
  top-p (nucleus: the fewest most likely ids whose probability reaches top_p). The draw is torch.multinomial's
  own: argmax(p / q) with q exponential draws, one per candidate, from the row's private torch.Generator, so a
  seeded row draws exactly what it would draw alone, and concurrent requests never share an RNG.
  Generation stops before EOT, which is never yielded.
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
import dataclasses
import queue
import threading
from collections import deque
from dataclasses import dataclass

import torch

from model import KVCache

KEEP_FRACTION = 0.75  # share of the window kept when the context is full and is re-prefilled
# a temperature under this is greedy: logits / 1e-40 overflow float32 and softmax gives NaN; at 1e-5 a
# runner-up 0.001 below the top logit already has e^-100 of its chance, so nothing a user can see changes
GREEDY_BELOW = 1e-5
PENALTY_LIMIT = 2.0  # presence/frequency penalties lie in [-2, 2], OpenAI's range
MAX_SEED = 2 ** 32 - 1  # torch's CPU generator keeps 32 bits of a seed: larger ones would repeat smaller ones' samples
MAX_STOPS, MAX_STOP_CHARS = 4, 100  # OpenAI's 4 stop strings; longer than any answer of ours is a mistake


def _number(name, value):
    """value as a finite float, or ValueError naming the field (also for integers too large for a float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            value = float('inf')
        if value == value and abs(value) != float('inf'):
            return value
    raise ValueError(f'"{name}" must be a finite number, got {str(value)[:40]}')


@dataclass(frozen=True)
class Sampling:
    """How a request picks its tokens; the defaults are the demo's (see the module docstring)."""
    max_new_tokens: int = 225  # tokens generated at most
    temperature: float = 0.1  # 0 (or below GREEDY_BELOW) = greedy
    top_k: int | None = 20  # sample among the k most likely ids; None = all
    top_p: float = 1.0  # then among the fewest most likely ids whose probability reaches top_p; 1 = off
    presence_penalty: float = 1.0  # -2..2, subtracted once from the logit of every id already generated
    frequency_penalty: float = 1.0  # -2..2, subtracted per time an id was already generated
    seed: int | None = None  # 0..MAX_SEED reproduces a sample; None = fresh entropy
    stop: tuple = ()  # up to MAX_STOPS strings: the text ends before the first of them

    def __post_init__(self):
        """Raises ValueError naming the first bad field (the server answers it as a 400, the scripts print it)."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f'"max_new_tokens" must be an integer >= 1, got {str(self.max_new_tokens)[:40]}')
        for name in ('temperature', 'top_p', 'presence_penalty', 'frequency_penalty'):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        if self.temperature < 0:
            raise ValueError(f'"temperature" must be >= 0 (0 = greedy), got {self.temperature}')
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            raise ValueError(f'"top_k" must be >= 1 (or None for all ids), got {str(self.top_k)[:40]}')
        if not 0 <= self.top_p <= 1:
            raise ValueError(f'"top_p" must be between 0 and 1, got {self.top_p}')
        for name in ('presence_penalty', 'frequency_penalty'):
            if not -PENALTY_LIMIT <= getattr(self, name) <= PENALTY_LIMIT:
                raise ValueError(f'"{name}" must be between -{PENALTY_LIMIT:g} and {PENALTY_LIMIT:g}, '
                                 f'got {getattr(self, name)}')
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f'"seed" must be an integer between 0 and {MAX_SEED}, got {str(self.seed)[:40]}')
        stops = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not (isinstance(stops, (list, tuple)) and len(stops) <= MAX_STOPS
                and all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)):
            raise ValueError(f'"stop" must be a string or a list of up to {MAX_STOPS} strings of 1 to '
                             f'{MAX_STOP_CHARS} characters, got {str(self.stop)[:40]}')
        object.__setattr__(self, 'stop', tuple(stops))

    @classmethod
    def openai(cls, **changes):
        """OpenAI's defaults: every knob off, the model's own distribution at temperature 1."""
        return cls(**{**OPENAI, **changes})

    def but(self, **changes):
        return dataclasses.replace(self, **changes)


OPENAI = dict(temperature=1.0, top_k=None, top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0)


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


# ----------------------------------------------------------------------------- sampling

def penalty(counts, presence_penalty, frequency_penalty):
    """OpenAI's penalties, what is subtracted from each logit: presence * (count[j] > 0) + frequency * count[j]."""
    return presence_penalty * (counts > 0).to(counts.dtype) + frequency_penalty * counts


def penalize(logits, counts, presence_penalty, frequency_penalty):
    return logits - penalty(counts, presence_penalty, frequency_penalty)


def candidates(logits, temperature, top_k=None, top_p=1.0):
    """(ids, probs) of one row: the ids a token is drawn from (None: all, in id order) and their probabilities."""
    ids = None
    if top_k is not None and top_k < logits.numel():
        logits, ids = torch.topk(logits, top_k)  # sorted, most likely first
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        if ids is None:
            probs, ids = torch.sort(probs, descending=True)
        probs = nucleus(probs[None], torch.tensor([[top_p]]))[0]
    return ids, probs


def nucleus(probs, top_p):
    """Rows of probabilities sorted most likely first, cut to the fewest ids whose mass reaches each row's top_p."""
    keep = torch.cumsum(probs, -1) - probs < top_p  # mass of the more likely ids is still short of top_p
    keep[:, 0] = True  # at least one
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def sample_rows(logits, settings, generators, penalties=None):
    """
    One id per row: logits (B, n_vocab) of the candidates' ids (already cut to n_vocab), each row with its own
    Sampling, torch.Generator and penalties (B, n_vocab: what penalty() gives for its generated ids so far).
    Everything but the draws is done for all rows at once; a row draws the same exponentials, in the same order,
    as it would alone.
    """
    logits = logits.float()
    B, n_vocab = logits.shape
    device = logits.device
    if penalties is not None and any(s.presence_penalty or s.frequency_penalty for s in settings):
        logits = logits - penalties
    drawn = [b for b, s in enumerate(settings) if s.temperature >= GREEDY_BELOW]
    out = torch.argmax(logits, dim=-1).tolist() if len(drawn) < B else [None] * B  # greedy rows: the argmax
    if not drawn:
        return out
    sub = logits[drawn] if len(drawn) < B else logits
    ks = [settings[b].top_k if settings[b].top_k is not None and settings[b].top_k < n_vocab else n_vocab for b in drawn]
    top_p = [settings[b].top_p for b in drawn]
    # a row's candidates in the order its draws follow: top-k or top-p rows most likely first, others in id order
    sorted_row = [k < n_vocab or p < 1.0 for k, p in zip(ks, top_p)]
    kmax = max(ks)
    if kmax < n_vocab:
        vals, ids = torch.topk(sub, kmax)  # the top-k before the softmax: a softmax over k values, not n_vocab
    elif any(sorted_row):
        vals, ids = torch.sort(sub, descending=True)
    else:
        vals, ids = sub, None
    if min(ks) < kmax:  # rows with a smaller k: their extra columns are not candidates
        vals = vals.masked_fill(torch.arange(kmax, device=device)[None] >= torch.tensor(ks, device=device)[:, None],
                                float('-inf'))
    temperature = torch.tensor([settings[b].temperature for b in drawn], device=device)[:, None]
    probs = torch.softmax(vals / temperature, dim=-1)
    if min(top_p) < 1.0:  # rows at 1 keep every id (a cumulative sum may round to just under 1)
        cut = torch.tensor([p if p < 1.0 else float('inf') for p in top_p], device=device)[:, None]
        probs = nucleus(probs, cut)
    probs = probs.cpu()  # the draws are made on the CPU: one generator kind everywhere
    ids = ids.cpu() if ids is not None else None
    q = torch.ones_like(probs)
    for j, b in enumerate(drawn):
        draws = torch.empty(ks[j], dtype=probs.dtype).exponential_(1, generator=generators[b])
        if sorted_row[j] or ids is None:
            q[j, :ks[j]] = draws
        else:  # drawn in id order alone: each id keeps its own draw wherever the sort put it
            q[j] = draws[ids[j]]
    choice = torch.argmax(probs / q, dim=-1)
    picked = (ids.gather(1, choice[:, None])[:, 0] if ids is not None else choice).tolist()
    for j, b in enumerate(drawn):
        out[b] = picked[j]
    return out


def sample_next(logits, n_vocab, generator, temperature=1.0, top_k=None, top_p=1.0, counts=None,
                presence_penalty=0.0, frequency_penalty=0.0):
    """One id from one row of logits (1-D, any length >= n_vocab); only ids < n_vocab."""
    s = Sampling.openai(temperature=temperature, top_k=top_k, top_p=top_p, presence_penalty=presence_penalty,
                        frequency_penalty=frequency_penalty)
    penalties = None if counts is None else penalty(counts[None], presence_penalty, frequency_penalty)
    return sample_rows(logits[None, :n_vocab], [s], [generator], penalties)[0]


# ----------------------------------------------------------------------------- the batch

class Row:
    """One generation: its tokens so far (prompt included), window start, settings, RNG and where its ids go."""
    def __init__(self, prompt_ids, sampling):
        if not prompt_ids:
            raise ValueError('empty prompt: give at least one token')
        self.tokens, self.sampling, self.made = list(prompt_ids), sampling, 0
        self.start = 0
        self.generator = torch.Generator()
        if sampling.seed is None:
            self.generator.seed()  # fresh entropy, private to this row
        else:
            self.generator.manual_seed(sampling.seed)


class Batch:
    """Rows generating together in one preallocated KV cache; row i lives in slot i (see the module docstring)."""
    def __init__(self, model, eot, n_vocab, slots):
        param = next(model.parameters())
        self.model, self.eot, self.n_vocab, self.slots = model, eot, n_vocab, slots
        self.device = param.device
        self.cache = KVCache(model.config, slots, self.device, param.dtype)
        # per row: how often each id was generated, and the penalty it has earned (kept up to date, id by id,
        # so a step subtracts it in one pass instead of recomputing it over the whole vocabulary)
        self.counts = torch.zeros(slots, n_vocab, device=self.device)
        self.penalties = torch.zeros(slots, n_vocab, device=self.device)
        self.max_ctx, self.keep = window(model.config)
        self.rows = []

    def prefill(self, i):
        """Row i's context but its newest token into slot i; the next step feeds that token."""
        row = self.rows[i]
        context = row.tokens[row.start:-1]
        if context:
            self.model(torch.tensor([context], dtype=torch.long, device=self.device), kv_cache=self.cache.slot(i))

    def add(self, row):
        assert len(self.rows) < self.slots, 'no free slot'
        if len(row.tokens) > self.max_ctx:  # the prompt itself is cut to the window
            row.start = len(row.tokens) - self.keep
        self.rows.append(row)
        i = len(self.rows) - 1
        self.counts[i].zero_()
        self.penalties[i].zero_()
        self.prefill(i)

    def remove(self, i):
        """Frees row i's slot: the last row moves into it, so rows stay in slots 0..B-1."""
        last = len(self.rows) - 1
        if i != last:
            used = len(self.rows[last].tokens) - self.rows[last].start
            self.cache.k[:, i, :, :used] = self.cache.k[:, last, :, :used]
            self.cache.v[:, i, :, :used] = self.cache.v[:, last, :, :used]
            self.counts[i] = self.counts[last]
            self.penalties[i] = self.penalties[last]
            self.rows[i] = self.rows[last]
        self.rows.pop()

    def step(self):
        """One forward for every row; returns [(row, id)], id None for a row that ended (EOT or max_new_tokens), which has left."""
        rows = self.rows
        B = len(rows)
        idx = torch.tensor([[r.tokens[-1]] for r in rows], dtype=torch.long, device=self.device)
        if B == 1:  # one row: the plain cached step, no per-row positions or mask to build
            self.cache.positions, self.cache.pos = None, len(rows[0].tokens) - 1 - rows[0].start
        else:
            self.cache.at([len(r.tokens) - 1 - r.start for r in rows])
        logits = self.model.decode(idx, self.cache)[:, :self.n_vocab]
        ids = sample_rows(logits, [r.sampling for r in rows], [r.generator for r in rows], self.penalties[:B])
        out, done, kept = [], [], []
        for i, (row, next_id) in enumerate(zip(rows, ids)):
            if next_id == self.eot:
                out.append((row, None))
                done.append(i)
                continue
            out.append((row, next_id))
            kept.append(i)
            row.tokens.append(next_id)
            row.made += 1
            if row.made >= row.sampling.max_new_tokens:
                out.append((row, None))
                done.append(i)
        counted = [i for i in kept if rows[i].sampling.presence_penalty or rows[i].sampling.frequency_penalty]
        if counted:  # only the rows whose penalties read them
            where = (counted, [ids[i] for i in counted])
            self.counts[where] += 1
            presence = torch.tensor([rows[i].sampling.presence_penalty for i in counted], device=self.device)
            frequency = torch.tensor([rows[i].sampling.frequency_penalty for i in counted], device=self.device)
            self.penalties[where] = penalty(self.counts[where], presence, frequency)
        for i in reversed(done):
            self.remove(i)
        for i, row in enumerate(self.rows):
            if len(row.tokens) - row.start > self.max_ctx:  # window full: restart it from the most recent `keep` tokens
                row.start = len(row.tokens) - self.keep
                self.prefill(i)
        return out


def generate_ids(model, tok, prompt_ids, sampling=None, **changes):
    """
    New token ids, one at a time; stops before EOT or after max_new_tokens. sampling: a Sampling (default
    Sampling.openai()), changed by keyword (generate_ids(model, tok, ids, temperature=0)). Bad arguments raise here.
    """
    sampling = (sampling or Sampling.openai()).but(**changes) if changes else (sampling or Sampling.openai())
    return _alone(model, tok.eot, tok.n_vocab, Row(prompt_ids, sampling))


@torch.inference_mode()  # holds for every step of the generator, in whichever thread runs it
def _alone(model, eot, n_vocab, row):
    batch = Batch(model, eot, n_vocab, 1)
    batch.add(row)
    while True:
        for _, next_id in batch.step():
            if next_id is None:
                return
            yield next_id


def generate_many(model, tok, prompts, sampling=None, slots=16):
    """
    New ids for each of many prompts (lists of ids), `slots` rows stepped together in the caller's thread, a
    row joining as soon as one ends: what a batch job (an evaluation) wants. Each row's ids are those it gets alone.
    """
    sampling = sampling or Sampling.openai()
    rows = [Row(p, sampling) for p in prompts]
    out = {id(r): [] for r in rows}
    with torch.inference_mode():
        batch = Batch(model, tok.eot, tok.n_vocab, max(1, min(slots, len(rows))))
        todo = iter(rows)
        for row in todo:
            batch.add(row)
            if len(batch.rows) == batch.slots:
                break
        while batch.rows:
            for row, next_id in batch.step():
                if next_id is not None:
                    out[id(row)].append(next_id)
            while len(batch.rows) < batch.slots and (row := next(todo, None)) is not None:
                batch.add(row)
    return [out[id(r)] for r in rows]


# ----------------------------------------------------------------------------- the engine thread

class Busy(Exception):
    """The engine's waiting queue is full, or a request waited longer than it was willing to."""


class Request:
    """A submitted generation: read its ids with ids(); cancel() (or closing ids()) frees its slot at the next step."""
    def __init__(self, engine, row):
        self.engine, self.row = engine, row
        self.out = queue.Queue()  # ids, then None at the end (or the exception that ended the engine's step)
        self.started = threading.Event()
        self.cancelled = False

    def wait_started(self, timeout):
        """True once the request holds a slot; False (and cancelled) if that took longer than timeout seconds."""
        if self.started.wait(timeout):
            return True
        self.cancel()  # a slot taken just now is freed again at the next step
        return False

    def cancel(self):
        self.cancelled = True
        self.engine._forget(self)

    def ids(self):
        for group in self.groups():
            yield from group

    def groups(self):
        """Lists of the ids made since the last one was read (at least one each): a reader that falls behind the
        engine catches up in one piece of text rather than one per token, which is what a busy server needs."""
        try:
            while True:
                group = [self.out.get()]
                while group[-1] is not None and not isinstance(group[-1], BaseException):
                    try:
                        group.append(self.out.get_nowait())
                    except queue.Empty:
                        break
                end = group[-1] is None or isinstance(group[-1], BaseException)
                if group[:-1 if end else None]:
                    yield group[:-1 if end else None]
                if end:
                    if group[-1] is not None:
                        raise group[-1]
                    return
        finally:
            self.cancel()


class Engine:
    """
    One model's batched generation, run by its own thread: up to `slots` requests step together in one
    forward pass; up to `max_waiting` more wait for a slot, in order; past that, submit raises Busy.
    """
    def __init__(self, model, tok, slots=8, max_waiting=32):
        self.model, self.tok, self.slots, self.max_waiting = model, tok, slots, max_waiting
        self.batch = Batch(model, tok.eot, tok.n_vocab, slots)
        self.waiting = deque()
        self.lock = threading.Condition()
        self.steps = 0  # forward passes so far (the benchmarks and tests read it)
        self.thread = threading.Thread(target=self._loop, daemon=True, name='engine')
        self.thread.start()

    @property
    def active(self):
        return len(self.batch.rows)

    @property
    def queued(self):
        return len(self.waiting)

    def submit(self, prompt_ids, sampling):
        """A Request that takes a slot as soon as one is free; Busy if max_waiting requests already wait."""
        request = Request(self, Row(prompt_ids, sampling))
        with self.lock:
            if len(self.waiting) >= self.max_waiting:
                raise Busy(f'{self.slots} generations are running and {len(self.waiting)} are waiting')
            self.waiting.append(request)
            self.lock.notify()
        return request

    def _forget(self, request):
        with self.lock:
            if request in self.waiting:
                self.waiting.remove(request)
            self.lock.notify()  # an idle engine wakes to free the slot now

    @torch.inference_mode()
    def _loop(self):
        batch = self.batch
        requests = {}  # id(row) -> its Request
        while True:
            with self.lock:
                while not batch.rows and not self.waiting:
                    self.lock.wait()
                new = []
                while self.waiting and len(batch.rows) + len(new) < self.slots:
                    new.append(self.waiting.popleft())
            try:
                for request in new:
                    if not request.cancelled:
                        batch.add(request.row)
                        requests[id(request.row)] = request
                        request.started.set()
                for i in reversed(range(len(batch.rows))):  # clients that left, streams cut by a stop string
                    request = requests[id(batch.rows[i])]
                    if request.cancelled:
                        batch.remove(i)
                        del requests[id(request.row)]
                        request.out.put(None)
                if not batch.rows:
                    continue
                for row, next_id in batch.step():
                    requests[id(row)].out.put(next_id)
                    if next_id is None:
                        del requests[id(row)]
                self.steps += 1
            except Exception as e:  # noqa: BLE001 - every request in flight learns of it; the engine carries on
                for request in list(requests.values()) + [r for r in new if r.started.is_set()]:
                    request.out.put(e)
                batch.rows.clear()
                requests.clear()


# ----------------------------------------------------------------------------- text

def text_pieces(tok, ids):
    """Whole-character text pieces of a stream of ids (or lists of ids): bytes are held back until they decode whole."""
    decoder = codecs.getincrementaldecoder('utf-8')(errors='ignore')  # keeps a partial character for later
    for i in ids:  # an id, or a list of ids to turn into one piece
        piece = decoder.decode(b''.join(map(tok.token_bytes, i)) if isinstance(i, list) else tok.token_bytes(i))
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


def stream_text(model, tok, prompt_ids, sampling=None, **changes):
    """Text pieces of the new tokens (see generate_ids), each made of whole UTF-8 characters, ending before a stop."""
    sampling = (sampling or Sampling.openai()).but(**changes) if changes else (sampling or Sampling.openai())
    return pieces_of(tok, generate_ids(model, tok, prompt_ids, sampling), sampling.stop)


def pieces_of(tok, ids, stops=(), state=None):
    """Text pieces of a stream of ids, cut before the first stop string; closing them closes the ids (the model stops)."""
    pieces = text_pieces(tok, ids)
    try:
        yield from (p for p in (until_stop(pieces, stops, {} if state is None else state) if stops else pieces) if p)
    finally:
        ids.close()


def generate_text(model, tok, prompt, sampling=None, chat=False, **changes):
    """The whole continuation (or answer, for a question) of a prompt text."""
    return ''.join(stream_text(model, tok, encode_prompt(tok, prompt, chat=chat), sampling, **changes))

"""The batched engine: rows stepped together give each row's solo ids; the engine thread's slots, queue and cancels."""
import random
import time

import pytest
import torch

from conftest import GPT2, random_model
from engine import Batch, Busy, Engine, Row, Sampling, generate_ids, pieces_of


pytestmark = pytest.mark.usefixtures('one_thread')


def run_batch(model, jobs, slots):
    """jobs: (join_step, prompt, Sampling); rows join at their step (or when a slot frees). Returns each job's ids."""
    batch = Batch(model, GPT2.eot, GPT2.n_vocab, slots)
    pending = sorted(range(len(jobs)), key=lambda j: jobs[j][0])
    rows, out, step = {}, {j: [] for j in range(len(jobs))}, 0
    with torch.inference_mode():
        while pending or batch.rows:
            while pending and jobs[pending[0]][0] <= step and len(batch.rows) < slots:
                j = pending.pop(0)
                row = Row(jobs[j][1], jobs[j][2])
                rows[id(row)] = j
                batch.add(row)
            if batch.rows:
                for row, next_id in batch.step():
                    if next_id is not None:
                        out[rows[id(row)]].append(next_id)
            step += 1
    return [out[j] for j in range(len(jobs))]


def test_greedy_50_prompts_joining_at_different_steps_equal_each_alone():
    """float64 weights: batched and single-row matmuls may differ in the last bits, never in a float64 argmax."""
    model, rng = random_model(seed=11), random.Random(0)
    greedy = Sampling.openai(temperature=0, max_new_tokens=45)
    jobs = [(rng.randrange(0, 60), [rng.randrange(50000) for _ in range(rng.randrange(1, 40))],
             greedy.but(max_new_tokens=rng.randrange(5, 45))) for _ in range(50)]
    together = run_batch(model, jobs, slots=8)
    alone = [list(generate_ids(model, GPT2, prompt, s)) for _, prompt, s in jobs]
    assert together == alone
    assert sum(len(a) for a in alone) > 800 and max(len(p) for _, p, _ in jobs) > 31  # past the window (block 32)


def test_seeded_sampling_same_alone_and_in_a_batch():
    model = random_model(seed=12)
    jobs = [(i, [100 + i, 200, 300], Sampling.openai(max_new_tokens=40, seed=i, temperature=1.0, top_k=[None, 50, 5][i % 3]))
            for i in range(9)]
    together = run_batch(model, jobs, slots=4)
    assert together == [list(generate_ids(model, GPT2, p, s)) for _, p, s in jobs]
    assert together[0] != run_batch(model, [(0, jobs[0][1], jobs[0][2].but(seed=99))], 1)[0]  # the seed is honoured


def test_penalties_and_top_p_per_row_match_their_solo_runs():
    model = random_model(seed=8)
    prompt = [464, 3290, 318]
    settings = [Sampling.openai(temperature=0, max_new_tokens=40, presence_penalty=1.5),
                Sampling.openai(temperature=0, max_new_tokens=40, frequency_penalty=-0.5),
                Sampling.openai(temperature=1.0, max_new_tokens=40, top_p=0.3, seed=3),
                Sampling.openai(temperature=0.7, max_new_tokens=40, top_k=20, top_p=0.8, seed=4, frequency_penalty=1.0),
                Sampling.openai(temperature=0, max_new_tokens=40)]
    together = run_batch(model, [(0, prompt, s) for s in settings], slots=5)
    alone = [list(generate_ids(model, GPT2, prompt, s)) for s in settings]
    assert together == alone
    assert len({tuple(a) for a in alone}) == 5  # each setting changed the ids, so the comparison means something


def endless_engine(slots, max_waiting=4):
    model = random_model(seed=13, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight[GPT2.eot] = -100.0  # never EOT
    return model, Engine(model, GPT2, slots=slots, max_waiting=max_waiting)


def wait_for(condition, seconds=10):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, 'timed out'
        time.sleep(0.01)


def test_engine_rows_match_solo_and_a_cancelled_row_frees_its_slot_at_once():
    model, engine = endless_engine(slots=2)
    s = Sampling.openai(temperature=0, max_new_tokens=2000)
    a, b = engine.submit([1, 2, 3], s), engine.submit([4, 5], s)
    assert a.wait_started(10) and b.wait_started(10)
    c = engine.submit([6], s.but(max_new_tokens=30))
    assert not c.wait_started(0.3) and engine.queued == 0  # both slots held: it waited, gave up, left the queue
    d = engine.submit([6], s.but(max_new_tokens=30))
    ids_a = a.ids()
    first = [next(ids_a) for _ in range(3)]
    ids_a.close()  # the client left
    assert d.wait_started(10) and engine.active == 2  # it took a's slot at the next step
    assert first + list(d.ids()) == list(generate_ids(model, GPT2, [1, 2, 3], s.but(max_new_tokens=3))) + \
        list(generate_ids(model, GPT2, [6], s.but(max_new_tokens=30)))
    b.cancel()
    wait_for(lambda: engine.active == 0)


def test_full_queue_refuses_at_once():
    _, engine = endless_engine(slots=1, max_waiting=2)
    s = Sampling.openai(temperature=0, max_new_tokens=100000)
    running = engine.submit([1], s)
    assert running.wait_started(10)
    waiting = [engine.submit([2], s), engine.submit([3], s)]
    with pytest.raises(Busy):
        engine.submit([4], s)
    assert engine.queued == 2
    for r in [running, *waiting]:
        r.cancel()
    wait_for(lambda: engine.active == 0 and engine.queued == 0)


def test_a_row_ended_by_a_stop_string_leaves_and_the_others_go_on():
    model, engine = endless_engine(slots=2)
    s = Sampling.openai(temperature=0, max_new_tokens=60)
    alone = list(generate_ids(model, GPT2, [7, 8], s))
    text = GPT2.decode(alone)
    stop = text[len(text) // 4:len(text) // 4 + 2]
    long_one = engine.submit([9, 10], s.but(max_new_tokens=400))
    stopped = engine.submit([7, 8], s.but(stop=(stop,)))
    assert long_one.wait_started(10) and stopped.wait_started(10)
    state = {}
    got = ''.join(pieces_of(GPT2, stopped.ids(), (stop,), state))
    assert got == text[:text.index(stop)] and state['stopped']
    wait_for(lambda: engine.active == 1)  # its slot is free while the other still runs
    steps = engine.steps
    assert list(long_one.ids()) == list(generate_ids(model, GPT2, [9, 10], s.but(max_new_tokens=400)))
    assert engine.steps - steps < 400  # the stopped row did not run on to its max_new_tokens first


def test_generate_many_gives_each_prompt_its_solo_ids():
    from engine import generate_many
    model, rng = random_model(seed=14), random.Random(1)
    prompts = [[rng.randrange(50000) for _ in range(rng.randrange(1, 20))] for _ in range(11)]
    s = Sampling(temperature=0, max_new_tokens=25)  # the demo's penalties on, greedy: what Rouge-L runs
    assert generate_many(model, GPT2, prompts, s, slots=4) == [list(generate_ids(model, GPT2, p, s)) for p in prompts]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_decode_is_forward_bit_for_bit(dtype):
    """model.decode, the engine's step, is forward's computation without nn.Module's overhead: the same bits."""
    from model import KVCache
    model = random_model(seed=15, dtype=dtype)
    a, b = KVCache(model.config, 3, 'cpu', dtype), KVCache(model.config, 3, 'cpu', dtype)
    with torch.no_grad():
        for cache in (a, b):
            for i, n in enumerate((5, 9, 2)):
                model(torch.arange(100 + i, 100 + i + n)[None], kv_cache=cache.slot(i))
        idx = torch.tensor([[7], [8], [9]])
        want = model(idx, kv_cache=a.at([5, 9, 2]))[0][:, -1]
        assert torch.equal(model.decode(idx, b.at([5, 9, 2])), want)
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
        one_a, one_b = a.slot(1), b.slot(1)
        one_a.pos = one_b.pos = 10
        assert torch.equal(model.decode(idx[:1], one_b), model(idx[:1], kv_cache=one_a)[0][:, -1])
        assert one_a.pos == one_b.pos == 11


def test_the_arenas_names_of_one_checkpoint_share_one_engine_and_answer_in_the_same_steps(tiny_checkpoint, tmp_path):
    """Side by side, two contestants that are one checkpoint (a folder, a link to its ckpt.pt) are one engine: both
    answers step together, one forward pass per token for the pair, and each is the text it gets alone."""
    import os

    import contestants
    os.symlink(tiny_checkpoint, tmp_path / 'link')
    models = contestants.load_models([{'name': 'a', 'checkpoint': tiny_checkpoint},
                                      {'name': 'b', 'checkpoint': str(tmp_path / 'link' / 'ckpt.pt')}], 'cpu')
    assert models['a'] is models['b']
    shared = models['a']
    params = {'max_new_tokens': 40, 'temperature': 0, 'presence_penalty': 0, 'frequency_penalty': 0}
    alone = [list(generate_ids(shared.model, shared.tok, shared.tok.encode(p), Sampling(**params)))
             for p in ('长江', '熊猫')]
    streams = [contestants.stream_local(shared, p, params) for p in ('长江', '熊猫')]  # both submitted now
    texts = [''.join(s) for s in streams]
    assert texts == [shared.tok.decode(ids) for ids in alone]
    assert len(alone[0]) > 5 and len(alone[1]) > 5
    assert shared.steps <= max(map(len, alone)) + 2 < len(alone[0]) + len(alone[1])

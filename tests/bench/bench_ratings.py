"""
The class arena's figures. (1) The leaderboard from the votes store: 100,000 synthetic votes among 30 models,
Bradley-Terry with 200 bootstrap rounds, online Elo and the matrices, read from the SQLite store as the page
does; goal under 5 s on the CPU; also how well the fit recovers the ratings the votes were drawn from, and the
same board from a votes.jsonl. (2) A vote written and acknowledged (votes.add_vote's transaction, as the page's
vote does) with 30 voters writing at once, each in its own thread and its own connection, as 30 arena workers or
processes sharing the file would: goal under 50 ms at the 99th percentile. (3) Peak memory of the fit for
100 and 300 models (the pair table: it grows with the pairs that met).

    python tests/bench/bench_ratings.py
    python tests/bench/bench_ratings.py --votes=50000 --models=40 --rounds=1000 --voters=30 --per_voter=100
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import votes as store  # noqa: E402
from ratings import leaderboard  # noqa: E402


def synthetic_votes(path, n_votes, names, seed=0, tie_rate=0.15, leaked_rate=0.0, spread=300.0):
    """
    Writes n_votes arena-format votes among `names` (or that many made-up names) whose true Elo-scale ratings
    are evenly spread around 1000, the first best; returns {name: true rating}.
    """
    rng = np.random.default_rng(seed)
    names = [f'模型{i:02d}' for i in range(names)] if isinstance(names, int) else list(names)
    n_models = len(names)
    true = {n: 1000.0 + spread * (0.5 - i / max(1, n_models - 1)) for i, n in enumerate(names)}
    with open(path, 'w', encoding='utf-8') as f:
        for k in range(n_votes):
            a, b = rng.choice(n_models, 2, replace=False)
            p = 1 / (1 + 10 ** ((true[names[b]] - true[names[a]]) / 400))
            tie = tie_rate * 2 * min(p, 1 - p)  # ties keep A's expected score at p, as BT's tie-as-half assumes
            u = rng.random()
            vote = 'tie' if u < tie else 'A' if u < tie + p - tie / 2 else 'B'
            f.write(json.dumps({'battle_id': f'b{k}', 'time': '2026-01-01T00:00:00+00:00', 'prompt': '北京是', 'params': {},
                                'model_a': names[a], 'model_b': names[b], 'answer_a': '…', 'answer_b': '…', 'vote': vote,
                                'leaked': bool(rng.random() < leaked_rate)}, ensure_ascii=False) + '\n')
    return true


def write_latency(path, voters, per_voter):
    """Seconds each add_vote took, with `voters` threads writing at once, each through its own connection."""
    times, lock, start = [], threading.Lock(), threading.Barrier(voters)

    def voter(k):
        db = store.connect(path)
        start.wait()
        mine = []
        for n in range(per_voter):
            record = {'battle_id': f'w{k}-{n}', 'time': '2026-01-01T00:00:00+00:00', 'model_a': '甲', 'model_b': '乙',
                      'vote': 'A', 'voter': f'v{k}', 'prompt': '北京是', 'answer_a': '首都。' * 50, 'answer_b': '城市。' * 50}
            t0 = time.perf_counter()
            assert store.add_vote(db, record)
            mine.append(time.perf_counter() - t0)
            time.sleep(0.005)  # a person does not vote back to back
        db.close()
        with lock:
            times.extend(mine)
    threads = [threading.Thread(target=voter, args=(k,)) for k in range(voters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(times)


def fit_memory(path, rounds):
    """(seconds, peak MiB) of the leaderboard of a votes file, numpy's allocations included."""
    tracemalloc.start()
    t0 = time.perf_counter()
    leaderboard(path, rounds=rounds, min_battles=1)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2 ** 20


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--votes', type=int, default=100_000)
    parser.add_argument('--models', type=int, default=30)
    parser.add_argument('--rounds', type=int, default=200)
    parser.add_argument('--voters', type=int, default=30)
    parser.add_argument('--per_voter', type=int, default=50)
    args = parser.parse_args()
    print(f'load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (timings on a busy machine are upper bounds)')
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, db_path = os.path.join(tmp, 'votes.jsonl'), os.path.join(tmp, 'arena.db')
        true = synthetic_votes(jsonl, args.votes, args.models)
        db = store.connect(db_path)
        store.import_jsonl(db, jsonl)
        db.close()
        t0 = time.perf_counter()
        board = leaderboard(db_path, rounds=args.rounds)
        t1 = time.perf_counter()
        from_file = leaderboard(jsonl, rounds=args.rounds)
        t2 = time.perf_counter()
        latency = write_latency(os.path.join(tmp, 'writes.db'), args.voters, args.per_voter)
        memory = []
        for models in (100, 300):
            path = os.path.join(tmp, f'm{models}.jsonl')
            synthetic_votes(path, 20_000, models, seed=1)
            memory.append((models, *fit_memory(path, args.rounds)))
    fitted = {r['model']: r['bt'] for r in board['rows']}
    error = np.abs(np.array([fitted[n] - true[n] for n in true]))
    widths = [r['bt_high'] - r['bt_low'] for r in board['rows'] if r['bt_low'] is not None]
    print(f'(1) {args.votes} votes, {args.models} models, {args.rounds} bootstrap rounds')
    print(f'  leaderboard from the store (.db)   {t1 - t0:6.3f} s  (read + BT + bootstrap + Elo + counts; goal < 5 s)')
    print(f'  leaderboard from a votes.jsonl     {t2 - t1:6.3f} s  (same board: {from_file["rows"] == board["rows"]})')
    print(f'  BT vs the true ratings: mean |error| {error.mean():.1f}, max {error.max():.1f} points; '
          f'median 95% interval width {np.median(widths):.1f} points')
    p50, p99, worst = np.percentile(latency, [50, 99]).tolist() + [latency.max()]
    print(f'(2) {len(latency)} votes by {args.voters} voters at once: add_vote median {1000 * p50:.1f} ms, '
          f'99th percentile {1000 * p99:.1f} ms, max {1000 * worst:.1f} ms (goal < 50 ms)')
    for models, seconds, peak in memory:
        print(f'(3) 20,000 votes among {models} models, {args.rounds} rounds: {seconds:.2f} s, peak {peak:.0f} MiB')
    ok = t1 - t0 < 5 and p99 < 0.05
    print('PASS' if ok else 'SLOWER THAN A GOAL')

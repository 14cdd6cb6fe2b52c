"""
How long the leaderboard takes on a large votes file: 10,000 synthetic votes among 20 models, Bradley-Terry
with 200 bootstrap rounds, online Elo and the matrices, read from the file as the page does. Goal: under 5 s
on the CPU. Also prints how well the fit recovers the ratings the votes were drawn from.

    python tests/bench/bench_ratings.py
    python tests/bench/bench_ratings.py --votes=50000 --models=40 --rounds=1000
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ratings import bootstrap_bt, fit_bt, leaderboard, pair_matrices, read_votes, to_elo_scale  # noqa: E402


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


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--votes', type=int, default=10_000)
    parser.add_argument('--models', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=200)
    args = parser.parse_args()
    print(f'load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (timings on a busy machine are upper bounds)')
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'votes.jsonl')
        true = synthetic_votes(path, args.votes, args.models)
        t0 = time.perf_counter()
        found, _ = read_votes(path)
        t1 = time.perf_counter()
        battles = [(a, b, s) for a, b, s, _ in found]
        names = sorted(true)
        wins, games = pair_matrices(battles, names)
        bt = to_elo_scale(fit_bt(wins, games), names)
        t2 = time.perf_counter()
        bootstrap_bt(battles, names, args.rounds)
        t3 = time.perf_counter()
        board = leaderboard(path, rounds=args.rounds)
        t4 = time.perf_counter()
    error = np.abs(bt - np.array([true[n] for n in names]))
    print(f'{args.votes} votes, {args.models} models, {args.rounds} bootstrap rounds')
    print(f'  read the votes file   {t1 - t0:6.3f} s')
    print(f'  fit Bradley-Terry     {t2 - t1:6.3f} s')
    print(f'  bootstrap             {t3 - t2:6.3f} s')
    print(f'  whole leaderboard     {t4 - t3:6.3f} s  (read + BT + bootstrap + Elo + counts; goal < 5 s)')
    widths = [r['bt_high'] - r['bt_low'] for r in board['rows']]
    print(f'  BT vs the true ratings: mean |error| {error.mean():.1f}, max {error.max():.1f} points; '
          f'median 95% interval width {np.median(widths):.1f} points')
    print('PASS' if t4 - t3 < 5 else 'SLOWER THAN THE 5 s GOAL')

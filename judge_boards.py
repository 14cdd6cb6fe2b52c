"""
The votes store's leaderboards split by who voted: people, a judge (judge.py) and both together, each
ratings.leaderboard's board (Bradley-Terry, intervals, Rank (UB)); the three side by side as a table, and what the
judge says about checkpoints of one training run, each against the one before it.
"""
import json
import os
import tempfile

import ratings
import votes as store


def boards_by_voter(db, judge_kind=None, **options):
    """
    {'human': board, 'judge': board, 'combined': board}: ratings.leaderboard's board (see ratings.py) of the
    store's human votes, of the judge's (judge_kind, e.g. 'judge:qwen2.5-7b-instruct'; None: every judge's) and
    of both together. db: a votes.connect() connection or a store's path; options go to ratings.leaderboard
    (names, anchor, rounds, min_battles, include_leaked, seed).
    """
    db = store.connect(db) if isinstance(db, str) else db
    groups = {'human': [], 'judge': [], 'combined': []}
    for r in store.records(db):
        kind = r.get('voter_kind', 'human')
        if kind == 'human':
            groups['human'].append(r)
        elif kind == judge_kind or judge_kind is None and kind.startswith('judge:'):
            groups['judge'].append(r)
        else:
            continue
        groups['combined'].append(r)
    boards = {}
    with tempfile.TemporaryDirectory() as folder:  # ratings reads a votes file: each group is written as one
        for name, records in groups.items():
            path = os.path.join(folder, f'{name}.jsonl')
            with open(path, 'w', encoding='utf-8') as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in records)
            boards[name] = ratings.leaderboard(path, **options)
    return boards


def side_by_side(boards, judge_kind=None):
    """The three rankings as one Markdown table: a row per place, each cell model, BT, 95% interval and battles."""
    titles = {'human': '人工投票', 'judge': judge_kind or '裁判', 'combined': '合计'}
    def cell(r):
        interval = f" [{r['bt_low']:.0f}, {r['bt_high']:.0f}]" if r['bt_low'] is not None else ''
        return f"{r['model']} {r['bt']:.0f}{interval} ({r['battles']})"
    columns = [[cell(r) for r in boards[k]['rows'] if r['battles']] for k in titles]
    lines = ['| # | ' + ' | '.join(f"{t}（{boards[k]['counted']} 票）" for k, t in titles.items()) + ' |',
             '|---|---|---|---|']
    for i in range(max(map(len, columns), default=0)):
        lines.append(f'| {i + 1} | ' + ' | '.join(c[i] if i < len(c) else '' for c in columns) + ' |')
    return '\n'.join(lines)


def checkpoint_summary(board, names):
    """Checkpoints of one run (in training order) as the judge ranks them, and each one against the one before it."""
    ranked = sorted((r for r in board['rows'] if r['model'] in names and r['bt'] is not None), key=lambda r: -r['bt'])
    lines = ['checkpoints by the judge: ' + (' > '.join(f"{r['model']} ({r['bt']:.0f})" for r in ranked)
                                             or 'none yet (no battle of them has a verdict)')]
    index = {n: i for i, n in enumerate(board['names'])}
    for before, after in zip(names, names[1:]):
        if before in index and after in index and board['games'][index[after], index[before]]:
            won, games = board['wins'][index[after], index[before]], int(board['games'][index[after], index[before]])
            lines.append(f'{after} against {before}: {won:g} of {games} (a tie is half; {won / games:.0%})')
    return '\n'.join(lines)

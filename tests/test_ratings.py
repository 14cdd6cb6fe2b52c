"""
ratings.py: votes read and checked line by line, Bradley-Terry checked against the MLE's first-order
conditions and closed forms, bootstrap intervals, Rank (UB), online Elo by hand, the matrices, the command line.
"""
import io
import json
import random
import warnings

import numpy as np
import pytest

from conftest import run_script
from ratings import (BT_PRIOR, compute_elo, fit_bt, leaderboard, matrix_figures, pair_matrices, pair_table, rank_ub,
                     read_votes, table, to_elo_scale)


def expected(ra, rb):
    return 1 / (1 + 10 ** ((rb - ra) / 400))


def write_votes(path, rows, **extra):
    """rows: (model_a, model_b, vote) or (model_a, model_b, vote, leaked); each line gets its own battle id."""
    with open(path, 'w', encoding='utf-8') as f:
        for k, (a, b, vote, *leaked) in enumerate(rows):
            f.write(json.dumps({'battle_id': f'b{k}', 'time': '2026-01-01T00:00:00+00:00', 'prompt': 'p', 'params': {},
                                'model_a': a, 'model_b': b, 'answer_a': '..', 'answer_b': '..', 'vote': vote,
                                'leaked': bool(leaked and leaked[0]), **extra}, ensure_ascii=False) + '\n')
    return str(path)


# x-y: x 3 wins, y 1, one tie; y-z: y 2, z 1; z-x: z 1, x 2, one "both bad". Every model won and lost, so the MLE exists.
HAND_MADE = ([('x', 'y', 'A')] * 2 + [('y', 'x', 'B'), ('y', 'x', 'A'), ('x', 'y', 'tie')] + [('y', 'z', 'A')] * 2 +
             [('z', 'y', 'A'), ('z', 'x', 'A'), ('x', 'z', 'A'), ('z', 'x', 'B'), ('z', 'x', 'both_bad')])
OBSERVED = {'x': 3 + 0.5 + 2 + 0.5, 'y': 1 + 0.5 + 2, 'z': 1 + 1 + 0.5}  # wins counted by hand, a tie half each
GAMES = {('x', 'y'): 5, ('y', 'z'): 3, ('x', 'z'): 4}


def games(a, b):
    return GAMES.get((a, b)) or GAMES.get((b, a), 0)


def test_bt_meets_the_mle_first_order_conditions(tmp_path):
    found, bad = read_votes(write_votes(tmp_path / 'votes.jsonl', HAND_MADE))
    assert bad == [] and len(found) == 12
    names = ['x', 'y', 'z']
    wins, counts = pair_matrices([v[:3] for v in found], names)
    assert wins.sum(1).tolist() == [OBSERVED[n] for n in names] and counts[0, 1] == 5 and counts[1, 2] == 3
    # plain MLE: for each model, the wins the fitted ratings expect equal the wins it had
    table_ = pair_table([v[:3] for v in found], names)
    r = dict(zip(names, to_elo_scale(fit_bt(*table_, 3, prior=0), names)))
    for i in names:
        wins_expected = sum(games(i, j) * expected(r[i], r[j]) for j in names if j != i)
        assert wins_expected == pytest.approx(OBSERVED[i], abs=1e-6), (i, wins_expected)
    assert sum(r.values()) == pytest.approx(3000, abs=1e-9) and r['x'] > r['y'] > r['z']
    # the default adds BT_PRIOR ties against strength 0 per model: the same conditions with those virtual games
    theta = fit_bt(*table_, 3)
    for k, i in enumerate(names):
        p = [1 / (1 + np.exp(theta[m] - theta[k])) for m in range(3)]
        wins_expected = sum(games(i, j) * p[m] for m, j in enumerate(names) if j != i) + BT_PRIOR / (1 + np.exp(-theta[k]))
        assert wins_expected == pytest.approx(OBSERVED[i] + BT_PRIOR / 2, abs=1e-6)
    # which moves the ratings by well under a point here
    board = leaderboard(str(tmp_path / 'votes.jsonl'), rounds=50, min_battles=1)
    assert {row['model']: row['bt'] for row in board['rows']} == pytest.approx(r, abs=1.0)


def test_bt_closed_forms_and_ties(tmp_path):
    # two models, a wins 3 of 4: P = 3/4 = 1 / (1 + 10^(-d/400)), d = 400 log10(3)
    r = to_elo_scale(fit_bt(*pair_table([('a', 'b', 1.0)] * 3 + [('b', 'a', 1.0)], ['a', 'b']), 2, prior=0), ['a', 'b'])
    assert r[0] - r[1] == pytest.approx(400 * np.log10(3), abs=1e-6) and r.mean() == pytest.approx(1000)
    # a tie is half a win for each side: win + 2 ties scores like 2 wins + 1 loss
    one = leaderboard(write_votes(tmp_path / 'ties.jsonl', [('a', 'b', 'A'), ('a', 'b', 'tie'), ('b', 'a', 'both_bad')]))
    two = leaderboard(write_votes(tmp_path / 'wins.jsonl', [('a', 'b', 'A'), ('a', 'b', 'A'), ('b', 'a', 'A')]))
    assert [(x['model'], x['bt']) for x in one['rows']] == [(x['model'], x['bt']) for x in two['rows']]
    assert one['rows'][0]['bt'] - one['rows'][1]['bt'] == pytest.approx(400 * np.log10(2), abs=6)  # plus the weak prior
    assert [x['ties'] for x in one['rows']] == [2, 2] and one['rows'][0]['wins'] == 1 and one['rows'][1]['losses'] == 1
    # only ties: both exactly at the mean
    rows = leaderboard(write_votes(tmp_path / 'draws.jsonl', [('a', 'b', 'tie')] * 5))['rows']
    assert [x['bt'] for x in rows] == [1000.0, 1000.0] and rows[0]['win_rate'] == 0.0
    # a perfect record stays finite (the prior); the plain MLE has none
    rows = leaderboard(write_votes(tmp_path / 'perfect.jsonl', [('a', 'b', 'A')] * 5))['rows']
    assert 1200 < rows[0]['bt'] < 1700 and rows[0]['bt'] + rows[1]['bt'] == pytest.approx(2000, abs=0.02)


def test_order_of_votes_changes_elo_but_not_bt(tmp_path):
    rows = HAND_MADE * 3
    board = leaderboard(write_votes(tmp_path / 'a.jsonl', rows), rounds=100)
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    other = leaderboard(write_votes(tmp_path / 'b.jsonl', shuffled), rounds=100)
    pick = lambda b, key: {r['model']: r[key] for r in b['rows']}  # noqa: E731
    assert pick(board, 'bt') == pick(other, 'bt') and pick(board, 'battles') == pick(other, 'battles')
    assert pick(board, 'bt_low') == pytest.approx(pick(other, 'bt_low'), abs=0.02)  # same counts, same resamples
    assert pick(board, 'elo') != pick(other, 'elo')  # online Elo is a replay: order matters (FastChat #3065)


def test_anchor_pins_one_model_and_keeps_the_differences(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', HAND_MADE)
    mean, pinned = leaderboard(path, min_battles=1), leaderboard(path, anchor='y', min_battles=1)
    m, p = ({r['model']: r for r in b['rows']} for b in (mean, pinned))
    assert p['y']['bt'] == 1000.0 and p['y']['bt_low'] == p['y']['bt_high'] == 1000.0
    assert p['x']['bt'] - p['z']['bt'] == pytest.approx(m['x']['bt'] - m['z']['bt'], abs=0.02)
    with pytest.raises(ValueError, match="--anchor='w' has no counted votes"):
        leaderboard(path, anchor='w')


def test_rank_ub_on_a_constructed_case(tmp_path):
    # P [1100, 1200], Q [1050, 1150], R [900, 1000], S [800, 890]: P and Q overlap, R is below both, S below all
    assert rank_ub([1100, 1050, 900, 800], [1200, 1150, 1000, 890]).tolist() == [1, 1, 3, 4]
    assert rank_ub([990, 995], [1005, 1010]).tolist() == [1, 1]
    # on a board: three clearly ordered models and one that ties with the best
    rows = ([('a', 'c', 'A')] * 40 + [('c', 'a', 'A')] * 2 + [('b', 'c', 'A')] * 40 + [('c', 'b', 'A')] * 3 +
            [('a', 'b', 'tie')] * 30 + [('c', 'd', 'A')] * 40 + [('d', 'c', 'A')] * 2)
    board = leaderboard(write_votes(tmp_path / 'votes.jsonl', rows), rounds=200)
    assert [(r['model'], r['rank_ub']) for r in board['rows']] == [('a', 1), ('b', 1), ('c', 3), ('d', 4)]
    for r in board['rows']:
        assert r['bt_low'] < r['bt'] < r['bt_high']


def test_intervals_need_enough_battles_and_narrow_with_more_votes(tmp_path):
    board = leaderboard(write_votes(tmp_path / 'two.jsonl', [('a', 'b', 'A'), ('a', 'b', 'A')]), names=['a', 'b', 'new'])
    rows = {r['model']: r for r in board['rows']}
    assert rows['a']['bt_low'] is None and rows['a']['rank_ub'] is None and rows['a']['battles'] == 2
    assert rows['new'] == {'model': 'new', 'bt': None, 'bt_low': None, 'bt_high': None, 'rank_ub': None, 'elo': 1000.0,
                           'battles': 0, 'wins': 0, 'ties': 0, 'losses': 0, 'win_rate': None, 'group': None,
                           'record': None, 'needed': None}
    text = table(board, min_battles=10)
    assert '| — | a |' in text and '数据不足（2 < 10 场）' in text and '1004.0 ~ 1004.0' not in text
    assert '| — | new | — | 数据不足（0 < 10 场） | — | 1000.0 | 0 | 0 / 0 / 0 | — |' in text
    few = leaderboard(write_votes(tmp_path / 'few.jsonl', HAND_MADE * 4), rounds=300)
    many = leaderboard(write_votes(tmp_path / 'many.jsonl', HAND_MADE * 16), rounds=300)
    width = lambda b: np.mean([r['bt_high'] - r['bt_low'] for r in b['rows']])  # noqa: E731
    assert 0.35 < width(many) / width(few) < 0.65  # 4x the votes: about half the width
    assert leaderboard(str(tmp_path / 'many.jsonl'), rounds=300)['rows'] == many['rows']  # the seed makes it repeatable


def test_bad_lines_are_listed_and_skipped(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', [('x', 'y', 'A'), ('y', 'x', 'B')])
    bad_lines = [{'model_a': 5, 'model_b': 'y', 'vote': 'A'}, {'model_a': None, 'model_b': 'y', 'vote': 'A'},
                 {'model_a': ['x'], 'model_b': 'y', 'vote': 'A'}, {'model_a': 'x', 'model_b': {'n': 1}, 'vote': 'A'},
                 {'model_a': 'x', 'model_b': 'y', 'vote': 'maybe'}, {'model_a': 'x', 'model_b': 'y', 'vote': ['A']},
                 {'model_a': 'x', 'model_b': 'x', 'vote': 'A'}, {'model_a': 'x', 'model_b': 'y', 'vote': 'A', 'leaked': 'no'},
                 {'model_a': 'x', 'model_b': 'y', 'vote': 'A', 'battle_id': 7},
                 {'model_a': 'x', 'model_b': 'y', 'vote': 'B', 'battle_id': 'b0'}]  # a second vote on battle b0
    with open(path, 'ab') as f:
        f.write(''.join(json.dumps(v) + '\n' for v in bad_lines).encode() + b'not json\n[1, 2]\n\xff\xfe\n\n')
    found, bad = read_votes(path)
    assert [v[:4] for v in found] == [('x', 'y', 1.0, False), ('y', 'x', 0.0, False)]
    assert [b.split(' ')[0] for b in bad] == [f'{path}:{n}' for n in range(3, 16)]
    assert '"model_a" must be a non-empty string, got 5' in bad[0] and 'got None' in bad[1] and "got ['x']" in bad[2]
    assert 'a model against itself' in bad[6] and 'second vote on battle b0 (first on line 1)' in bad[9]
    assert 'not UTF-8' in bad[12]
    board = leaderboard(path, names=['x', 'y'])
    assert board['votes'] == 2 and len(board['bad']) == 13 and {r['model'] for r in board['rows']} == {'x', 'y'}
    assert read_votes(str(tmp_path / 'none.jsonl')) == ([], [])


def test_leaked_votes_are_left_out_unless_asked(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', [('x', 'y', 'A'), ('x', 'y', 'A', True), ('y', 'x', 'A', True)])
    board = leaderboard(path)
    assert board['votes'] == 3 and board['counted'] == 1 and board['leaked'] == 2
    assert {r['model']: r['battles'] for r in board['rows']} == {'x': 1, 'y': 1}
    board = leaderboard(path, include_leaked=True)
    assert board['counted'] == 3 and board['leaked'] == 0 and board['rows'][0]['battles'] == 3


def test_elo_replays_a_hand_made_votes_file_exactly(tmp_path):
    found, _ = read_votes(write_votes(tmp_path / 'votes.jsonl', [('x', 'y', 'A'), ('y', 'z', 'tie'), ('z', 'x', 'B'), ('x', 'y', 'both_bad')]))
    battles = [v[:3] for v in found]
    assert battles == [('x', 'y', 1.0), ('y', 'z', 0.5), ('z', 'x', 0.0), ('x', 'y', 0.5)]
    # by hand: vote 1, equal ratings, expected 0.5, K=4 -> x +2, y -2
    assert compute_elo(battles[:1]) == {'x': 1002.0, 'y': 998.0}
    # vote 2: y (998) ties z (1000): E_y = 1/(1+10^(2/400)) = 0.4971218..., y gains 4*(0.5-E_y) = 0.0115128
    elo = compute_elo(battles[:2])
    assert elo['y'] == pytest.approx(998.0115128, abs=1e-6) and elo['z'] == pytest.approx(999.9884872, abs=1e-6)
    # vote 3: x (1002) beats z (999.98849) from the B side: E_z = 0.4971053, x gains 4*0.4971053 = 1.9884209
    elo = compute_elo(battles[:3])
    assert elo['x'] == pytest.approx(1003.9884209, abs=1e-6) and elo['z'] == pytest.approx(998.0000663, abs=1e-6)
    elo = compute_elo(battles)  # vote 4: both bad counts as a tie
    assert elo['x'] == pytest.approx(1003.9884209309151 + 4 * (0.5 - expected(1003.9884209309151, 998.0115127982992)), abs=1e-9)
    assert sum(elo.values()) == pytest.approx(3000.0)  # Elo only moves points between players


def test_matrices_and_their_pictures(tmp_path):
    board = leaderboard(write_votes(tmp_path / 'votes.jsonl', HAND_MADE), min_battles=1)
    assert board['names'] == ['x', 'y', 'z']
    assert board['wins'].tolist() == [[0, 3.5, 2.5], [1.5, 0, 2], [1.5, 1, 0]]
    assert board['games'].tolist() == [[0, 5, 4], [5, 0, 3], [4, 3, 0]]
    win, count = matrix_figures(board)
    assert [t.get_text() for t in win.axes[0].get_yticklabels()] == ['x', 'y', 'z']
    cells = sorted(t.get_text() for t in count.axes[0].texts)
    assert cells == ['3', '3', '4', '4', '5', '5']  # the diagonal is blank
    assert sorted(t.get_text() for t in win.axes[0].texts)[:2] == ['0.30', '0.33']
    board = leaderboard(write_votes(tmp_path / 'zh.jsonl', [('微调模型', '预训练模型', 'A')] * 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        png = io.BytesIO()
        matrix_figures(board)[0].savefig(png, format='png')
    assert png.getvalue()[:4] == b'\x89PNG'
    from matplotlib import rcParams
    if rcParams['font.family'][0] != 'sans-serif':  # a Chinese font was found: no glyph may be missing
        assert not [w for w in caught if 'missing from' in str(w.message)], [str(w.message) for w in caught]
    assert matrix_figures(leaderboard(str(tmp_path / 'none.jsonl'))) == (None, None)


def test_command_line_table_and_json(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', HAND_MADE * 2 + [('x', 'z', 'A', True)])
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"model_a": 3, "model_b": "y", "vote": "A"}\n')
    proc = run_script(['ratings.py', path])
    assert '| 排名 (UB) | 模型 | BT |' in proc.stdout and '| 1 | x |' in proc.stdout
    assert '24 of 25 votes counted (left out: 1 leaked); 1 bad lines skipped' in proc.stdout
    assert f'skipped {path}:26' in proc.stderr
    rows = json.loads(run_script(['ratings.py', path, '--json', '--bootstrap_rounds=50']).stdout)
    assert [r['model'] for r in rows] == ['x', 'y', 'z']
    for r, battles in zip(rows, (18, 16, 14)):
        assert {'model', 'bt', 'bt_low', 'bt_high', 'rank_ub', 'elo', 'battles', 'win_rate'} <= set(r)
        assert r['bt_low'] <= r['bt'] <= r['bt_high'] and r['battles'] == battles
    assert sum(r['bt'] for r in rows) == pytest.approx(3000, abs=0.05)
    anchored = json.loads(run_script(['ratings.py', '--json', '--anchor=z', path, '--include_leaked=True']).stdout)
    assert [r['bt'] for r in anchored if r['model'] == 'z'] == [1000.0] and anchored[0]['battles'] == 19
    proc = run_script(['ratings.py', path, '--anchor=w'], check=False)
    assert proc.returncode != 0 and "--anchor='w' has no counted votes" in proc.stderr
    proc = run_script(['ratings.py', str(tmp_path / 'missing.jsonl')], check=False)
    assert proc.returncode != 0 and 'missing.jsonl: no such votes file' in proc.stderr
    assert '--bootstrap_rounds=200' in run_script(['ratings.py', '--help']).stdout


# ----------------------------------------------------------------------------- the pair table, groups, odd records
def test_300_models_fit_on_the_pair_table_in_little_memory(tmp_path):
    """Memory grows with the pairs that met, not with votes x models^2: 300 models used to ask for 12.7 GiB."""
    import tracemalloc

    from bench.bench_ratings import synthetic_votes
    path = str(tmp_path / 'votes.jsonl')
    synthetic_votes(path, 3000, 300, seed=2)
    tracemalloc.start()
    try:
        board = leaderboard(path, rounds=4, min_battles=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(board['rows']) == 300 and board['counted'] == 3000
    assert peak < 300 * 2 ** 20, f'{peak / 2 ** 20:.0f} MiB'
    found, _ = read_votes(path)
    battles = [v[:3] for v in found]
    names = sorted({x for v in battles for x in v[:2]})
    # the same fit as the dense matrices give: the expected wins equal the observed ones
    wins, games = pair_matrices(battles, names)
    theta = fit_bt(*pair_table(battles, names), len(names))
    p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
    assert (games * p).sum(1) + BT_PRIOR / (1 + np.exp(-theta)) == pytest.approx(wins.sum(1) + BT_PRIOR / 2, abs=1e-6)


def test_separate_groups_are_ranked_within_each_and_the_board_says_so(tmp_path):
    rows = ([('a', 'b', 'A')] * 30 + [('b', 'a', 'A')] * 10 + [('c', 'd', 'A')] * 12 + [('d', 'c', 'A')] * 28)
    board = leaderboard(write_votes(tmp_path / 'votes.jsonl', rows), rounds=100)
    by = {r['model']: r for r in board['rows']}
    assert board['groups'] == 2 and by['a']['group'] == by['b']['group'] != by['c']['group'] == by['d']['group']
    assert (by['a']['rank_ub'], by['b']['rank_ub'], by['d']['rank_ub'], by['c']['rank_ub']) == (1, 2, 1, 2)
    from ratings import notes
    assert any('2 个互不相连的组' in line and '排名只在组内计算' in line for line in notes(board))
    assert '| 排名 (UB) | 模型 | 组 |' in table(board)
    one = leaderboard(write_votes(tmp_path / 'one.jsonl', rows + [('b', 'c', 'A')]), rounds=20)
    assert one['groups'] == 1 and not any('互不相连' in line for line in notes(one))


def test_unbeaten_winless_and_all_tie_records_get_no_zero_width_interval(tmp_path):
    rows = [('a', 'b', 'A')] * 12 + [('c', 'd', 'tie')] * 12
    board = leaderboard(write_votes(tmp_path / 'votes.jsonl', rows), rounds=50)
    by = {r['model']: r for r in board['rows']}
    assert [by[n]['record'] for n in 'abcd'] == ['unbeaten', 'winless', 'all_ties', 'all_ties']
    assert all(by[n]['bt_low'] is None and by[n]['rank_ub'] is None for n in 'abcd')
    text = table(board)
    assert '全胜：区间无法估计' in text and '全负：区间无法估计' in text and '全是平局：区间无法估计' in text
    from ratings import notes
    assert any('零宽' in line for line in notes(board))


def test_needed_battles_shrink_to_zero_once_intervals_separate(tmp_path):
    close = [('a', 'b', 'A')] * 11 + [('b', 'a', 'A')] * 9 + [('b', 'c', 'A')] * 11 + [('c', 'b', 'A')] * 9
    far = [('a', 'b', 'A')] * 90 + [('b', 'a', 'A')] * 10 + [('b', 'c', 'A')] * 90 + [('c', 'b', 'A')] * 10
    near = {r['model']: r['needed'] for r in leaderboard(write_votes(tmp_path / 'near.jsonl', close), rounds=100)['rows']}
    apart = {r['model']: r['needed'] for r in leaderboard(write_votes(tmp_path / 'far.jsonl', far), rounds=100)['rows']}
    assert all(n > 20 for n in near.values()), near  # 55% vs 45%: hundreds of battles more
    assert apart == {'a': 0, 'b': 0, 'c': 0}
    assert '已分开' in table(leaderboard(str(tmp_path / 'far.jsonl'), rounds=100))
    same = [('a', 'b', 'A')] * 20 + [('b', 'a', 'A')] * 20  # rated alike: no number of battles is worth showing
    assert '超过 800 场（评分几乎相同）' in table(leaderboard(write_votes(tmp_path / 'same.jsonl', same), rounds=100))


def test_names_cannot_shift_columns_or_become_html(tmp_path):
    rows = [('a|b|c', '<img src="http://127.0.0.1:9/x">', 'A')] * 3
    text = table(leaderboard(write_votes(tmp_path / 'votes.jsonl', rows)))
    import re
    header, _, *lines = text.splitlines()
    columns = lambda line: len(re.split(r'(?<!\\)\|', line))  # noqa: E731
    assert all(columns(line) == columns(header) for line in lines), lines
    assert '<img' not in text and '&lt;img src="http://127.0.0.1:9/x"&gt;' in text and 'a\\|b\\|c' in text


# ----------------------------------------------------------------------------- rules on voters
def voted(path, rows):
    """rows: (model_a, model_b, vote, voter, time) into a votes.jsonl."""
    with open(path, 'w', encoding='utf-8') as f:
        for k, (a, b, vote, voter, time) in enumerate(rows):
            f.write(json.dumps({'battle_id': f'v{k}', 'time': time, 'model_a': a, 'model_b': b, 'vote': vote,
                                'voter': voter}, ensure_ascii=False) + '\n')
    return str(path)


def test_own_model_votes_and_the_daily_cap_are_kept_but_left_out(tmp_path):
    rows = ([('张三的模型', 'x', 'A', '张三', '2026-01-01T09:00:00+00:00')] * 4 +
            [('x', 'y', 'A', '李四', f'2026-01-0{1 + k // 5}T10:00:00+00:00') for k in range(10)] +
            [('x', 'y', 'B', '', '2026-01-01T10:00:00+00:00')] * 3)  # anonymous: no cap to hold them to
    path = voted(tmp_path / 'votes.jsonl', rows)
    board = leaderboard(path, owners={'张三的模型': '张三'}, daily_cap=3)
    assert board['votes'] == 17 and board['left_out'] == {'own_model': 4, 'daily_cap': 4}
    assert board['counted'] == 3 + 3 + 3  # 李四: 3 on each of two days; the anonymous 3
    from ratings import notes
    assert '4 票未计入：投票人给自己注册的模型投票（保留，不计入）' in notes(board)
    assert leaderboard(path)['counted'] == 17  # rules off: everything counts


def test_a_judges_votes_in_the_store_are_counted_named_and_not_held_to_the_voters_rules(tmp_path):
    """judge.py votes into the arena's store as voter_kind judge:<model>: the arena's board counts them (a night
    without voters still ranks), says how many were the judge's, and the caps on people do not cut them."""
    import votes as store
    from ratings import notes
    db = store.connect(str(tmp_path / 'arena.db'))
    for k in range(6):
        store.add_vote(db, {'battle_id': f'j{k}', 'time': '2026-01-01T09:00:00+00:00', 'model_a': 'sft',
                            'model_b': 'pretrain', 'vote': 'A', 'voter': 'rules', 'voter_kind': 'judge:rules'})
    store.add_vote(db, {'battle_id': 'h0', 'time': '2026-01-01T09:00:00+00:00', 'model_a': 'sft',
                        'model_b': 'pretrain', 'vote': 'B', 'voter': '张三', 'voter_kind': 'human'})
    db.close()
    assert store.vote_rows(store.connect(str(tmp_path / 'arena.db')))[0][6] == 'judge:rules'
    board = leaderboard(str(tmp_path / 'arena.db'), daily_cap=2)
    assert (board['votes'], board['counted'], board['judged'], board['left_out']) == (7, 7, {'judge:rules': 6}, {})
    assert ('计入的票中 6 票来自自动评审 judge:rules，不是人投的（python judge.py --board_only=True 把人与评审的排行分开显示）'
            in notes(board))
    assert not any('自动评审' in line for line in notes(leaderboard(voted(tmp_path / 'v.jsonl', [
        ('a', 'b', 'A', '', '2026-01-01T09:00:00+00:00')]))))


def test_a_colluding_voter_is_flagged_within_30_votes_and_honest_ones_are_not(tmp_path):
    from bench.bench_ratings import synthetic_votes
    from ratings import outlier_voters
    honest = str(tmp_path / 'honest.jsonl')
    true = synthetic_votes(honest, 3000, 12, seed=3)
    names = sorted(true)
    weakest = min(true, key=true.get)
    votes_, rng = [], random.Random(3)
    for k, line in enumerate(open(honest, encoding='utf-8')):
        v = json.loads(line)
        votes_.append((v['model_a'], v['model_b'], {'A': 1.0, 'B': 0.0, 'tie': 0.5}[v['vote']], False, f'同学{k % 30:02d}', '', 'human'))
    for k in range(30):  # always the weakest model, against whoever it meets
        other = rng.choice([n for n in names if n != weakest])
        votes_.append((weakest, other, 1.0, False, '捣乱者', '', 'human') if k % 2 else (other, weakest, 0.0, False, '捣乱者', '', 'human'))
    flagged = outlier_voters(votes_, names)
    assert list(flagged) == ['捣乱者'] and flagged['捣乱者'] <= 30, flagged


# ----------------------------------------------------------------------------- the store and the command line
def test_the_store_imports_a_votes_file_once_and_gives_the_same_board(tmp_path):
    import votes as store
    path = write_votes(tmp_path / 'votes.jsonl', HAND_MADE * 3 + [('x', 'z', 'A', True)])
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"model_a": 3, "model_b": "y", "vote": "A"}\n{"model_a": "x", "model_b": "y", "vote": "B"}\n')  # bad; no id
    db_path = str(tmp_path / 'arena.db')
    proc = run_script(['ratings.py', db_path, f'--import={path}'])
    assert f'imported 38 votes from {path} into {db_path} (0 already there, 1 bad lines skipped)' in proc.stdout
    proc = run_script(['ratings.py', db_path, f'--import={path}'], check=False)
    assert proc.returncode == 1 and proc.stderr.startswith(f'error: {path}: already imported') and proc.stderr.count('\n') == 1
    from_file, from_db = leaderboard(path, rounds=50), leaderboard(db_path, rounds=50)
    assert from_file['rows'] == from_db['rows'] and from_db['votes'] == 38 and from_db['leaked'] == 1
    run_script(['ratings.py', db_path, f"--export={tmp_path / 'out.csv'}"])
    run_script(['ratings.py', db_path, f"--export={tmp_path / 'out.jsonl'}"])
    assert leaderboard(str(tmp_path / 'out.jsonl'), rounds=50)['rows'] == from_db['rows']
    import csv
    with open(tmp_path / 'out.csv', encoding='utf-8-sig', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 38 and rows[0]['battle_id'] == 'b0' and rows[0]['model_a'] == 'x' and rows[-1]['vote'] == 'B'
    db = store.connect(db_path)
    assert store.add_vote(db, {'battle_id': 'b0', 'model_a': 'x', 'model_b': 'y', 'vote': 'A'}) is False
    with pytest.raises(ValueError, match='"vote" must be one of'):
        store.add_vote(db, {'battle_id': 'new', 'model_a': 'x', 'model_b': 'y', 'vote': 'C'})
    assert len(store.records(db)) == 38


def test_command_line_refuses_without_tracebacks_and_never_runs_a_votes_file(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', HAND_MADE)
    marker = tmp_path / 'ran'
    other = tmp_path / 'other.jsonl'
    other.write_text(f'open({str(marker)!r}, "w").write("executed")\n', encoding='utf-8')
    for args, message in (([path, str(other)], 'error: one votes file at a time, got 2'),
                          ([str(tmp_path)], f'error: {tmp_path} is a folder, not a votes file'),
                          ([path, '--bootstrap_rounds=0'], 'error: --bootstrap_rounds must be at least 1, got 0'),
                          ([path, '--output=xml'], "error: --output must be table or json, got 'xml'"),
                          ([path, f'--export={tmp_path}/x.csv'], 'error: --import and --export need a votes store (.db)')):
        proc = run_script(['ratings.py', *args], check=False)
        assert proc.returncode == 1 and proc.stderr.startswith(message) and proc.stderr.count('\n') == 1, proc.stderr
    assert not marker.exists()
    # settings given on the command line reach the computation
    rows = json.loads(run_script(['ratings.py', path, '--json', '--min_battles=100']).stdout)
    assert all(r['bt_low'] is None for r in rows)
    a, b = (json.loads(run_script(['ratings.py', path, '--json', '--min_battles=1', f'--seed={s}']).stdout) for s in (0, 1))
    assert [r['bt'] for r in a] == [r['bt'] for r in b] and [r['bt_low'] for r in a] != [r['bt_low'] for r in b]

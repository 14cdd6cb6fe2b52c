"""
The arena's ratings, from its votes file: Bradley-Terry with bootstrap 95% intervals and Rank (UB), online
Elo beside it, and the pairwise matrices. Plain functions (sample_gradio.py imports them) and a command line:

    python ratings.py votes.jsonl                        # the leaderboard as a table
    python ratings.py votes.jsonl --json                 # a JSON list: model, bt, bt_low, bt_high, rank_ub, elo, battles, win_rate, ...
    python ratings.py votes.jsonl --anchor=sft --bootstrap_rounds=1000 --include_leaked=True
    python ratings.py --help

Bradley-Terry gives each model one fixed rating R, with P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)),
fitted by maximum likelihood on all counted votes at once: the order of the votes does not matter, as it
should not when models do not change (online Elo, the second column, replays the votes in file order with
K=4 and weighs recent ones more: FastChat #3065). A tie or "both bad" is half a win for each side. Ratings
are on the Elo scale: mean 1000, or --anchor's model at 1000. bt_prior adds a small fraction of a tie
against an average model to each model, so that a perfect record (5 wins, 0 losses) gets a large finite
rating instead of an infinite one; with hundreds of votes its effect is far below a rating point.

The interval is the middle 95% of the ratings fitted again on --bootstrap_rounds resamples of the votes
(drawn with replacement): how far the rating would move had the class cast another sample of the same kind
of votes. Rank (UB) = 1 + the number of models whose lower bound is above this model's upper bound, so two
models share a rank until their intervals separate (FastChat's "Rank (UB)"). A model with fewer than
--min_battles counted battles gets neither interval nor rank: "not enough data".

Counted votes: lines that are well formed (others are listed and skipped), the first vote of each battle id,
and, unless --include_leaked=True, not those on battles where an answer named a model (`"leaked": true`).
"""
import os
import sys
from collections import Counter

import numpy as np

from data_utils import jsonl_objects

# -----------------------------------------------------------------------------
votes = 'votes.jsonl'  # the arena's votes file (also accepted as the first bare argument)
output = 'table'  # table or json (--json is short for --output=json)
anchor = ''  # a model pinned at 1000 on the BT scale; empty: the mean of all models is 1000
bootstrap_rounds = 200  # resamples of the votes behind each 95% interval
min_battles = 10  # fewer counted battles than this: "not enough data" instead of an interval and a rank
include_leaked = False  # also count votes on battles whose answers named a model
seed = 0  # seed of the resampling: the same file always gives the same board
# -----------------------------------------------------------------------------

OUTCOME = {'A': 1.0, 'B': 0.0, 'tie': 0.5, 'both_bad': 0.5}  # score of model A; both bad is a tie, as in FastChat
ELO_K, SCALE, BASE, INIT = 4.0, 400.0, 10.0, 1000.0  # the public arena's Elo constants
BT_PRIOR = 0.1  # ties against an average model added to each model: keeps a perfect record finite; 0 = plain MLE
CJK_FONTS = ['WenQuanYi Micro Hei', 'WenQuanYi Zen Hei', 'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei',
             'SimHei', 'PingFang SC', 'Heiti SC', 'Arial Unicode MS']  # model names are Chinese; matplotlib's default has no CJK


def read_votes(path):
    """
    (votes, bad): votes are (model_a, model_b, score of A, leaked) in file order; bad lists each skipped line as
    'path:line (why)': unreadable, a field of the wrong kind, a model against itself, a second vote on a battle id.
    """
    found, bad, first_line = [], [], {}
    if not os.path.exists(path):
        return found, bad
    for line_no, v, problem in jsonl_objects(path):
        why = problem[1] if problem else vote_problem(v)
        battle = v.get('battle_id') if v else None
        if not why and battle in first_line:
            why = f'second vote on battle {battle} (first on line {first_line[battle]})'
        if why:
            bad.append(f'{path}:{line_no} ({why})')
            continue
        if battle is not None:
            first_line[battle] = line_no
        found.append((v['model_a'], v['model_b'], OUTCOME[v['vote']], v.get('leaked', False)))
    return found, bad


def vote_problem(v):
    """What is wrong with one votes record, or None."""
    for key in ('model_a', 'model_b'):
        if not isinstance(v.get(key), str) or not v[key].strip():
            return f'"{key}" must be a non-empty string, got {v.get(key)!r:.60}'
    if v['model_a'] == v['model_b']:
        return f'a model against itself ({v["model_a"]!r})'
    if not isinstance(v.get('vote'), str) or v['vote'] not in OUTCOME:
        return f'"vote" must be one of {list(OUTCOME)}, got {v.get("vote")!r:.60}'
    if not isinstance(v.get('leaked', False), bool):
        return f'"leaked" must be true or false, got {v["leaked"]!r:.60}'
    if not isinstance(v.get('battle_id', ''), str):
        return f'"battle_id" must be a string, got {v["battle_id"]!r:.60}'
    return None


def compute_elo(battles, k=ELO_K, scale=SCALE, base=BASE, init=INIT):
    """Online Elo: the battles (a, b, score of a) replayed in order, each moving both by K * (score - expected)."""
    ratings = {}
    for a, b, score in battles:
        ra, rb = ratings.setdefault(a, init), ratings.setdefault(b, init)
        expected = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        ratings[a], ratings[b] = ra + k * (score - expected), rb - k * (score - expected)
    return ratings


def pair_matrices(battles, names):
    """(wins, games), names x names: wins[i, j] = score of names[i] against names[j] (a tie is half each), games[i, j] = battles."""
    index = {n: i for i, n in enumerate(names)}
    a = np.array([index[x[0]] for x in battles], dtype=np.int64)
    b = np.array([index[x[1]] for x in battles], dtype=np.int64)
    s = np.array([x[2] for x in battles], dtype=np.float64)
    wins, games = np.zeros((len(names), len(names))), np.zeros((len(names), len(names)))
    np.add.at(wins, (a, b), s)
    np.add.at(wins, (b, a), 1.0 - s)
    np.add.at(games, (a, b), 1.0)
    np.add.at(games, (b, a), 1.0)
    return wins, games


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function without exp's overflow


def fit_bt(wins, games, prior=BT_PRIOR, tol=1e-9, max_iter=100):
    """
    Bradley-Terry strengths on the natural-log scale from (..., M, M) wins and games (any leading axes are
    independent fits, so all bootstrap rounds are solved at once): Newton's method on the log-likelihood,
    which is concave, so it converges in a few steps; at the optimum each model's expected wins equal its
    observed wins (plus prior / 2 = prior * sigmoid(strength) from the virtual ties).
    """
    m = wins.shape[-1]
    theta, diagonal = np.zeros(wins.shape[:-1]), np.arange(m)
    observed = wins.sum(-1) + prior / 2
    for _ in range(max_iter):
        p, q = sigmoid(theta[..., :, None] - theta[..., None, :]), sigmoid(theta)
        grad = observed - (games * p).sum(-1) - prior * q
        if np.abs(grad).max() < tol:
            break
        hess = -games * p * (1 - p)  # minus the Hessian: a weighted graph Laplacian, plus the prior on the diagonal
        hess[..., diagonal, diagonal] = -hess.sum(-1) + prior * q * (1 - q) + 1e-12
        if prior == 0:
            hess += 1.0 / m  # the strengths are only defined up to a shift: this pins their sum
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        theta = theta + step / np.maximum(1.0, np.abs(step).max(-1, keepdims=True))  # at most 1 per step: safe on lopsided records
    return theta


def to_elo_scale(theta, names, anchor=''):
    """Strengths as Elo-scale ratings: mean 1000, or `anchor` at 1000 (in every bootstrap round alike)."""
    r = theta * SCALE / np.log(BASE)
    if anchor:
        return r - r[..., [names.index(anchor)]] + INIT
    return r - r.mean(-1, keepdims=True) + INIT


def bootstrap_bt(battles, names, rounds=bootstrap_rounds, seed=seed, anchor=''):
    """(rounds, M) ratings fitted on resamples of the battles. BT only sees counts per (pair, outcome), so a resample
    is one multinomial draw of those counts, and all rounds are one batched fit."""
    m, n = len(names), len(battles)
    index = {x: i for i, x in enumerate(names)}
    codes = np.array([(index[a] * m + index[b]) * 3 + int(2 * s) for a, b, s in battles])
    cells, counts = np.unique(codes, return_counts=True)
    drawn = np.random.default_rng(seed).multinomial(n, counts / n, size=rounds).astype(np.float64)
    a, b, s = cells // 3 // m, cells // 3 % m, (cells % 3) / 2.0
    to_wins, to_games = np.zeros((len(cells), m * m)), np.zeros((len(cells), m * m))
    k = np.arange(len(cells))
    to_wins[k, a * m + b], to_wins[k, b * m + a] = s, 1 - s
    to_games[k, a * m + b] = to_games[k, b * m + a] = 1.0
    wins, games = (drawn @ to_wins).reshape(rounds, m, m), (drawn @ to_games).reshape(rounds, m, m)
    return to_elo_scale(fit_bt(wins, games), names, anchor)


def rank_ub(low, high):
    """1 + the number of models whose lower bound is above this model's upper bound."""
    low, high = np.asarray(low), np.asarray(high)
    return 1 + (low[None, :] > high[:, None]).sum(1)


def leaderboard(path, names=(), anchor=anchor, rounds=bootstrap_rounds, min_battles=min_battles,
                include_leaked=include_leaked, seed=seed):
    """
    The board of a votes file: {'rows': one dict per model (see the module docstring), best first, 'names' and
    'wins'/'games' matrices of the models with votes in board order, 'votes' (well-formed lines), 'counted',
    'leaked' (left out), 'bad' (skipped lines)}. `names` adds contestants that have no votes yet.
    """
    found, bad = read_votes(path)
    battles = [(a, b, s) for a, b, s, leaked in found if include_leaked or not leaked]
    fitted = sorted({x for a, b, _ in battles for x in (a, b)})
    if anchor and anchor not in fitted:
        raise ValueError(f'--anchor={anchor!r} has no counted votes in {path}; models with votes: {fitted}')
    elo, rows, ties = compute_elo(battles), {}, Counter()
    ties.update(x for a, b, s in battles if s == 0.5 for x in (a, b))
    if fitted:
        wins, games = pair_matrices(battles, fitted)
        bt = to_elo_scale(fit_bt(wins, games), fitted, anchor)
        low, high = np.percentile(bootstrap_bt(battles, fitted, rounds, seed, anchor), [2.5, 97.5], axis=0)
        enough = [i for i in range(len(fitted)) if games[i].sum() >= min_battles]
        ranks = dict(zip(enough, rank_ub(low[enough], high[enough]).tolist()))
        for i, name in enumerate(fitted):
            won, total, tied = wins[i].sum(), int(games[i].sum()), ties[name]
            rows[name] = {'model': name, 'bt': round(float(bt[i]), 2), 'bt_low': None, 'bt_high': None,
                          'rank_ub': ranks.get(i), 'elo': round(elo[name], 2), 'battles': total,
                          'wins': int(won - tied / 2), 'ties': tied, 'losses': int(total - won - tied / 2),
                          'win_rate': round(float(won - tied / 2) / total, 4)}
            if i in ranks:
                rows[name].update(bt_low=round(float(low[i]), 2), bt_high=round(float(high[i]), 2))
    for name in names:
        rows.setdefault(name, {'model': name, 'bt': None, 'bt_low': None, 'bt_high': None, 'rank_ub': None, 'elo': INIT,
                               'battles': 0, 'wins': 0, 'ties': 0, 'losses': 0, 'win_rate': None})
    order = sorted(rows.values(), key=lambda r: (r['rank_ub'] is None, r['rank_ub'] or 0, -(r['bt'] or -1e9), r['model']))
    board = {'rows': order, 'names': [r['model'] for r in order if r['battles']], 'votes': len(found),
             'counted': len(battles), 'leaked': sum(1 for x in found if x[3]) if not include_leaked else 0, 'bad': bad}
    shown = [fitted.index(n) for n in board['names']]
    board['wins'], board['games'] = (wins[np.ix_(shown, shown)], games[np.ix_(shown, shown)]) if fitted else (None, None)
    return board


def table(board, min_battles=min_battles):
    """The board as a Markdown table (the page shows it; in a terminal it reads as a plain table)."""
    lines = ['| 排名 (UB) | 模型 | BT | 95% 区间 | 在线 Elo | 对战 | 胜 / 平 / 负 | 胜率 |', '|---|---|---|---|---|---|---|---|']
    for r in board['rows']:
        interval = (f"{r['bt_low']:.1f} ~ {r['bt_high']:.1f}" if r['bt_low'] is not None else
                    f"数据不足（{r['battles']} < {min_battles} 场）")
        lines.append(f"| {r['rank_ub'] or '—'} | {r['model']} | {'—' if r['bt'] is None else format(r['bt'], '.1f')} | "
                     f"{interval} | {r['elo']:.1f} | {r['battles']} | {r['wins']} / {r['ties']} / {r['losses']} | "
                     f"{'—' if r['win_rate'] is None else format(100 * r['win_rate'], '.0f') + '%'} |")
    return '\n'.join(lines)


def use_cjk_font():
    """Puts the first Chinese font this machine has in front of matplotlib's default (none there: names show as boxes)."""
    from matplotlib import font_manager, rcParams
    known = {f.name for f in font_manager.fontManager.ttflist}
    if not known & set(CJK_FONTS):  # installed after matplotlib cached its font list: add the files themselves
        for path in font_manager.findSystemFonts():
            if any(k in os.path.basename(path).lower() for k in ('wqy', 'notosanscjk', 'sourcehansans', 'msyh', 'simhei', 'pingfang')):
                font_manager.fontManager.addfont(path)
        known = {f.name for f in font_manager.fontManager.ttflist}
    found = [f for f in CJK_FONTS if f in known]
    if found:
        rcParams['font.family'] = [found[0], 'DejaVu Sans']


def heatmap(values, names, title, fmt, cmap, vmin=None, vmax=None):
    """One matrix as a matplotlib Figure (no pyplot: the page makes figures from several threads)."""
    from matplotlib.figure import Figure
    use_cjk_font()
    side = 2.5 + 0.6 * len(names)
    fig = Figure(figsize=(side + 1.2, side), layout='constrained')
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel('对手')
    ax.set_ylabel('模型')
    ax.set_title(title)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = image.cmap(image.norm(v))
            ax.text(j, i, format(v, fmt), ha='center', va='center', fontsize=8,
                    color='white' if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else 'black')  # readable on dark cells
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def matrix_figures(board):
    """(win fraction, battle counts) figures of a board, rows and columns in board order; None when no votes count."""
    if not board['names']:
        return None, None
    games = board['games'].copy()
    with np.errstate(invalid='ignore', divide='ignore'):
        fraction = np.where(games > 0, board['wins'] / games, np.nan)
    np.fill_diagonal(games, np.nan)
    return (heatmap(fraction, board['names'], '行模型对列模型的得分率（平局算半场）', '.2f', 'RdBu', 0, 1),
            heatmap(games, board['names'], '对战次数（少的格子说明这一对比得少）', '.0f', 'Blues', 0))


if __name__ == '__main__':
    args = sys.argv[1:]
    bare = [a for a in args if not a.startswith('-') and not a.endswith('.py')]
    if bare:
        votes = bare[0]
    sys.argv = [sys.argv[0]] + ['--output=json' if a == '--json' else a for a in args if a not in bare[:1]]
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    if output not in ('table', 'json'):
        sys.exit(f'error: --output must be table or json, got {output!r}')
    if not os.path.exists(votes):
        sys.exit(f'error: {votes}: no such votes file')
    try:
        result = leaderboard(votes, anchor=anchor, rounds=bootstrap_rounds, min_battles=min_battles,
                             include_leaked=include_leaked, seed=seed)
    except ValueError as e:
        sys.exit(f'error: {e}')
    for line in result['bad']:
        print(f'skipped {line}', file=sys.stderr)
    if output == 'json':
        import json
        print(json.dumps(result['rows'], ensure_ascii=False, indent=1))
    else:
        print(table(result, min_battles))
        print(f"\n{result['counted']} of {result['votes']} votes counted ({result['leaked']} leaked left out); "
              f"{len(result['bad'])} bad lines skipped; BT on the Elo scale, {bootstrap_rounds} bootstrap rounds.")

"""
The arena's ratings, from its votes store (the SQLite .db the arena writes, or a votes.jsonl of an older run):
Bradley-Terry with bootstrap 95% intervals and Rank (UB), online Elo beside it, the pairwise matrices, and
the rules that leave votes out. Plain functions (sample_gradio.py imports them) and a command line:

    python ratings.py out/arena.db                       # the leaderboard as a table
    python ratings.py votes.jsonl --json                 # a JSON list: model, bt, bt_low, bt_high, rank_ub, elo, battles, win_rate, ...
    python ratings.py out/arena.db --anchor=sft --bootstrap_rounds=1000 --include_leaked=True
    python ratings.py out/arena.db --import=votes.jsonl  # an older arena's votes file into the store, once
    python ratings.py out/arena.db --export=votes.csv    # the store's votes as .csv or .jsonl, for analysis
    python ratings.py --help

Bradley-Terry gives each model one fixed rating R, with P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)),
fitted by maximum likelihood on all counted votes at once: the order of the votes does not matter, as it
should not when models do not change (online Elo, the second column, replays the votes in order with K=4 and
weighs recent ones more: FastChat #3065). A tie or "both bad" is half a win for each side. Ratings are on the
Elo scale: mean 1000, or --anchor's model at 1000. bt_prior adds a small fraction of a tie against an average
model to each model, so that a perfect record (5 wins, 0 losses) gets a large finite rating instead of an
infinite one; with hundreds of votes its effect is far below a rating point. The fit works on the table of
pairs that met (wins and games per pair), so memory grows with the pairs, not with votes x models^2.

The interval is the middle 95% of the ratings fitted again on --bootstrap_rounds resamples of the votes
(drawn with replacement): how far the rating would move had the class cast another sample of the same kind
of votes. Rank (UB) = 1 + the number of models whose lower bound is above this model's upper bound, so two
models share a rank until their intervals separate (FastChat's "Rank (UB)"). A model with fewer than
--min_battles counted battles gets neither interval nor rank: "not enough data". Nor does a model that has
only won, only lost or only tied: every resample repeats that record, so its interval would be zero wide and
its rating rests on the prior alone. Models that never met, directly or through others, are in separate groups:
ratings of different groups are not comparable, so ranks are counted within each group and the board says so.
`needed` estimates the further battles a model needs before its interval separates from its neighbours'
(widths shrink as 1/sqrt(battles)).

Counted votes: lines that are well formed (others are listed and skipped), the first vote of each battle id,
and, unless --include_leaked=True, not those on battles where an answer named a model (`"leaked": true`).
Rules on named human voters (anonymous votes have no voter to hold to them), each counted in board['left_out']:
own_model (a vote on a battle of a model the voter registered: kept, not counted), daily_cap (a voter's votes
past --daily_cap in one UTC day), outlier (every vote of a voter whose votes disagree with the others' beyond
chance: outlier_voters).
"""
import math
import os
import sys
from collections import Counter
from statistics import NormalDist

# one BLAS thread: the fit solves hundreds of small systems, and OpenBLAS's threads on them, with the page and its
# models using the same cores, made the 100-model bootstrap 14x slower (11.0 s vs 0.78 s measured). Only takes
# effect when numpy is first imported here (the arena and this command); set the variable to override.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
import numpy as np  # noqa: E402

import votes as store
from corpus import jsonl_objects

OUTCOME = {'A': 1.0, 'B': 0.0, 'tie': 0.5, 'both_bad': 0.5}  # score of model A; both bad is a tie, as in FastChat
ELO_K, SCALE, BASE, INIT = 4.0, 400.0, 10.0, 1000.0  # the public arena's Elo constants
BT_PRIOR = 0.1  # ties against an average model added to each model: keeps a perfect record finite; 0 = plain MLE
HOPELESS = 20  # more further battles than this many times a model's own are shown as "more than", not as a number
OUTLIER_CHECKS = (10, 20, 30, 50, 100, 200, 500, 1000)  # after this many of a voter's votes the outlier test looks
RECORD_TEXT = {'unbeaten': '全胜', 'winless': '全负', 'all_ties': '全是平局'}
LEFT_OUT_TEXT = {'leaked': '回答泄露了模型名字', 'own_model': '投票人给自己注册的模型投票（保留，不计入）',
                 'daily_cap': '超过每人每天的票数上限', 'outlier': '投票人的选择与其他人的共识相差太大（离群检验）'}
CJK_FONTS = ['WenQuanYi Micro Hei', 'WenQuanYi Zen Hei', 'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei',
             'SimHei', 'PingFang SC', 'Heiti SC', 'Arial Unicode MS']  # model names are Chinese; matplotlib's default has no CJK
vote_problem = store.vote_problem


def is_store(path):
    return path.endswith(('.db', '.sqlite', '.sqlite3'))


def read_votes(path):
    """
    (votes, bad): votes are (model_a, model_b, score of A, leaked, voter, UTC day, voter_kind) in the order they were
    cast; bad lists each skipped line as 'path:line (why)': unreadable, a field of the wrong kind, a model against
    itself, a second vote on a battle id. path: a votes store (.db) or a votes.jsonl file; a missing one has none.
    """
    found, bad, first_line = [], [], {}
    if os.path.isdir(path):
        raise ValueError(f'{path} is a folder, not a votes file (give out/arena.db or a votes.jsonl)')
    if not os.path.exists(path):
        return found, bad
    if is_store(path):
        db = store.connect(path)
        try:
            for a, b, vote, leaked, voter, time, kind in store.vote_rows(db):
                found.append((a, b, OUTCOME[vote], bool(leaked), voter, (time or '')[:10], kind or 'human'))
        finally:
            db.close()
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
        time = v.get('time')
        found.append((v['model_a'], v['model_b'], OUTCOME[v['vote']], v.get('leaked', False), v.get('voter') or '',
                      time[:10] if isinstance(time, str) else '', v.get('voter_kind') or 'human'))
    return found, bad


def compute_elo(battles, k=ELO_K, scale=SCALE, base=BASE, init=INIT):
    """Online Elo: the battles (a, b, score of a) replayed in order, each moving both by K * (score - expected)."""
    ratings = {}
    for a, b, score in battles:
        ra, rb = ratings.setdefault(a, init), ratings.setdefault(b, init)
        expected = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        ratings[a], ratings[b] = ra + k * (score - expected), rb - k * (score - expected)
    return ratings


def oriented(battles, names):
    """(i, j, score of i) arrays with i < j: each battle seen from its lower-indexed model."""
    index = {n: k for k, n in enumerate(names)}
    a = np.fromiter((index[x[0]] for x in battles), np.int64, len(battles))
    b = np.fromiter((index[x[1]] for x in battles), np.int64, len(battles))
    s = np.fromiter((x[2] for x in battles), np.float64, len(battles))
    flip = a > b
    return np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1.0 - s, s)


def pair_table(battles, names):
    """(i, j, wins, games): one entry per pair of models that met, i < j; wins = score of names[i] against names[j]."""
    i, j, s = oriented(battles, names)
    pairs, inverse = np.unique(i * len(names) + j, return_inverse=True)
    return pairs // len(names), pairs % len(names), np.bincount(inverse, s), np.bincount(inverse).astype(np.float64)


def pair_matrices(battles, names):
    """(wins, games), names x names: wins[i, j] = score of names[i] against names[j] (a tie is half each), games[i, j] = battles."""
    m = len(names)
    wins, games = np.zeros((m, m)), np.zeros((m, m))
    if battles:
        i, j, w, g = pair_table(battles, names)
        wins[i, j], wins[j, i], games[i, j], games[j, i] = w, g - w, g, g
    return wins, games


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function without exp's overflow


def per_model(values, index, m):
    """(R, P) values summed into (R, m) by model index (P,): one bincount over all rounds."""
    r = values.shape[0]
    flat = (np.arange(r)[:, None] * m + index[None, :]).ravel()
    return np.bincount(flat, values.ravel(), r * m).reshape(r, m)


def fit_bt(i, j, wins, games, m, prior=BT_PRIOR, tol=1e-9, max_iter=100, start=None):
    """
    Bradley-Terry strengths (natural-log scale) of m models from a pair table: wins and games of shape (..., P)
    for the pairs (i, j); any leading axes are independent fits, so all bootstrap rounds are solved at once.
    Newton's method on the log-likelihood, which is concave, so it converges in a few steps; at the optimum each
    model's expected wins equal its observed wins (plus prior / 2 = prior * sigmoid(strength) from the virtual ties).
    start: strengths (m,) to begin from (the bootstrap starts from the full fit: fewer steps), else zeros.
    """
    lead = wins.shape[:-1]
    w, g = wins.reshape(-1, wins.shape[-1]), games.reshape(-1, games.shape[-1])
    r, diagonal = w.shape[0], np.arange(m)
    theta = np.zeros((r, m)) if start is None else np.repeat(np.asarray(start, np.float64)[None], r, 0)
    observed = per_model(w, i, m) + per_model(g - w, j, m) + prior / 2
    for _ in range(max_iter):
        p, q = sigmoid(theta[:, i] - theta[:, j]), sigmoid(theta)
        grad = observed - per_model(g * p, i, m) - per_model(g * (1 - p), j, m) - prior * q
        if np.abs(grad).max(initial=0) < tol:
            break
        weight = g * p * (1 - p)
        hess = np.zeros((r, m * m))  # minus the Hessian: a weighted graph Laplacian, plus the prior on the diagonal
        hess[:, i * m + j] = hess[:, j * m + i] = -weight
        hess = hess.reshape(r, m, m)
        hess[:, diagonal, diagonal] = per_model(weight, i, m) + per_model(weight, j, m) + prior * q * (1 - q) + 1e-12
        if prior == 0:
            hess += 1.0 / m  # the strengths are only defined up to a shift: this pins their sum
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        theta = theta + step / np.maximum(1.0, np.abs(step).max(-1, keepdims=True))  # at most 1 per step: safe on lopsided records
    return theta.reshape(*lead, m)


def to_elo_scale(theta, names, anchor=''):
    """Strengths as Elo-scale ratings: mean 1000, or `anchor` at 1000 (in every bootstrap round alike)."""
    r = theta * SCALE / np.log(BASE)
    if anchor:
        return r - r[..., [names.index(anchor)]] + INIT
    return r - r.mean(-1, keepdims=True) + INIT


def bootstrap_bt(battles, names, rounds=200, seed=0, anchor='', chunk_cells=20_000_000):
    """(rounds, M) ratings fitted on resamples of the battles. BT only sees counts per (pair, outcome), so a resample
    is one multinomial draw of those counts, summed per pair; rounds are fitted in batches that fit in memory."""
    if rounds < 1:
        raise ValueError(f'bootstrap rounds must be at least 1, got {rounds}')
    m, n = len(names), len(battles)
    i, j, s = oriented(battles, names)
    cells, counts = np.unique((i * m + j) * 3 + (2 * s).astype(np.int64), return_counts=True)  # sorted: by pair, then outcome
    pair_code = cells // 3
    starts = np.flatnonzero(np.r_[True, pair_code[1:] != pair_code[:-1]])
    pi, pj, score = pair_code[starts] // m, pair_code[starts] % m, (cells % 3) / 2.0
    rng, out = np.random.default_rng(seed), []
    full = fit_bt(pi, pj, np.add.reduceat(counts * score, starts)[None], np.add.reduceat(counts, starts)[None].astype(np.float64), m)[0]
    batch = max(1, chunk_cells // (len(cells) + m * m))
    for done in range(0, rounds, batch):
        drawn = rng.multinomial(n, counts / n, size=min(batch, rounds - done)).astype(np.float64)
        wins, games = np.add.reduceat(drawn * score, starts, axis=1), np.add.reduceat(drawn, starts, axis=1)
        out.append(to_elo_scale(fit_bt(pi, pj, wins, games, m, start=full), names, anchor))
    return np.concatenate(out)


def rank_ub(low, high):
    """1 + the number of models whose lower bound is above this model's upper bound."""
    low, high = np.asarray(low), np.asarray(high)
    return 1 + (low[None, :] > high[:, None]).sum(1)


def groups_of(i, j, m):
    """Connected groups of the comparison graph: a label per model, 0 for the group of model 0, and so on."""
    parent = list(range(m))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in zip(i.tolist(), j.tolist()):
        parent[root(a)] = root(b)
    labels = {}
    return [labels.setdefault(root(x), len(labels)) for x in range(m)]


def needed_battles(rows):
    """For each row with an interval: the further battles (about) after which its interval and each neighbour's (the
    next model up and down in its group) no longer overlap, 0 when they do not; None when two ratings are equal."""
    ranked = sorted((r for r in rows if r['bt_low'] is not None), key=lambda r: (r.get('group', 0), -r['bt']))
    for k, r in enumerate(ranked):
        need = 0
        for other in ranked[k - 1:k] + ranked[k + 1:k + 2]:
            if other is r or other.get('group', 0) != r.get('group', 0):
                continue
            gap = abs(r['bt'] - other['bt'])
            half = (r['bt_high'] - r['bt_low'] + other['bt_high'] - other['bt_low']) / 2
            if other['bt_low'] > r['bt_high'] or r['bt_low'] > other['bt_high']:
                continue
            if gap <= 0:
                need = None
                break
            need = max(need, math.ceil(r['battles'] * ((half / gap) ** 2 - 1)))
        r['needed'] = need


def outlier_voters(votes, names, alpha=0.001, checks=OUTLIER_CHECKS):
    """
    Voters whose votes disagree with everyone else's beyond chance, as {voter: votes seen when flagged}. Each
    voter's votes are scored against Bradley-Terry fitted on all the other voters' votes: the log-likelihood of
    each vote (a tie as half a win) minus its expectation, summed in the order cast and divided by its standard
    deviation. The test looks after checks[0], checks[1], ... of the voter's votes (a sequential test: the
    significance alpha is split over the looks, Bonferroni) and flags a voter whose z falls below -z_crit.
    votes: (model_a, model_b, score, leaked, voter, day, kind) tuples, as read_votes gives.
    """
    z_crit = NormalDist().inv_cdf(1 - alpha / len(checks))
    by_voter, index, m = {}, {n: k for k, n in enumerate(names)}, len(names)
    for k, v in enumerate(votes):
        if v[4]:
            by_voter.setdefault(v[4], []).append(k)
    flagged = {}
    if len(by_voter) < 2:
        return flagged
    i, j, s = oriented(votes, names)
    codes = i * m + j
    for voter, mine in by_voter.items():
        if len(mine) < checks[0]:
            continue
        others = np.ones(len(votes), bool)
        others[mine] = False
        pairs, inverse = np.unique(codes[others], return_inverse=True)
        w, g = np.bincount(inverse, s[others]), np.bincount(inverse).astype(np.float64)
        theta = fit_bt(pairs // m, pairs % m, w[None], g[None], m)[0]
        total, mean, var = 0.0, 0.0, 0.0
        for n_seen, k in enumerate(mine, 1):
            a, b, score = votes[k][:3]
            p = float(np.clip(sigmoid(theta[index[a]] - theta[index[b]]), 1e-6, 1 - 1e-6))
            lp, lq = math.log(p), math.log(1 - p)
            total += score * lp + (1 - score) * lq
            mean += p * lp + (1 - p) * lq
            var += p * (1 - p) * (lp - lq) ** 2
            if n_seen in checks and var > 0 and (total - mean) / math.sqrt(var) < -z_crit:
                flagged[voter] = n_seen
                break
    return flagged


def leaderboard(path, names=(), anchor='', rounds=200, min_battles=10, include_leaked=False, seed=0, owners=None,
                daily_cap=0, outlier_alpha=0.0):
    """
    The board of a votes store or file: {'rows': one dict per model (see the module docstring), best first, 'names'
    and 'wins'/'games' matrices of the models with votes in board order, 'votes' (well-formed votes), 'counted',
    'leaked' and 'left_out' (votes each rule left out), 'flagged' (outlier voters), 'groups' (separate groups of
    the comparison graph), 'bad' (skipped lines)}. `names` adds contestants that have no votes yet. owners: model
    -> the voter who registered it (own_model rule); daily_cap: votes per voter per UTC day (0: no cap);
    outlier_alpha: the outlier test's significance (0: off). ValueError for an anchor without votes, a folder.
    """
    if rounds < 1:
        raise ValueError(f'--bootstrap_rounds must be at least 1, got {rounds}')
    found, bad = read_votes(path)
    left_out, counted, per_day = Counter(), [], Counter()
    owners = owners or {}
    for v in found:
        a, b, s, leaked, voter, day, kind = v
        ruled = voter and kind == 'human'
        if ruled:
            per_day[voter, day] += 1
        if leaked and not include_leaked:
            left_out['leaked'] += 1
        elif ruled and voter in (owners.get(a), owners.get(b)):
            left_out['own_model'] += 1
        elif ruled and daily_cap and per_day[voter, day] > daily_cap:
            left_out['daily_cap'] += 1
        else:
            counted.append(v)
    flagged = {}
    if outlier_alpha and counted:
        every = sorted({x for v in counted for x in v[:2]})
        flagged = outlier_voters([v if v[6] == 'human' else (*v[:4], '', *v[5:]) for v in counted], every, outlier_alpha)
        if flagged:
            left_out['outlier'] = sum(1 for v in counted if v[4] in flagged)
            counted = [v for v in counted if v[4] not in flagged]
    battles = [v[:3] for v in counted]
    fitted = sorted({x for a, b, _ in battles for x in (a, b)})
    if anchor and anchor not in fitted:
        raise ValueError(f'--anchor={anchor!r} has no counted votes in {path}; models with votes: {fitted}')
    elo, rows, ties, n_groups = compute_elo(battles), {}, Counter(), 0
    ties.update(x for a, b, s in battles if s == 0.5 for x in (a, b))
    if fitted:
        m = len(fitted)
        i, j, w, g = pair_table(battles, fitted)
        group = groups_of(i, j, m)
        n_groups = max(group) + 1
        wins, games = pair_matrices(battles, fitted)
        bt = to_elo_scale(fit_bt(i, j, w[None], g[None], m)[0], fitted, anchor)
        low, high = np.percentile(bootstrap_bt(battles, fitted, rounds, seed, anchor), [2.5, 97.5], axis=0)
        for k, name in enumerate(fitted):
            won, total, tied = wins[k].sum(), int(games[k].sum()), ties[name]
            n_won, n_lost = int(won - tied / 2), int(total - won - tied / 2)
            record = 'all_ties' if tied == total else 'unbeaten' if n_lost == 0 else 'winless' if n_won == 0 else None
            rows[name] = {'model': name, 'bt': round(float(bt[k]), 2), 'bt_low': None, 'bt_high': None, 'rank_ub': None,
                          'elo': round(elo[name], 2), 'battles': total, 'wins': n_won, 'ties': tied, 'losses': n_lost,
                          'win_rate': round(n_won / total, 4), 'group': group[k] + 1, 'record': record, 'needed': None}
            if total >= min_battles and not record:
                rows[name].update(bt_low=round(float(low[k]), 2), bt_high=round(float(high[k]), 2))
        for label in range(n_groups):  # ranks within a group: ratings of groups that never met are not comparable
            ranked = [r for r in rows.values() if r['group'] == label + 1 and r['bt_low'] is not None]
            for r, rank in zip(ranked, rank_ub([r['bt_low'] for r in ranked], [r['bt_high'] for r in ranked]).tolist()):
                r['rank_ub'] = rank
        needed_battles(list(rows.values()))
    for name in names:
        rows.setdefault(name, {'model': name, 'bt': None, 'bt_low': None, 'bt_high': None, 'rank_ub': None, 'elo': INIT,
                               'battles': 0, 'wins': 0, 'ties': 0, 'losses': 0, 'win_rate': None, 'group': None,
                               'record': None, 'needed': None})
    # enough battles first, by rating (an unbeaten record has no interval but belongs on top), then too few to rank
    order = sorted(rows.values(), key=lambda r: (r['group'] is None, r['group'] or 0, r['battles'] < min_battles,
                                                -(r['bt'] or -1e9), r['model']))
    board = {'rows': order, 'names': [r['model'] for r in order if r['battles']], 'votes': len(found),
             'counted': len(battles), 'leaked': left_out['leaked'], 'left_out': dict(left_out), 'flagged': flagged,
             'groups': n_groups, 'bad': bad, 'judged': dict(Counter(v[6] for v in counted if v[6] != 'human'))}
    shown = [fitted.index(n) for n in board['names']]
    board['wins'], board['games'] = (wins[np.ix_(shown, shown)], games[np.ix_(shown, shown)]) if fitted else (None, None)
    return board


def md(text):
    """Text shown as itself in Markdown and HTML: a name or an answer cannot add table columns, tags or images."""
    import html
    out = html.escape(str(text), quote=False).replace('\\', '\\\\')
    for c in '`*_[]|~#!':
        out = out.replace(c, '\\' + c)
    return out.replace('\n', ' ')


def table(board, min_battles=10):
    """The board as a Markdown table (the page shows it; in a terminal it reads as a plain table)."""
    several = board.get('groups', 1) > 1
    lines = ['| 排名 (UB) | 模型 |' + (' 组 |' if several else '') + ' BT | 95% 区间 | 还需对战 | 在线 Elo | 对战 | 胜 / 平 / 负 | 胜率 |',
             '|---|---|' + ('---|' if several else '') + '---|---|---|---|---|---|---|']
    for r in board['rows']:
        if r['bt_low'] is not None:
            interval = f"{r['bt_low']:.1f} ~ {r['bt_high']:.1f}"
        elif r.get('record') and r['battles'] >= min_battles:
            interval = f"{RECORD_TEXT[r['record']]}：区间无法估计"
        else:
            interval = f"数据不足（{r['battles']} < {min_battles} 场）"
        need = r.get('needed')
        if r['bt_low'] is None:
            need = '—'
        elif need == 0:
            need = '已分开'
        elif need is None or need > HOPELESS * r['battles']:  # neighbours rated alike: no class day separates them
            need = f"超过 {HOPELESS * r['battles']} 场（评分几乎相同）"
        else:
            need = f'约 {need} 场'
        lines.append(f"| {r['rank_ub'] or '—'} | {md(r['model'])} |" + (f" {r.get('group') or '—'} |" if several else '') +
                     f" {'—' if r['bt'] is None else format(r['bt'], '.1f')} | {interval} | {need} | {r['elo']:.1f} | "
                     f"{r['battles']} | {r['wins']} / {r['ties']} / {r['losses']} | "
                     f"{'—' if r['win_rate'] is None else format(100 * r['win_rate'], '.0f') + '%'} |")
    return '\n'.join(lines)


def notes(board):
    """What the board left out and why it may mislead, as Chinese sentences (empty when nothing to say)."""
    out = [f'{n} 票未计入：{LEFT_OUT_TEXT.get(rule, rule)}' for rule, n in board['left_out'].items() if n]
    out += [f'计入的票中 {n} 票来自自动评审 {md(kind)}，不是人投的（python judge.py --board_only=True 把人与评审的排行分开显示）'
            for kind, n in sorted(board.get('judged', {}).items())]
    if board['flagged']:
        out.append('离群的投票人：' + '、'.join(md(v) for v in sorted(board['flagged'])))
    if board['groups'] > 1:
        out.append(f"⚠️ 对战关系分成了 {board['groups']} 个互不相连的组（“组”一列）：不同组的模型从没直接或间接比过，"
                   '组间的分数不能比较，排名只在组内计算。')
    odd = [r['model'] for r in board['rows'] if r.get('record') and r['battles']]
    if odd:
        out.append('⚠️ ' + '、'.join(md(n) for n in odd) + ' 只有全胜、全负或全平的记录：每次重抽样都一样，'
                   '区间会是零宽，分数只靠先验，所以不给区间和排名。')
    return out


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


# ----------------------------------------------------------------------------- the command line
votes = 'out/arena.db'  # the votes store (or a votes.jsonl); also accepted as the one bare argument
output = 'table'  # table or json (--json is short for --output=json)
anchor = ''  # a model pinned at 1000 on the BT scale; empty: the mean of all models is 1000
bootstrap_rounds = 200  # resamples of the votes behind each 95% interval
min_battles = 10  # fewer counted battles than this: "not enough data" instead of an interval and a rank
include_leaked = False  # also count votes on battles whose answers named a model
daily_cap = 0  # votes per named voter per UTC day that count; 0: no cap
outlier_alpha = 0.001  # significance of the outlier test on named voters; 0: off
seed = 0  # seed of the resampling: the same votes always give the same board


def main(path, output, anchor, bootstrap_rounds, min_battles, include_leaked, daily_cap, outlier_alpha, seed,
         import_from='', export_to=''):
    """The command's work with its settings passed in; errors raise ValueError for __main__ to print."""
    if output not in ('table', 'json'):
        raise ValueError(f'--output must be table or json, got {output!r}')
    if import_from or export_to:
        if not is_store(path):
            raise ValueError(f'--import and --export need a votes store (.db) as the file, got {path}')
        for given in filter(None, (import_from, export_to)):
            if os.path.isdir(given):
                raise ValueError(f'{given} is a folder, not a votes file')
        db = store.connect(path)
        try:
            if import_from:
                if not os.path.exists(import_from):
                    raise ValueError(f'{import_from}: no such votes file')
                added, present, bad = store.import_jsonl(db, import_from)
                for line in bad:
                    print(f'skipped {line}', file=sys.stderr)
                print(f'imported {added} votes from {import_from} into {path} ({present} already there, {len(bad)} bad lines skipped)')
            if export_to:
                print(f'exported {store.export(db, export_to)} votes from {path} to {export_to}')
        finally:
            db.close()
        return
    if os.path.isdir(path):
        raise ValueError(f'{path} is a folder, not a votes file (give out/arena.db or a votes.jsonl)')
    if not os.path.exists(path):
        raise ValueError(f'{path}: no such votes file')
    owners = {}
    if is_store(path):
        db = store.connect(path)
        owners = {c['name']: c['owner'] for c in store.contestants(db)}
        db.close()
    result = leaderboard(path, anchor=anchor, rounds=bootstrap_rounds, min_battles=min_battles,
                         include_leaked=include_leaked, seed=seed, owners=owners, daily_cap=daily_cap,
                         outlier_alpha=outlier_alpha)
    for line in result['bad']:
        print(f'skipped {line}', file=sys.stderr)
    if output == 'json':
        import json
        print(json.dumps(result['rows'], ensure_ascii=False, indent=1))
        return
    print(table(result, min_battles))
    left = ', '.join(f'{n} {rule}' for rule, n in result['left_out'].items() if n) or 'none'
    print(f"\n{result['counted']} of {result['votes']} votes counted (left out: {left}); "
          f"{len(result['bad'])} bad lines skipped; BT on the Elo scale, {bootstrap_rounds} bootstrap rounds.")
    for line in notes(result):
        print(line)


if __name__ == '__main__':
    # the script's own inputs (the votes file, --import=, --export=) are taken here; only settings and config
    # files reach the configurator
    inputs, given, import_from, export_to = [], [], '', ''
    for a in sys.argv[1:]:
        if a.startswith('--import='):
            import_from = a.split('=', 1)[1]
        elif a.startswith('--export='):
            export_to = a.split('=', 1)[1]
        elif a == '--json':
            given.append('--output=json')
        elif a.startswith('-') or a.endswith('.py'):
            given.append(a)
        else:
            inputs.append(a)
    if len(inputs) > 1:
        sys.exit(f'error: one votes file at a time, got {len(inputs)}: {" ".join(inputs)}')
    sys.argv = [sys.argv[0], *given]
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    try:
        main(inputs[0] if inputs else votes, output, anchor, bootstrap_rounds, min_battles, include_leaked, daily_cap,
             outlier_alpha, seed, import_from, export_to)
    except (ValueError, OSError) as e:
        sys.exit(f'error: {e}')

"""The arena's plain functions: Elo replayed from a votes file, bootstrap intervals, the leaderboard, the peers file."""
import json

import pytest

from sample_gradio import bootstrap_elo, compute_elo, leaderboard_markdown, leaderboard_rows, load_peers, read_votes


def expected(ra, rb):
    return 1 / (1 + 10 ** ((rb - ra) / 400))


def write_votes(path, rows):
    with open(path, 'w', encoding='utf-8') as f:
        for a, b, vote in rows:
            f.write(json.dumps({'time': '2026-01-01T00:00:00+00:00', 'prompt': 'p', 'params': {}, 'model_a': a,
                                'model_b': b, 'answer_a': '..', 'answer_b': '..', 'vote': vote}, ensure_ascii=False) + '\n')
    return str(path)


def test_elo_replays_a_hand_made_votes_file_exactly(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', [('x', 'y', 'A'), ('y', 'z', 'tie'), ('z', 'x', 'B'), ('x', 'y', 'both_bad')])
    battles, bad = read_votes(path)
    assert battles == [('x', 'y', 1.0), ('y', 'z', 0.5), ('z', 'x', 0.0), ('x', 'y', 0.5)] and bad == []
    # by hand: vote 1, equal ratings, expected 0.5, K=4 -> x +2, y -2
    assert compute_elo(battles[:1]) == {'x': 1002.0, 'y': 998.0}
    # vote 2: y (998) ties z (1000): E_y = 1/(1+10^(2/400)) = 0.4971218..., y gains 4*(0.5-E_y) = 0.0115128
    elo = compute_elo(battles[:2])
    assert elo['y'] == pytest.approx(998.0115128, abs=1e-6) and elo['z'] == pytest.approx(999.9884872, abs=1e-6)
    # vote 3: x (1002) beats z (999.98849) from the B side: E_z = 0.4971053, x gains 4*0.4971053 = 1.9884209
    elo = compute_elo(battles[:3])
    assert elo['x'] == pytest.approx(1003.9884209, abs=1e-6) and elo['z'] == pytest.approx(998.0000663, abs=1e-6)
    # vote 4: both bad counts as a tie; x (1003.98842) vs y (998.01151)
    elo = compute_elo(battles)
    e = expected(1003.9884209309151, 998.0115127982992)
    assert elo['x'] == pytest.approx(1003.9884209309151 + 4 * (0.5 - e), abs=1e-9)
    assert elo['x'] == pytest.approx(1003.9540185, abs=1e-6) and elo['y'] == pytest.approx(998.0459153, abs=1e-6)
    assert sum(elo.values()) == pytest.approx(3000.0)  # Elo only moves points between players


def test_bootstrap_intervals_by_hand():
    # one vote: every resample is that vote, so the interval is the point itself
    assert bootstrap_elo([('x', 'y', 1.0)], rounds=50) == {'x': (1002.0, 1002.0), 'y': (998.0, 998.0)}
    # x beats y, then y beats x: a resample is one of four sequences, each about a quarter of the time,
    # so the 2.5% and 97.5% points are the lowest and highest of the four outcomes for x
    win, loss = 1.0, 0.0
    after_win = 1002.0
    outcomes = {
        'win,win': after_win + 4 * (win - expected(after_win, 998.0)),
        'win,loss': after_win + 4 * (loss - expected(after_win, 998.0)),
        'loss,win': 998.0 + 4 * (win - expected(998.0, 1002.0)),
        'loss,loss': 998.0 + 4 * (loss - expected(998.0, 1002.0)),
    }
    ci = bootstrap_elo([('x', 'y', 1.0), ('x', 'y', 0.0)], rounds=400, seed=3)
    assert ci['x'] == pytest.approx((min(outcomes.values()), max(outcomes.values())), abs=1e-9)
    assert ci['y'] == pytest.approx((2000 - max(outcomes.values()), 2000 - min(outcomes.values())), abs=1e-9)
    # the same seed gives the same intervals; another seed on lopsided data still brackets the ratings
    battles = [('x', 'y', 1.0)] * 6 + [('y', 'z', 0.5), ('z', 'x', 0.0), ('y', 'x', 1.0)]
    assert bootstrap_elo(battles, seed=1) == bootstrap_elo(battles, seed=1)
    lo, hi = bootstrap_elo(battles, seed=2)['x']
    assert lo < hi and lo > 990 and hi < 1030
    assert bootstrap_elo([]) == {}


def test_leaderboard_counts_and_bad_lines(tmp_path):
    path = write_votes(tmp_path / 'votes.jsonl', [('x', 'y', 'A'), ('y', 'x', 'A'), ('x', 'y', 'tie')])
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"model_a": "x", "model_b": "y", "vote": "maybe"}\nnot json\n')
    battles, bad = read_votes(path)
    assert len(battles) == 3
    assert [b.split(' ')[0] for b in bad] == [f'{path}:4', f'{path}:5']
    rows = leaderboard_rows(battles, names=['x', 'y', 'new'], rounds=20)
    by_name = {r[0]: r for r in rows}
    assert by_name['x'][4:] == (3, 1, 1, 1) and by_name['y'][4:] == (3, 1, 1, 1)
    assert by_name['new'][1:] == (1000.0, 1000.0, 1000.0, 0, 0, 0, 0)
    text = leaderboard_markdown(path, ['x', 'y', 'new'], rounds=20)
    assert '共 3 票' in text and '跳过了 2 行' in text and f'{path}:4' in text
    assert '| new | 1000.0 | 1000.0 ~ 1000.0 | 0 | 0 / 0 / 0 | — |' in text
    assert read_votes(str(tmp_path / 'none.jsonl')) == ([], [])


@pytest.mark.parametrize('entries, message', [
    ([{'name': 'a', 'url': 'http://h:5000', 'modle': 'x'}], "entry 1 ('a'): unknown key(s) ['modle']"),
    ([{'name': 'a', 'checkpoint': 'out/sft'}, {'url': 'http://h:5000'}], 'entry 2: needs a non-empty "name"'),
    ([{'name': 'b'}], "entry 1 ('b'): needs \"url\""),
    ([{'name': 'c', 'url': 'h:5000'}], "entry 1 ('c'): needs \"url\""),
    ([{'name': 'd', 'url': 'http://h:1234/v1', 'kind': 'openai'}], 'an openai peer needs "model"'),
    ([{'name': 'e', 'url': 'http://h:5000', 'kind': 'ollama'}], '"kind" must be one of'),
    ([{'name': 'f', 'checkpoint': 'out/sft', 'url': 'http://h:5000'}], "unknown key(s) ['url']"),
    ([{'name': 'g', 'checkpoint': 'a'}, {'name': 'g', 'checkpoint': 'b'}], "entry 2 ('g'): the name 'g' is used twice"),
    ({'name': 'h'}, 'expected a non-empty JSON list'),
])
def test_peers_file_errors_name_the_entry(tmp_path, entries, message):
    path = tmp_path / 'peers.json'
    path.write_text(json.dumps(entries), encoding='utf-8')
    with pytest.raises(SystemExit) as err:
        load_peers(str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_peers_file_accepts_the_three_kinds(tmp_path):
    entries = [{'name': '本地', 'checkpoint': 'out/sft'}, {'name': '张三的模型', 'url': 'http://192.168.1.20:5000'},
               {'name': 'qwen', 'url': 'http://127.0.0.1:1234/v1', 'kind': 'openai', 'model': 'qwen2-7b-instruct',
                'api_key_env': 'LMSTUDIO_KEY'}]
    path = tmp_path / 'peers.json'
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding='utf-8')
    loaded = load_peers(str(path))
    assert [e.get('kind') for e in loaded] == [None, 'minigpt', 'openai']
    path.write_text('[{"name": "x",}]', encoding='utf-8')
    with pytest.raises(SystemExit, match='not valid JSON'):
        load_peers(str(path))


def test_without_peers_json_the_local_checkpoints_are_used(tmp_path, monkeypatch, capsys):
    from sample_gradio import default_peers
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match='no peers.json and no out/sft or out/pretrain checkpoint'):
        default_peers()
    (tmp_path / 'out' / 'pretrain').mkdir(parents=True)
    (tmp_path / 'out' / 'pretrain' / 'ckpt.pt').write_bytes(b'')
    assert default_peers() == [{'name': 'pretrain (本地)', 'checkpoint': 'out/pretrain'}]
    assert "peers.json not found: using the local checkpoints ['out/pretrain']" in capsys.readouterr().out

"""
judge.py against a scripted judge: a chat-completions server on a loopback port whose verdicts come from a
policy (always A, the longer answer, the answer closest to the reference, HTTP 500), with contestants whose
canned answers have a known quality; the verdict parser on messy replies; calibration, resume, the
leaderboards split by voter, and the command line (a dead judge, checkpoints of one run).
"""
import json
import os
import re
import sqlite3
import threading
from difflib import SequenceMatcher
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, SFT_PAIRS, free_port, run_script, train_tiny_checkpoint, write_sft_pairs

import judge  # noqa: E402
import judge_boards  # noqa: E402
import judge_calibration  # noqa: E402
import judge_verdicts  # noqa: E402
import votes  # noqa: E402
from sft.sft_generate import ask_chat  # noqa: E402

SCRIPT = os.path.join(ROOT, 'judge.py')
PARTS = re.compile(r'【(?:问题|开头)】\n(.*?)\n(?:【参考答案】\n(.*?)\n)?【回答A】\n(.*?)\n【回答B】\n(.*?)\n\n只输出', re.S)


class FakeJudge:
    """
    A chat-completions endpoint on 127.0.0.1 whose reply is policy(question, reference, answer A, answer B):
    a text, or (status, text). Every request's parsed prompt is kept in `seen`.
    """
    def __init__(self, policy):
        self.policy, self.seen, self.lock = policy, [], threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                m = PARTS.search(body['messages'][-1]['content'])
                question, reference, a, b = m.groups()
                with outer.lock:
                    outer.seen.append((question, reference, a, b))
                    got = outer.policy(question, reference, a, b)
                status, text = got if isinstance(got, tuple) else (200, got)
                payload = ({'id': 'x', 'object': 'chat.completion', 'created': 0, 'model': body['model'],
                            'choices': [{'index': 0, 'finish_reason': 'stop', 'message': {'role': 'assistant', 'content': text}}]}
                           if status == 200 else {'error': {'message': text}})
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ask(self, messages):
        return ask_chat(messages, self.url, 'fake-judge', 'JUDGE_TEST_KEY', 10.0, 0.0)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_judge():
    servers = []

    def start(policy):
        servers.append(FakeJudge(policy))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def always_a(question, reference, a, b):
    return 'A'


def longer(question, reference, a, b):
    return 'A' if len(a) > len(b) else 'B' if len(b) > len(a) else '平局'


def closest(question, reference, a, b):
    """Prefers the answer nearer the reference, in the wordings real judges use."""
    ra, rb = (SequenceMatcher(None, x, reference or question).ratio() for x in (a, b))
    return '答案：A' if ra > rb else '[[B]]' if rb > ra else '两个回答一样好，平局。'


# contestants of known quality: the reference itself, half of it, and nothing of it
QUESTIONS = [(i, q, a) for i, q, a in SFT_PAIRS] + [(6, '泰山位于哪里？', '山东省泰安市'), (7, '黄山有什么？', '奇松怪石云海温泉')]
CANNED = {'strong': {q + '##': a for _, q, a in QUESTIONS},
          'medium': {q + '##': a[:max(1, len(a) // 2)] + '吧' for _, q, a in QUESTIONS},
          'weak': {q + '##': '这个问题我不清楚。' for _, q, a in QUESTIONS}}
WEAKER = set(CANNED['medium'].values()) | set(CANNED['weak'].values())
ENTRIES = [{'name': n, 'checkpoint': f'/nowhere/{n}'} for n in CANNED]


@pytest.fixture
def canned(monkeypatch):
    """judge.answer over the canned answers: the contestants answer without a model."""
    calls = []

    def answer(entry, model, question, params=None, timeout=None):
        calls.append((entry['name'], question))
        return CANNED[entry['name']][question]
    monkeypatch.setattr(judge, 'answer', answer)
    return calls


def questions_file(tmp_path, pairs=QUESTIONS, name='q.jsonl'):
    path = tmp_path / name
    write_sft_pairs(str(path), pairs)
    return str(path)


def llm(server, max_attempts=3):
    """The LLM judge asking the fake server, without waiting between tries."""
    return judge_verdicts.llm_judge(server.ask, max_attempts, backoff=0.0)


def run(tmp_path, judge_fn, limit=0, pairs=0, judge_kind='judge:fake', **kw):
    """judge.run on the first `limit` of QUESTIONS (0: all) and the canned contestants: ((report, tally), db)."""
    db = votes.connect(str(tmp_path / 'votes.db'))
    items = judge.load_questions(questions_file(tmp_path), limit)
    return judge.run(db, judge_fn, judge_kind, items, ENTRIES, {}, pairs=pairs, log=lambda *a: None, **kw), db


def battle_requests(server):
    return [s for s in server.seen if s[2] in WEAKER or s[3] in WEAKER]


# ----------------------------------------------------------------------------- reading verdicts
@pytest.mark.parametrize('reply,verdict', [
    ('A', 'A'), ('B', 'B'), ('[[A]]', 'A'), ('[[C]]', 'tie'), ('答案：B', 'B'), ('平局', 'tie'), ('tie', 'tie'),
    ('Tie.', 'tie'), ('Assistant A is better', 'A'), ('B.', 'B'), ('**B**', 'B'), ('结论：平局', 'tie'),
    ('两个回答一样好。', 'tie'), ('我认为A更好，因为它更准确。', 'A'), ('回答B更好', 'B'), ('A的回答更差', 'B'),
    ('Ｂ', 'B'), ('The winner is B.', 'B'), ('Verdict: A', 'A'), ('选A', 'A'), ('A和B都不好', 'tie'),
    ('<think>A说得不对，B对</think>\nB', 'B'), ('Output: A\n\nExplanation: B is wrong.', 'A'), ('最终答案是 **B**', 'B'),
    ('Both are equally good.', 'tie'), ('B gives a better answer.', 'B'), ('Both are fluent, but B is correct.', 'B'), ('Answer: a tie', 'tie'),
    ('', None), ('我无法判断', None), ('A 和 B', None),
])
def test_verdicts_are_read_from_messy_replies(reply, verdict):
    assert judge_verdicts.parse_verdict(reply) == verdict


def test_an_unreadable_reply_is_asked_again_with_a_reminder(fake_judge):
    replies = iter(['嗯……我想想', 'B'])
    server = fake_judge(lambda *a: next(replies))
    item = {'question': '北京是什么？', 'reference': None, 'task': 'question'}
    verdict, reply = judge_verdicts.one_verdict(server.ask, judge_verdicts.judge_messages(item, '首都', '城市'), 3, 0.0)
    assert (verdict, reply, len(server.seen)) == ('B', 'B', 2)


# ----------------------------------------------------------------------------- calibration
def test_a_judge_that_always_says_a_is_caught_by_position_consistency(tmp_path, fake_judge, canned):
    server = fake_judge(always_a)
    (report, tally), db = run(tmp_path, llm(server), limit=4)
    assert tally['judged'] == 4 * 3
    assert report['consistency']['battles'] == [0, 12]
    assert report['trusted'] is False
    assert report['reasons'][0].startswith('position consistency 0% < 60%')
    assert report['probes']['identical']['passed'] == 0
    # a win counts only when both orders agree: every vote of this judge is a tie
    assert {r['vote'] for r in votes.records(db)} == {'tie'}
    assert 'NOT TRUSTED: position consistency 0%' in judge_calibration.calibration_text(report)


def test_a_judge_that_prefers_longer_answers_is_caught_by_the_length_probe(tmp_path, fake_judge, canned):
    server = fake_judge(longer)
    (report, _), _ = run(tmp_path, llm(server), limit=4)
    assert report['consistency']['share'] == 1.0  # consistent, and wrong
    assert report['probes']['length'] == {'asked': 4, 'passed': 0, 'share': 0.0, 'by_kind': {'length': [0, 4]}}
    assert report['trusted'] is False
    assert any(r.startswith('length probe: the reference padded with repetition kept from winning 0/4 (0% < 75%): '
                            'it prefers longer answers') for r in report['reasons'])
    assert not any(r.startswith('position consistency') for r in report['reasons'])


def test_a_judge_that_reads_the_reference_is_trusted_and_ranks_contestants_in_order(tmp_path, fake_judge, canned):
    server = fake_judge(closest)
    (report, tally), db = run(tmp_path, llm(server))
    assert report['trusted'] is True, report['reasons']
    assert report['probes']['corrupted']['share'] == 1.0 and report['probes']['identical']['share'] == 1.0
    assert tally['judged'] == len(QUESTIONS) * 3
    boards = judge.boards_by_voter(db, 'judge:fake')
    rows = boards['judge']['rows']
    assert [r['model'] for r in rows] == ['strong', 'medium', 'weak']
    assert rows[0]['bt'] > rows[1]['bt'] > rows[2]['bt']
    assert (rows[0]['wins'], rows[2]['losses']) == (2 * len(QUESTIONS), 2 * len(QUESTIONS))
    # the record holds the arena's fields, the judge as voter and both raw verdicts
    r = votes.records(db)[0]
    assert r['voter'] == 'fake' and r['voter_kind'] == 'judge:fake' and r['leaked'] is False
    assert r['verdicts'] in (['A', 'B'], ['B', 'A'], ['tie', 'tie'])
    assert set(r) >= {'battle_id', 'time', 'prompt', 'model_a', 'model_b', 'answer_a', 'answer_b', 'vote'}
    saved = tmp_path / 'cal.json'
    judge_calibration.save_calibration(str(saved), report)
    assert json.loads(saved.read_text())['judge:fake']['trusted'] is True


def test_the_reference_and_its_corruptions_are_shown_in_both_orders(tmp_path, fake_judge):
    server = fake_judge(closest)
    items = judge.load_questions(questions_file(tmp_path, QUESTIONS[:2]))
    results = judge_calibration.run_probes(llm(server, max_attempts=1), items, 2)
    assert [p['probe'] for p in results] == ['identical', 'truncated', 'shuffled', 'other answer', 'length'] * 2
    ref = QUESTIONS[0][2]
    asked = [(a, b) for q, r, a, b in server.seen if q == QUESTIONS[0][1]]
    assert asked[:3] == [(ref, ref), (ref, ref[:len(ref) // 2]), (ref[:len(ref) // 2], ref)]
    assert (ref, QUESTIONS[1][2]) in asked and (QUESTIONS[1][2], ref) in asked


def test_agreement_with_people_and_kappa_on_the_battles_both_judged(tmp_path, fake_judge, canned):
    db = votes.connect(str(tmp_path / 'votes.db'))
    # ten human battles of strong against weak: people pick strong 8 times, weak once, and call one a tie
    picks = ['A'] * 8 + ['B', 'tie']
    for i, (vote, (_, q, a)) in enumerate(zip(picks, (QUESTIONS * 2)[:10])):
        votes.add_vote(db, {'battle_id': f'h{i}', 'prompt': q + '##', 'model_a': 'strong', 'model_b': 'weak',
                            'answer_a': a, 'answer_b': '这个问题我不清楚。', 'vote': vote,
                            'leaked': False})
    server = fake_judge(closest)
    items = judge.load_questions(questions_file(tmp_path))  # the references of the people's questions
    report, tally = judge.run(db, llm(server), 'judge:fake', items, ENTRIES, {}, pairs=1, log=lambda *a: None)
    people = report['people']
    # the judge picks strong every time: 8 of 10 agree, 8 of 9 without the human tie, and kappa is 0 (no better than chance)
    assert (people['battles'], people['agreed'], people['without_ties']) == (10, 8, {'battles': 9, 'agreed': 8, 'share': 8 / 9})
    assert people['kappa'] == 0.0
    assert report['trusted'] is False
    assert 'agreement with people: kappa 0.00 < 0.4 on 10 battles' in report['reasons']
    assert 'warning: agreement with people: kappa 0.00 < 0.4 on 10 battles\n' in judge_calibration.calibration_text(report)
    # on fewer battles than min_overlap a low kappa is a warning only
    few = judge_calibration.calibration(votes.records(db), 'judge:fake', report['probe_results'], min_overlap=11)
    assert few['trusted'] is True and few['warnings'] == [
        'agreement with people: kappa 0.00 < 0.4 on 10 battles (fewer than 11: not yet a reason to distrust it)']
    rejudged = [r for r in votes.records(db) if r.get('judged_battle')]
    assert sorted(r['judged_battle'] for r in rejudged) == [f'h{i}' for i in range(10)]


def test_cohen_kappa_matches_a_worked_example():
    pairs = [('y', 'y')] * 20 + [('y', 'n')] * 5 + [('n', 'y')] * 10 + [('n', 'n')] * 15
    assert judge_calibration.cohen_kappa(pairs) == pytest.approx(0.4)
    assert judge_calibration.cohen_kappa([]) is None and judge_calibration.cohen_kappa([('t', 't')] * 3) is None


# ----------------------------------------------------------------------------- the rules judge (offline)
def test_the_rules_judge_prefers_the_answer_nearer_the_reference_by_a_margin():
    rules = judge_verdicts.rules_judge(margin=0.1)
    item = {'question': '熊猫喜欢吃什么？', 'task': 'question', 'reference': '熊猫喜欢吃竹子'}
    assert rules(item, '熊猫喜欢吃竹子', '不知道') == ('A', 'Rouge-L F 1.00 : 0.00')
    assert rules(item, '熊猫爱吃竹子', '熊猫喜欢吃竹子') == ('B', 'Rouge-L F 0.77 : 1.00')  # LCS 5 of 6 and 7
    assert rules(item, '熊猫喜欢吃竹子', '熊猫喜欢吃竹子。') == ('tie', 'Rouge-L F 1.00 : 0.93')  # within the margin
    assert judge_verdicts.rules_judge(margin=0.05)(item, '熊猫喜欢吃竹子', '熊猫喜欢吃竹子。')[0] == 'A'
    assert rules(dict(item, reference=None), '熊猫喜欢吃竹子', '不知道') == ('tie', 'no reference answer')
    # a floor, not a judge of meaning: a wrong answer that shares the reference's characters wins (README says so)
    assert rules(dict(item, reference='1931年'), '1932年', '一九三一年') == ('A', 'Rouge-L F 0.80 : 0.20')


def test_the_rules_judge_ranks_contestants_of_known_strength_and_passes_its_calibration(tmp_path, canned):
    (report, tally), db = run(tmp_path, judge_verdicts.rules_judge(), judge_kind='judge:rules')
    assert report['trusted'] is True, report['reasons']
    assert report['consistency']['share'] == 1.0
    assert {name: (p['passed'], p['asked']) for name, p in report['probes'].items()} == \
        {'identical': (4, 4), 'corrupted': (12, 12), 'length': (4, 4)}
    assert tally['judged'] == len(QUESTIONS) * 3
    rows = judge.boards_by_voter(db, 'judge:rules')['judge']['rows']
    assert [r['model'] for r in rows] == ['strong', 'medium', 'weak']
    assert (rows[0]['wins'], rows[2]['losses']) == (2 * len(QUESTIONS), 2 * len(QUESTIONS))
    # the same record as an LLM judge's: both orders' verdicts, the scores as its replies
    r = votes.records(db)[0]
    assert (r['voter'], r['voter_kind'], r['leaked']) == ('rules', 'judge:rules', False)
    assert r['verdicts'] in (['A', 'B'], ['B', 'A']) and all(x.startswith('Rouge-L F ') for x in r['replies'])


# ----------------------------------------------------------------------------- resume, failures
def test_a_rerun_judges_only_what_is_new(tmp_path, fake_judge, canned):
    server = fake_judge(closest)
    (_, first), db = run(tmp_path, llm(server), limit=4)
    assert first['judged'] == 12 and len(battle_requests(server)) == 24
    (_, second), _ = run(tmp_path, llm(server), limit=6)
    assert (second['judged'], second['already judged'], len(battle_requests(server))) == (6, 12, 36)
    answered = len(canned)
    (_, third), _ = run(tmp_path, llm(server), limit=6)
    assert (third['judged'], third['already judged'], len(battle_requests(server))) == (0, 18, 36)
    assert len(canned) == answered  # nothing judged, nothing answered
    assert len(votes.records(db)) == 18


def test_a_checkpoint_trained_again_in_its_folder_is_judged_again(tmp_path, canned):
    """The battle id carries which ckpt.pt answered: retraining out/sft and rerunning judges it anew."""
    entries = []
    for name in CANNED:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'ckpt.pt').write_bytes(b'first')
        entries.append({'name': name, 'checkpoint': str(tmp_path / name)})
    db = votes.connect(str(tmp_path / 'votes.db'))
    items = judge.load_questions(questions_file(tmp_path), 2)

    def judged():
        _, tally = judge.run(db, judge_verdicts.rules_judge(), 'judge:rules', items, entries, {}, pairs=0,
                             log=lambda *a: None)
        return tally['judged'], tally['already judged']
    assert judged() == (6, 0) and judged() == (0, 6)
    (tmp_path / 'strong' / 'ckpt.pt').write_bytes(b'trained again')  # another size: another training
    assert judged() == (4, 2)  # strong's two pairs on each question; medium against weak stands


def test_battles_without_a_verdict_are_set_aside_and_retried_on_a_rerun(tmp_path, fake_judge, canned):
    mood = {'answer': False}
    server = fake_judge(lambda q, r, a, b: closest(q, r, a, b) if mood['answer'] or a not in WEAKER and b not in WEAKER
                        else '嗯')
    rejects = tmp_path / 'rejects.jsonl'
    (_, tally), db = run(tmp_path, llm(server, max_attempts=2), limit=2, rejects=str(rejects))
    assert (tally['judged'], tally['no verdict']) == (0, 6)
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert len(lines) == 6 and lines[0]['reply'] == '嗯' and lines[0]['reason'] == 'no verdict (A, B or tie) in the reply'
    mood['answer'] = True
    (_, tally), _ = run(tmp_path, llm(server), limit=2)
    assert tally['judged'] == 6


def test_a_judge_that_goes_down_mid_run_stops_it_with_the_votes_kept(tmp_path, fake_judge, canned):
    count = {'battles': 0}

    def policy(q, r, a, b):
        if a in WEAKER or b in WEAKER:
            count['battles'] += 1
            if count['battles'] > 4:  # two battles (both orders each), then 500s
                return 500, 'overloaded'
        return closest(q, r, a, b)
    server = fake_judge(policy)
    with pytest.raises(judge_verdicts.JudgeDown, match=r'did not answer 3 battles in a row, 2 tries each \(HTTP 500\)'):
        run(tmp_path, llm(server, max_attempts=2), limit=4)
    assert len(votes.records(votes.connect(str(tmp_path / 'votes.db')))) == 2


@pytest.mark.slow
@pytest.mark.parametrize('how', ['refused', 'http500'])
def test_a_failing_judge_server_stops_the_command_with_one_line(tmp_path, fake_judge, how):
    url = f'http://127.0.0.1:{free_port()}/v1' if how == 'refused' else fake_judge(lambda *a: (500, 'boom')).url
    proc = run_script([SCRIPT, f'--questions={questions_file(tmp_path)}', f'--votes={tmp_path / "v.db"}',
                       f'--base_url={url}', '--model=judge-x', '--checkpoints=a_run/ckpt_1,a_run/ckpt_2', '--backoff=0',
                       '--max_attempts=2'], check=False, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    why = 'connection failed' if how == 'refused' else 'HTTP 500'
    assert last.startswith(f'error: the judge judge-x at {url} did not answer a calibration probe ({why}'), last


@pytest.mark.slow
def test_a_judge_that_refuses_the_model_stops_at_once(tmp_path, fake_judge):
    server = fake_judge(lambda *a: (404, 'model not found'))
    proc = run_script([SCRIPT, f'--questions={questions_file(tmp_path)}', f'--votes={tmp_path / "v.db"}',
                       f'--base_url={server.url}', '--model=nope', '--checkpoints=a,b', '--backoff=0'], check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f'error: the judge nope at {server.url} refused a calibration probe (HTTP 404)')
    assert len(server.seen) == 1  # refused: not asked again


# ----------------------------------------------------------------------------- questions, boards
def test_question_files_of_both_formats_and_their_errors(tmp_path):
    items = judge.load_questions(os.path.join(ROOT, 'examples.csv'))
    assert items[0] == {'prompt': '新华社北京１月１日电', 'question': '新华社北京１月１日电', 'reference': None, 'task': 'continuation'}
    assert {'prompt': '国务院总理是谁？##', 'question': '国务院总理是谁？', 'reference': '李鹏', 'task': 'question'} in items
    jsonl = questions_file(tmp_path, [(0, '北京是什么？', '首都'), (1, '北京是什么？', '首都')])
    assert judge.load_questions(jsonl) == [{'prompt': '北京是什么？##', 'question': '北京是什么？', 'reference': '首都',
                                           'task': 'question'}]
    bad = tmp_path / 'bad.jsonl'
    for line, value in (('{"question": 5}', '5'), ('{"question": " ## "}', "' ## '"), ('{"answer": "x"}', 'None')):
        bad.write_text('{"question": "a##"}\n' + line + '\n', encoding='utf-8')
        with pytest.raises(ValueError, match=rf'bad.jsonl:2 "question": the question must be a non-empty string, got {value}$'):
            judge.load_questions(str(bad))
    csv = tmp_path / 'q.csv'
    csv.write_text('text\n北京\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r'q.csv:1: expected a header with a "prompt" column'):
        judge.load_questions(str(csv))


def test_pairs_are_drawn_as_the_arena_draws_them():
    import random
    entries = [{'name': 'sft', 'checkpoint': '/m/sft'}, {'name': 'sft again', 'checkpoint': '/m/sft'},
               {'name': 'pre', 'checkpoint': '/m/pre'}, {'name': 'off', 'checkpoint': '/m/off', 'weight': 0}]
    assert judge.draw_pairs(entries, 0, random.Random(0)) == [('sft', 'pre'), ('sft again', 'pre')]
    drawn = judge.draw_pairs(entries, 5, random.Random(0))
    assert sorted(map(sorted, drawn)) == [['pre', 'sft'], ['pre', 'sft again']]  # all there are, each once
    assert judge.draw_pairs(entries, 1, random.Random('0:q')) == judge.draw_pairs(entries, 1, random.Random('0:q'))


@pytest.mark.slow
def test_a_bad_question_file_stops_the_command_with_one_line(tmp_path):
    bad = tmp_path / 'q.jsonl'
    bad.write_text('{"question": "北京是什么？"}\n{"question": ["x"]}\n', encoding='utf-8')
    proc = run_script([SCRIPT, f'--questions={bad}', f'--votes={tmp_path / "v.db"}', '--checkpoints=a,b'], check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip() == f"error: {bad}:2 \"question\": the question must be a non-empty string, got ['x']"


def test_boards_split_by_voter(tmp_path):
    db = votes.connect(str(tmp_path / 'v.db'))
    n = 0
    for kind, winner, count in (('human', 'A', 3), ('judge:x', 'B', 5), ('judge:y', 'A', 7)):
        for _ in range(count):
            n += 1
            votes.add_vote(db, {'battle_id': str(n), 'prompt': 'p', 'model_a': 'm1', 'model_b': 'm2', 'vote': winner,
                                'leaked': False, 'voter_kind': kind})
    assert judge.boards_by_voter is judge_boards.boards_by_voter  # the judge's public function
    boards = judge.boards_by_voter(db, 'judge:x', rounds=10)
    assert [boards[k]['counted'] for k in ('human', 'judge', 'combined')] == [3, 5, 8]
    assert boards['human']['rows'][0]['model'] == 'm1' and boards['judge']['rows'][0]['model'] == 'm2'
    assert judge.boards_by_voter(str(tmp_path / 'v.db'), rounds=10)['judge']['counted'] == 12  # every judge
    text = judge_boards.side_by_side(boards, 'judge:x')
    assert text.splitlines()[0] == '| # | 人工投票（3 票） | judge:x（5 票） | 合计（8 票） |'
    assert text.splitlines()[2].startswith('| 1 | m1 ') and '| m2 ' in text.splitlines()[2]


def test_each_checkpoint_is_compared_with_the_one_before_it(tmp_path):
    db = votes.connect(str(tmp_path / 'v.db'))
    games = [('run/c2', 'run/c1', 'A')] * 3 + [('run/c1', 'run/c2', 'tie'), ('run/c3', 'run/c2', 'B'), ('run/c1', 'run/c3', 'B')]
    for i, (a, b, vote) in enumerate(games):
        votes.add_vote(db, {'battle_id': str(i), 'prompt': 'p', 'model_a': a, 'model_b': b, 'vote': vote,
                            'leaked': False, 'voter_kind': 'judge:x'})
    text = judge_boards.checkpoint_summary(judge_boards.boards_by_voter(db, 'judge:x', rounds=10)['judge'], ['run/c1', 'run/c2', 'run/c3'])
    first, *rest = text.splitlines()
    assert re.fullmatch(r'checkpoints by the judge: run/c2 \(\d+\) > run/c3 \(\d+\) > run/c1 \(\d+\)', first), first
    assert rest == ['run/c2 against run/c1: 3.5 of 4 (a tie is half; 88%)', 'run/c3 against run/c2: 0 of 1 (a tie is half; 0%)']


@pytest.mark.slow
def test_an_unknown_backend_stops_the_command_with_one_line(tmp_path):
    proc = run_script([SCRIPT, '--backend=llm', f'--votes={tmp_path / "v.db"}'], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --backend='llm': expected 'openai' or 'rules'"


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['openai', 'rules'])
def test_checkpoints_of_one_run_are_ranked_by_the_judge(tmp_path, fake_judge, tiny_checkpoint, backend):
    trained, early = tiny_checkpoint, tmp_path / 'run' / 'ckpt_2'  # 100 steps on SENTENCES, and 2
    train_tiny_checkpoint(early, steps=2)
    csv = tmp_path / 'q.csv'
    csv.write_text('prompt,reference\n北京是中国,的首都。北京有很多名胜古迹。\n长江是中国,最长的河流。长江流经许多省份。\n'
                   '熊猫是中国,的国宝。熊猫喜欢吃竹子。\n春节是中国,最重要的节日。人们在春节吃饺子。\n', encoding='utf-8')
    # the LLM judge is the fake server preferring the answer nearer the reference; the rules judge needs no server
    judge_args = [f'--base_url={fake_judge(closest).url}', '--model=fake'] if backend == 'openai' else ['--backend=rules']
    kind = 'judge:fake' if backend == 'openai' else 'judge:rules'
    args = [SCRIPT, f'--questions={csv}', f'--votes={tmp_path / "v.db"}', *judge_args,
            f'--checkpoints={early},{trained}', '--pairs=0', '--max_new_tokens=20', '--human_battles=0', '--min_battles=1']
    out = run_script(args, timeout=300).stdout
    assert f'checkpoints by the judge: {trained} (' in out and f') > {early} (' in out, out
    assert f'{trained} against {early}: 4 of 4 (a tie is half; 100%)' in out
    assert f'verdict: {kind} is TRUSTED' in out
    db = sqlite3.connect(str(tmp_path / 'v.db'))
    assert db.execute('SELECT COUNT(*) FROM votes WHERE voter_kind = ?', (kind,)).fetchone() == (4,)
    assert json.loads((tmp_path / 'v.db.calibration.json').read_text())[kind]['trusted'] is True
    again = run_script(args, timeout=300).stdout
    assert '0 battles judged, 4 judged before' in again

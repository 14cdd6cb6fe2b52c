"""
The class arena: students' servers (scripted fakes: a tiny http.server on 127.0.0.1 answering /health,
/v1/models and /generate) register, go down and come back; 30 voters vote at once through the page's vote
function; the voter rules; registrations refused over HTTP by a real arena; an arena killed in mid-vote.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

import ratings
import sample_gradio
import votes as store
from conftest import CHROMIUM, FLAGS, PYTHON, ROOT, free_port, run_script, serving
from contestants import draw_pair
from registry import Refused, Registry

ENV = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False', HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')


class Student(BaseHTTPRequestHandler):
    """A student's server.py as the arena sees it: /health, /v1/models listing 'tiny', /generate streaming text."""
    protocol_version = 'HTTP/1.1'
    answer = ['北京', '是中国', '的首都。']

    def do_GET(self):
        body = {'/health': {'status': 'ok'}, '/v1/models': {'object': 'list', 'data': [{'id': 'tiny', 'object': 'model'}]}}
        if self.path not in body:
            self.send_error(404)
            return
        data = json.dumps(body[self.path]).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        for piece in self.answer:
            data = piece.encode()
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
        self.wfile.write(b'0\r\n\r\n')

    def log_message(self, *args):
        pass


def student_server(port=0):
    server = ThreadingHTTPServer(('127.0.0.1', port), Student)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server):
    server.shutdown()
    server.server_close()


@pytest.fixture
def students():
    servers = [student_server() for _ in range(30)]
    yield servers
    closing = [threading.Thread(target=stop, args=(s,)) for s in servers if s.socket.fileno() != -1]
    for t in closing:  # at once: each shutdown waits up to half a second for its loop
        t.start()
    for t in closing:
        t.join()


def wait_until(condition, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ----------------------------------------------------------------------------- registration and heartbeat
def test_30_servers_register_one_goes_down_within_the_expiry_and_comes_back(tmp_path, students, monkeypatch):
    registry = Registry(str(tmp_path / 'arena.db'), token='班级口令', heartbeat=0.2, expiry=0.8, timeout=2)
    for k, server in enumerate(students):
        message = registry.register({'name': f'同学{k:02d}的模型', 'owner': f'同学{k:02d}', 'token': '班级口令',
                                     'url': f'http://127.0.0.1:{server.server_port}'})
        assert message.startswith(f'已注册 同学{k:02d}的模型（同学{k:02d}）：模型 tiny，首字 ')
    # the page draws among the live ones
    monkeypatch.setattr(sample_gradio, 'CONTESTANTS', {})
    monkeypatch.setattr(sample_gradio, 'GROUPS', {})
    monkeypatch.setattr(sample_gradio, 'LEAK_WORDS', [])
    monkeypatch.setattr(sample_gradio, 'REGISTRY', [registry])
    sample_gradio.sync_registered()
    assert len(sample_gradio.CONTESTANTS) == 30 and len(set(sample_gradio.GROUPS.values())) == 30
    rng = random.Random(0)

    def drawn():
        return {n for _ in range(400) for n in draw_pair(sample_gradio.live_weights(), sample_gradio.GROUPS, rng)}
    registry.start()
    try:
        assert len(drawn()) == 30
        port = students[7].server_port
        stop(students[7])
        gone = time.time()
        assert wait_until(lambda: not registry.live('同学07的模型'), 3)
        assert time.time() - gone < 0.8 + 0.2 + 0.5  # within the expiry and one heartbeat (and a busy machine's slack)
        row = next(r for r in registry.rows() if r['name'] == '同学07的模型')
        assert row['up'] is False and row['owner'] == '同学07' and row['last_seen'] >= 0.8
        assert '同学07的模型' not in drawn() and len(drawn()) == 29
        assert '| 同学07的模型 | 同学07 | tiny | **离线** |' in sample_gradio.contestants_view() and '29 个在线，1 个离线' in sample_gradio.contestants_view()
        students[7] = student_server(port)  # back on the same address
        assert wait_until(lambda: registry.live('同学07的模型'), 3)
        assert '同学07的模型' in drawn()
    finally:
        registry.stop()
    # a restarted arena knows the registrations (the store keeps them) and probes them before they count
    again = Registry(str(tmp_path / 'arena.db'), token='班级口令', heartbeat=0.2, expiry=0.8)
    assert len(again.entries) == 30 and again.entries['同学03的模型']['owner'] == '同学03'


def test_registrations_refused_each_with_a_message(tmp_path, students):
    registry = Registry(str(tmp_path / 'arena.db'), fixed={'老师的模型': {'name': '老师的模型', 'checkpoint': 'out/sft'}},
                        token='班级口令', roster={'张三': 'pw1', '李四': 'pw2'}, timeout=1)
    url = f'http://127.0.0.1:{students[0].server_port}'
    good = {'name': '张三的模型', 'owner': '张三', 'password': 'pw1', 'token': '班级口令', 'url': url}
    refusals = [(dict(good, token=''), 403, '班级口令不对'),
                (dict(good, password='pw2'), 403, '张三 不在名单上，或密码不对'),
                (dict(good, url=f'http://127.0.0.1:{free_port()}'), 400, '连不上 http://127.0.0.1:'),
                (dict(good, url='192.168.1.2:5000'), 400, '"url" 应当是 http://地址:端口'),
                (dict(good, name='老师的模型'), 409, "名字 '老师的模型' 已被竞技场的参赛文件占用"),
                (dict(good, model='qwen'), 400, "服务器上没有模型 'qwen'，它有：tiny")]
    for payload, status, message in refusals:
        with pytest.raises(Refused) as err:
            registry.register(payload)
        assert err.value.status == status and message in str(err.value), (payload, str(err.value))
    assert registry.register(good).startswith('已注册 张三的模型（张三）')
    with pytest.raises(Refused, match="名字 '张三的模型' 已被 张三 注册") as err:
        registry.register(dict(good, owner='李四', password='pw2'))
    assert err.value.status == 409
    other = f'http://127.0.0.1:{students[1].server_port}'
    assert registry.register(dict(good, url=other)).startswith('已更新 张三的模型（张三）')  # the same owner moves it
    assert registry.peer('张三的模型') == {'name': '张三的模型', 'url': other, 'kind': 'minigpt', 'model': 'tiny'}


@pytest.mark.slow
def test_registration_over_http_with_the_students_command(tmp_path, students):
    port = free_port()
    url = f'http://127.0.0.1:{students[0].server_port}'
    with serving(['sample_gradio.py', '--peers=', f"--votes={tmp_path / 'arena.db'}", '--host=127.0.0.1', f'--port={port}',
                  '--token=班级口令', '--heartbeat=0.5', '--expiry=2'], f'http://127.0.0.1:{port}/', tmp_path / 'arena.log', ENV):
        arena = f'--arena=http://127.0.0.1:{port}'
        for args, message in (([f'--url={url}'], 'refused (HTTP 403): 班级口令不对'),
                              ([f'--url=http://127.0.0.1:{free_port()}', '--token=班级口令'], 'refused (HTTP 400): 张三的模型 出错：连不上 http://127.0.0.1:')):
            proc = run_script(['registry.py', arena, '--name=张三的模型', '--owner=张三', *args], check=False)
            assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr
        proc = run_script(['registry.py', arena, '--name=张三的模型', '--owner=张三', f'--url={url}', '--token=班级口令'])
        assert proc.stdout.startswith('已注册 张三的模型（张三）：模型 tiny')
        proc = run_script(['registry.py', arena, '--name=张三的模型', '--owner=李四', f'--url={url}', '--token=班级口令'], check=False)
        assert proc.returncode == 1 and proc.stderr.startswith("refused (HTTP 409): 名字 '张三的模型' 已被 张三 注册")
        reply = requests.post(f'http://127.0.0.1:{port}/register', data=b'not json', timeout=10)
        assert reply.status_code == 400 and reply.json() == {'ok': False, 'message': '请求体不是 JSON'}
        from gradio_client import Client
        tab = Client(f'http://127.0.0.1:{port}/', verbose=False).predict(api_name='/contestants')
        assert '| 张三的模型 | 张三 | tiny | 在线 |' in tab and '1 个在线，0 个离线' in tab
    db = store.connect(str(tmp_path / 'arena.db'))
    assert [(c['name'], c['owner'], c['url']) for c in store.contestants(db)] == [('张三的模型', '张三', url)]


# ----------------------------------------------------------------------------- votes through the page
def page_vote(monkeypatch, tmp_path, names, registry=None, **settings):
    """The page's vote function ('A' wins) on a fresh store, with `settings` of sample_gradio set."""
    path = str(tmp_path / 'arena.db')
    monkeypatch.setattr(sample_gradio, 'CONTESTANTS', {n: {'name': n, 'url': 'http://127.0.0.1:1', 'kind': 'minigpt'} for n in names})
    monkeypatch.setattr(sample_gradio, 'votes', path)
    monkeypatch.setattr(sample_gradio, 'STORE', {})
    monkeypatch.setattr(sample_gradio, 'REGISTRY', [registry] if registry else [])
    monkeypatch.setattr(sample_gradio, 'bootstrap_rounds', 50)
    for key, value in settings.items():
        monkeypatch.setattr(sample_gradio, key, value)
    demo = sample_gradio.build_page()
    return [f.fn for f in demo.fns.values() if f.name == 'vote'], path


def fight(battle_id, a, b):
    return {'id': battle_id, 'failed': False, 'names': (a, b), 'secs': (1.0, 2.0), 'prompt': '北京##', 'params': {},
            'answers': ('首都', '城市'), 'leaks': [], 'states': ['done', 'done']}


def test_30_voters_cast_100_votes_each_at_once_none_lost_none_twice(tmp_path, monkeypatch):
    names = [f'模型{k:02d}' for k in range(30)]
    (vote_a, vote_b, *_), path = page_vote(monkeypatch, tmp_path, names)
    monkeypatch.setattr(sample_gradio, 'board_text', lambda: ('board', None))  # the write path is under test, not the board
    expected, errors, lock = [], [], threading.Lock()

    def voter(k):
        rng = random.Random(k)
        for n in range(100):
            a, b = rng.sample(names, 2)
            battle = fight(f'{k}-{n}', a, b)
            vote = vote_a if rng.random() < 0.6 else vote_b
            try:
                vote(battle, SimpleNamespace(username=f'同学{k:02d}'))
                if rng.random() < 0.2:  # a double click: refused, never written twice
                    with pytest.raises(Exception, match='这一场已经投过票了'):
                        vote(battle, SimpleNamespace(username=f'同学{k:02d}'))
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(repr(err))
                continue
            with lock:
                expected.append({'battle_id': battle['id'], 'model_a': a, 'model_b': b,
                                 'vote': 'A' if vote is vote_a else 'B', 'voter': f'同学{k:02d}'})
    threads = [threading.Thread(target=voter, args=(k,)) for k in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = {r['battle_id']: r for r in sample_gradio.store.records(store.connect(path))}
    assert len(records) == len(expected) == 3000
    assert all({k: records[e['battle_id']][k] for k in e} == e for e in expected)
    # the board from the store equals the board computed on the fly from what the voters were told was recorded
    fly = tmp_path / 'fly.jsonl'
    fly.write_text(''.join(json.dumps(e, ensure_ascii=False) + '\n' for e in expected), encoding='utf-8')
    db_board, fly_board = ratings.leaderboard(path, rounds=50), ratings.leaderboard(str(fly), rounds=50)
    no_elo = lambda board: [{k: v for k, v in r.items() if k != 'elo'} for r in board['rows']]  # noqa: E731
    assert no_elo(db_board) == no_elo(fly_board) and db_board['counted'] == 3000  # online Elo replays the order: the
    # voters' threads told in a different order than the store committed, so only Elo may differ


def test_own_model_vote_is_kept_left_out_and_said_and_a_colluder_is_flagged(tmp_path, monkeypatch, students):
    registry = Registry(str(tmp_path / 'arena.db'), timeout=2)
    registry.register({'name': '张三的模型', 'owner': '张三', 'url': f'http://127.0.0.1:{students[0].server_port}'})
    names = ['张三的模型', '甲', '乙', '丙', '丁']
    strength = {'张三的模型': 0, '甲': 1, '乙': 2, '丙': 3, '丁': 4}  # 张三的模型 is the weakest
    (vote_a, vote_b, *_), path = page_vote(monkeypatch, tmp_path, names, registry, outlier_alpha=0.001, daily_cap=0)
    rng = random.Random(1)
    with monkeypatch.context() as quick:  # the board after each of 600 votes is not under test here
        quick.setattr(sample_gradio, 'board_text', lambda: ('board', None))
        for n in range(600):  # 20 honest voters: the stronger model wins 80% of the time
            a, b = rng.sample(names[1:], 2) if n % 3 else rng.sample(names, 2)
            better = a if strength[a] > strength[b] else b
            winner = better if rng.random() < 0.8 else (b if better == a else a)
            (vote_a if winner == a else vote_b)(fight(f'h{n}', a, b), SimpleNamespace(username=f'同学{n % 20:02d}'))
    reveal = vote_a(fight('own', '张三的模型', '甲'), SimpleNamespace(username='张三'))[0]
    assert '这一场有你自己注册的模型：这一票保留，但不计入排行榜。' in reveal
    for n in range(30):  # always the weakest model, whoever it meets
        other = names[1 + n % 4]
        vote_a(fight(f'c{n}', '张三的模型', other), SimpleNamespace(username='捣乱者')) if n % 2 else \
            vote_b(fight(f'c{n}', other, '张三的模型'), SimpleNamespace(username='捣乱者'))
    assert 'own' in {r['battle_id'] for r in store.records(store.connect(path))}  # kept
    board = sample_gradio.board_text()[0]
    assert '1 票未计入：投票人给自己注册的模型投票（保留，不计入）' in board
    assert '30 票未计入：投票人的选择与其他人的共识相差太大（离群检验）' in board and '离群的投票人：捣乱者' in board
    flagged = ratings.leaderboard(path, owners={'张三的模型': '张三'}, outlier_alpha=0.001, rounds=20)['flagged']
    assert list(flagged) == ['捣乱者'] and flagged['捣乱者'] <= 30


def test_daily_cap_is_said_to_the_voter(tmp_path, monkeypatch):
    (vote_a, *_), path = page_vote(monkeypatch, tmp_path, ['甲', '乙'], daily_cap=2)
    reveals = [vote_a(fight(f'b{n}', '甲', '乙'), SimpleNamespace(username='李四'))[0] for n in range(3)]
    assert ['超过 2 票' in r for r in reveals] == [False, False, True]
    assert '1 票未计入：超过每人每天的票数上限' in sample_gradio.board_text()[0]


def test_answers_and_names_are_escaped_in_the_panes_and_the_reveal(tmp_path, monkeypatch):
    chat = sample_gradio.chat('a<b', '<img src="http://127.0.0.1:9/x"> ok', 'done')
    assert chat[1]['content'] == '&lt;img src="http://127.0.0.1:9/x"&gt; ok' and chat[0]['content'] == 'a&lt;b'
    (vote_a, *_), path = page_vote(monkeypatch, tmp_path, ['a|b', '<img src=x>'])
    reveal = vote_a(fight('b1', 'a|b', '<img src=x>'), None)[0]
    assert '**a\\|b**' in reveal and '**&lt;img src=x&gt;**' in reveal and '<img' not in reveal


# ----------------------------------------------------------------------------- a kill in mid-vote
WRITER = """
import sys, uuid
sys.path.insert(0, {root!r})
import votes
db = votes.connect({path!r})
print('ready', flush=True)
n = 0
while True:
    votes.add_vote(db, {{'battle_id': uuid.uuid4().hex, 'model_a': 'x', 'model_b': 'y', 'vote': 'A', 'voter': 'v',
                        'answer_a': '长' * 20000, 'answer_b': '答' * 20000, 'prompt': 'p'}})
    n += 1
"""


@pytest.mark.slow
def test_a_killed_writer_leaves_whole_votes_and_a_clean_store(tmp_path):
    path = str(tmp_path / 'arena.db')
    for attempt in range(3):
        proc = subprocess.Popen([PYTHON, '-c', WRITER.format(root=ROOT, path=path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == 'ready'
        time.sleep(0.3 + 0.2 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    db = sqlite3.connect(path)
    assert db.execute('PRAGMA integrity_check').fetchone() == ('ok',)
    votes_n = db.execute('SELECT COUNT(*) FROM votes').fetchone()[0]
    assert votes_n > 3
    assert db.execute('SELECT COUNT(*) FROM battles').fetchone()[0] == votes_n  # each vote with its battle, or neither
    assert db.execute('SELECT COUNT(*) FROM votes v LEFT JOIN battles b USING (battle_id) WHERE b.battle_id IS NULL').fetchone()[0] == 0
    assert all(len(r['answer_a']) == 20000 for r in store.records(store.connect(path)))
    assert ratings.leaderboard(path, rounds=10)['counted'] == votes_n


# ----------------------------------------------------------------------------- in a real browser
@pytest.mark.slow
def test_browser_contestants_tab_and_leaderboard_with_30_registered_servers(tmp_path, students):
    """Screenshots under tmp_path (and ARENA_SCREENSHOTS, when set): the 参赛者 tab and the board, 30 servers."""
    from bench.bench_ratings import synthetic_votes
    from playwright.sync_api import sync_playwright
    if not os.path.exists(CHROMIUM):
        pytest.skip('Debian chromium not installed')
    names = [f'同学{k:02d}的模型' for k in range(30)]
    db_path, port = str(tmp_path / 'arena.db'), free_port()
    synthetic_votes(str(tmp_path / 'votes.jsonl'), 3000, names, seed=4)
    store.import_jsonl(store.connect(db_path), str(tmp_path / 'votes.jsonl'))
    with serving(['sample_gradio.py', '--peers=', f'--votes={db_path}', '--host=127.0.0.1', f'--port={port}', '--token=t',
                  '--heartbeat=0.5', '--expiry=2', '--bootstrap_rounds=100'], f'http://127.0.0.1:{port}/',
                 tmp_path / 'arena.log', ENV), sync_playwright() as p:
        for k, server in enumerate(students):
            reply = requests.post(f'http://127.0.0.1:{port}/register', timeout=30,
                                  json={'name': names[k], 'owner': f'同学{k:02d}', 'token': 't', 'url': f'http://127.0.0.1:{server.server_port}'})
            assert reply.status_code == 200, reply.text
        stop(students[3])
        stop(students[17])
        time.sleep(3)  # past the expiry: both are down
        browser = p.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, viewport={'width': 1400, 'height': 1000})
        try:
            page = browser.new_page()
            page.goto(f'http://127.0.0.1:{port}/', timeout=60_000)
            page.get_by_role('tab', name='参赛者').click()
            page.wait_for_function("() => document.getElementById('contestants').innerText.includes('28 个在线，2 个离线')",
                                   timeout=60_000)
            people = page.locator('#contestants').inner_text()
            page.screenshot(path=str(tmp_path / 'contestants.png'), full_page=True)
            page.get_by_role('tab', name='排行榜').click()
            page.wait_for_function("""() => ['win_matrix', 'count_matrix'].every(id => {
                const img = document.querySelector('#' + id + ' img'); return img && img.complete && img.naturalWidth > 300; })""",
                                   timeout=120_000)
            board = page.locator('#leaderboard').inner_text()
            page.screenshot(path=str(tmp_path / 'leaderboard.png'), full_page=True)
        finally:
            browser.close()
    assert all(n in people for n in names) and people.count('\t离线\t') == 2
    assert all(n in board for n in names) and '还需对战' in board and '共 3000 票' in board
    if os.environ.get('ARENA_SCREENSHOTS'):
        import shutil
        for name in ('contestants.png', 'leaderboard.png'):
            shutil.copy(tmp_path / name, os.path.join(os.environ['ARENA_SCREENSHOTS'], name))


def test_the_teacher_downloads_the_board_and_the_votes(tmp_path, monkeypatch):
    (vote_a, vote_b, *_), path = page_vote(monkeypatch, tmp_path, ['甲', '乙'], roster='roster.csv', teacher='老师')
    for n in range(12):
        (vote_a if n % 3 else vote_b)(fight(f'b{n}', '甲', '乙'), SimpleNamespace(username='李四'))
    with pytest.raises(ValueError, match='只有老师'):
        sample_gradio.downloads(SimpleNamespace(username='李四'))
    board_csv, votes_csv = sample_gradio.downloads(SimpleNamespace(username='老师'))
    import csv
    with open(board_csv, encoding='utf-8-sig', newline='') as f:
        board = list(csv.DictReader(f))
    with open(votes_csv, encoding='utf-8-sig', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['model'], r['battles'], r['wins']) for r in board] == [('甲', '12', '8'), ('乙', '12', '4')]
    assert len(rows) == 12 and rows[0]['battle_id'] == 'b0' and rows[0]['vote'] == 'B' and rows[0]['voter'] == '李四'


def test_a_roster_file_is_read_or_refused_with_its_line(tmp_path):
    path = tmp_path / 'roster.csv'
    path.write_text('name,password\n张三,pw1\n李四,pw2\n', encoding='utf-8')
    assert sample_gradio.read_roster(str(path)) == {'张三': 'pw1', '李四': 'pw2'}
    for text, message in (('name,password\n张三,pw1\n张三,pw2\n', ":3: the name '张三' is listed twice"),
                          ('name,password\n张三\n', ":2: expected name,password, got ['张三']"),
                          ('user,pass\n张三,pw\n', ':1: the first line must be the header name,password')):
        path.write_text(text, encoding='utf-8')
        with pytest.raises(ValueError) as err:
            sample_gradio.read_roster(str(path))
        assert str(err.value).startswith(f'{path}{message}')

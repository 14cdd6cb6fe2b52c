"""
The arena started for real (sample_gradio.py as a subprocess on a free loopback port), driven with
gradio_client and with a headless Chromium. Contestants: the tiny checkpoint twice (one model: never
paired), server.py serving it (as a MiniGPT peer and as an OpenAI-compatible peer), a peer that streams
slowly, and peers that misbehave: a closed port, HTML, silence before and in the middle of an answer, a
flood. Below them, the plain functions of contestants.py and the page: who may meet whom,
pacing, leaks, one vote per battle.
"""
import csv
import json
import os
import random
import socket
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sample_gradio
import votes as store
from conftest import CHROMIUM, FLAGS, PYTHON, ROOT, free_port, serving
from contestants import TooLong, capped, draw_pair, same_model_groups

# top_p and the penalties off: the page's defaults penalise repeats, which would change what the tiny models recite
OFF = (1.0, 0.0, 0.0)

PROMPT, ANSWER = '北京是中国的', '首都。北京有很多名胜古迹。'
TICK, TICKS = '滴答。', 8  # the slow peer's answer: TICKS pieces, TICK_PAUSE apart
TICK_PAUSE = 0.25
ENV = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False', HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
BODIES = {}  # path -> the last JSON body a test peer received


def stored(path):
    """The votes in a store, as the dicts that were added."""
    db = store.connect(str(path))
    try:
        return store.records(db)
    finally:
        db.close()


class OddPeer(BaseHTTPRequestHandler):
    """Test peers by path: /tick streams slowly; /garbage answers HTML (also as /garbage/v1), /slow stays silent
    longer than the arena waits, /mute sends one piece and then nothing, /flood sends a million characters."""
    protocol_version = 'HTTP/1.1'  # chunked bodies, as server.py streams them

    def do_POST(self):
        BODIES[self.path] = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))) or b'{}')
        try:
            if self.path.startswith('/tick'):
                self.chunked([TICK] * TICKS, TICK_PAUSE)
            elif self.path.startswith('/mute'):
                self.chunked(['我想想'], 8)
            elif self.path.startswith('/flood'):
                self.chunked(['啊' * 10_000] * 100, 0)
            else:
                if self.path.startswith('/slow'):
                    time.sleep(8)
                body = b'<html><body>404 page</body></html>'
                self.send_response(200)
                self.send_header('Content-Type', 'text/html')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the arena gave up or was stopped: as it should
            pass

    def chunked(self, pieces, pause):
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        for piece in pieces:
            data = piece.encode()
            self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
            self.wfile.flush()
            time.sleep(pause)
        self.wfile.write(b'0\r\n\r\n')

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def odd_peer():
    odd = ThreadingHTTPServer(('127.0.0.1', 0), OddPeer)
    threading.Thread(target=odd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{odd.server_port}'
    odd.shutdown()
    odd.server_close()


@pytest.fixture(scope='module')
def arena(tiny_checkpoint, odd_peer, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('arena')
    api_port, port, closed = free_port(), free_port(), free_port()
    # weight 0: never in battles, so every battle is one of the two local names against the slow peer
    peers = [{'name': '本地甲', 'checkpoint': tiny_checkpoint},
             {'name': '本地乙', 'checkpoint': tiny_checkpoint},
             {'name': '滴答同学', 'url': f'{odd_peer}/tick'},
             {'name': '离线同学', 'url': f'http://127.0.0.1:{closed}', 'weight': 0},
             {'name': '乱码同学', 'url': f'{odd_peer}/garbage', 'weight': 0},
             {'name': '网页同学', 'url': f'{odd_peer}/garbage/v1', 'kind': 'openai', 'model': 'x', 'weight': 0},
             {'name': '慢同学', 'url': f'{odd_peer}/slow', 'weight': 0},
             {'name': '哑巴同学', 'url': f'{odd_peer}/mute', 'weight': 0},
             {'name': '话痨同学', 'url': f'{odd_peer}/flood', 'weight': 0},
             {'name': 'API 同学', 'url': f'http://127.0.0.1:{api_port}', 'weight': 0},
             {'name': 'API 同学 (openai)', 'url': f'http://127.0.0.1:{api_port}/v1', 'kind': 'openai', 'model': 'tiny', 'weight': 0}]
    (tmp / 'peers.json').write_text(json.dumps(peers, ensure_ascii=False), encoding='utf-8')
    votes, log = tmp / 'arena.db', tmp / 'arena.log'
    with serving(['server.py', f'--models=tiny={tiny_checkpoint}', '--host=127.0.0.1', f'--port={api_port}'],
                 f'http://127.0.0.1:{api_port}/health', tmp / 'server.log', ENV), \
         serving(['sample_gradio.py', f"--peers={tmp / 'peers.json'}", f'--votes={votes}', '--host=127.0.0.1',
                  f'--port={port}', '--seed=4', '--timeout=5', '--bootstrap_rounds=50', '--leak_words=名胜古迹'],
                 f'http://127.0.0.1:{port}/', log, ENV):
        yield {'url': f'http://127.0.0.1:{port}/', 'votes': votes, 'closed': closed, 'odd': odd_peer, 'log': log}


@pytest.fixture(scope='module')
def client(arena):
    from gradio_client import Client
    return Client(arena['url'], verbose=False)


def answer(chat):
    content = chat[-1]['content']
    text = content if isinstance(content, str) else ''.join(part['text'] for part in content)
    return '' if text == '…' else text


# ----------------------------------------------------------------------------- the arena, live
def test_single_model_streams_from_local_and_server_peers_and_regenerates(client):
    for name in ('本地甲', 'API 同学'):
        job = client.submit(name, PROMPT, 40, 0, 20, *OFF, api_name='/single')
        chat, took = job.result(timeout=60)
        assert answer(chat) == ANSWER and chat[0]['content'][0]['text'] == PROMPT
        assert took.startswith('用时 ') and took.endswith(f'{len(ANSWER)} 字 · 完成')
        texts = [answer(out[0]) for out in job.outputs()]
        assert all(ANSWER.startswith(t) for t in texts), texts  # the pane only ever grows
    chat, took = client.predict('本地甲', 40, 0, 20, *OFF, api_name='/regenerate_single')  # the last prompt again
    assert chat[0]['content'][0]['text'] == PROMPT and answer(chat) == ANSWER and took.endswith('完成')
    # an OpenAI-compatible peer gets the prompt as a chat message; the tiny model's reply to that is
    # unpredictable, but it must arrive without an error
    chat, took = client.predict('API 同学 (openai)', '北京是哪个国家的首都？##', 20, 0, 20, *OFF, api_name='/single')
    assert '⚠️' not in answer(chat) and took.endswith('完成'), (answer(chat), took)
    client.predict('本地乙', '滴答同学', '熊猫是中国的', 40, 0, 20, *OFF, api_name='/side_by_side')
    chat_a, chat_b, took_a, took_b = client.predict('本地乙', '滴答同学', 40, 0, 20, *OFF, api_name='/regenerate_side_by_side')
    assert (answer(chat_a), answer(chat_b)) == ('国宝。熊猫喜欢吃竹子。', TICK * TICKS) and chat_b[0]['content'][0]['text'] == '熊猫是中国的'


def test_sampling_controls_reach_every_kind_of_contestant(client):
    client.predict('滴答同学', '网页同学', PROMPT, 30, 0.7, 11, 0.9, 0.5, 0.25, api_name='/side_by_side')
    assert BODIES['/tick/generate'] == {'prompt': PROMPT, 'max_new_tokens': 30, 'temperature': 0.7, 'top_k': 11, 'top_p': 0.9,
                                        'presence_penalty': 0.5, 'frequency_penalty': 0.25}
    assert BODIES['/garbage/v1/chat/completions'] == {
        'model': 'x', 'messages': [{'role': 'user', 'content': PROMPT}], 'stream': True, 'max_tokens': 30,
        'temperature': 0.7, 'top_p': 0.9, 'presence_penalty': 0.5, 'frequency_penalty': 0.25}  # no top_k: not OpenAI's
    chat, took = client.predict('本地甲', PROMPT, 40, 0, 20, 0.9, 0.5, 0.25, api_name='/single')
    assert took.endswith('完成') and '⚠️' not in answer(chat), answer(chat)
    chat, took = client.predict('本地甲', PROMPT, 40, 0, 20, 1.0, 0.0, 0.0, api_name='/single')  # and off again
    assert answer(chat) == ANSWER


def test_broken_peers_show_a_message_and_the_other_pane_still_works(client, arena):
    expect = {'离线同学': f"连不上 http://127.0.0.1:{arena['closed']}",
              '乱码同学': '回答不是 MiniGPT /generate 的纯文本流（Content-Type: text/html）',
              '网页同学': '回答不是 OpenAI 的流式回答（Content-Type: text/html）',
              '慢同学': f"{arena['odd']}/slow 超过 5 秒没有回应",
              '哑巴同学': f"{arena['odd']}/mute 超过 5 秒没有回应"}  # accepted, one piece, then silence: not "连不上"
    for name, message in expect.items():
        chat_a, chat_b, took_a, took_b = client.predict('本地乙', name, PROMPT, 40, 0, 20, *OFF, api_name='/side_by_side')
        assert answer(chat_a) == ANSWER and took_a.endswith('完成')
        assert answer(chat_b).startswith(f'⚠️ {name} 出错：') or answer(chat_b).startswith('我想想\n\n⚠️'), answer(chat_b)
        assert message in answer(chat_b) and took_b.endswith('出错'), answer(chat_b)
    # a million characters for 40 tokens: cut at 40 * 8 + 100 and marked
    chat_a, chat_b, took_a, took_b = client.predict('本地乙', '话痨同学', PROMPT, 40, 0, 20, *OFF, api_name='/side_by_side')
    assert answer(chat_b) == '啊' * 420 + '（回答超长，已截断）' and took_b.endswith('420 字 · 超长，已截断'), took_b
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match='请先输入提示词'):
        client.predict('本地甲', '   ', 40, 0, 20, *OFF, api_name='/single')
    time.sleep(0.5)
    assert 'Traceback' not in arena['log'].read_text(encoding='utf-8')  # a user's slip is not a crash in the terminal


def test_battle_is_paced_blind_and_voted_once(client, arena):
    from gradio_client.exceptions import AppError
    board = client.predict(api_name='/leaderboard')[0]
    assert '共 0 票' in board and '| — | 本地甲 | — | 数据不足（0 < 10 场） | — | 1000.0 | 0 |' in board
    job = client.submit(PROMPT, 40, 0, 20, *OFF, api_name='/battle')
    chat_a, chat_b, took_a, took_b, note = job.result(timeout=60)
    finals = answer(chat_a), answer(chat_b)
    assert sorted(finals) == sorted([ANSWER, TICK * TICKS])  # one of the local names against the slow peer, never each other
    # equal pacing: while both stream, neither pane shows more than one piece beyond the other, so speed names no one
    running = [out for out in job.outputs() if out[4].startswith('两个匿名模型正在作答')]
    assert len(running) >= TICKS - 2
    for out in running:
        shown = answer(out[0]), answer(out[1])
        short, long = sorted(range(2), key=lambda i: len(shown[i]))
        assert len(shown[long]) - len(shown[short]) <= len(TICK) or shown[short] == finals[short], shown
        assert finals[0].startswith(shown[0]) and finals[1].startswith(shown[1])
        assert '秒' not in out[2] + out[3]  # no clock before the vote
    assert '秒' not in took_a + took_b and took_a.endswith('完成')
    assert note.startswith('请投票：投票后揭晓双方名字。') and '回答里出现了 名胜古迹' in note  # the leak word
    reveal, board = client.predict(api_name='/vote_A')[:2]
    lines = stored(arena['votes'])
    assert len(lines) == 1
    vote = lines[0]
    assert len(vote['battle_id']) == 32 and vote['vote'] == 'A' and vote['prompt'] == PROMPT
    assert vote['leaked'] is True and vote['leak_words'] == ['名胜古迹'] and vote['over_long'] == [] and not vote['stopped']
    assert vote['params'] == {'max_new_tokens': 40, 'temperature': 0.0, 'top_k': 20, 'top_p': 1.0, 'presence_penalty': 0.0,
                              'frequency_penalty': 0.0}
    assert (vote['answer_a'], vote['answer_b']) == finals and vote['time'].endswith('+00:00')
    assert '滴答同学' in (vote['model_a'], vote['model_b']) and vote['seconds_a'] > 0 and vote['seconds_b'] > 0
    assert f"模型 A 是 **{vote['model_a']}**（用时 {vote['seconds_a']:.1f} 秒）" in reveal and '不计入排行榜' in reveal
    assert '共 1 票' in board and '计入 0 票；1 票的回答泄露了模型名字，未计入' in board
    for replay in ('/vote_A', '/vote_B'):  # the same battle id again: refused by the votes file, not only the page
        with pytest.raises(AppError, match='已经投过票'):
            client.predict(api_name=replay)
    assert len(stored(arena['votes'])) == 1 and vote['voter'] == '' and vote['voter_kind'] == 'human'  # anonymous
    # a battle without leaks counts, once
    chat_a, chat_b, took_a, took_b, note = client.predict('熊猫是中国的', 40, 0, 20, *OFF, api_name='/battle')
    assert note == '请投票：投票后揭晓双方名字。'
    board = client.predict(api_name='/vote_tie')[1]
    with pytest.raises(AppError, match='已经投过票'):
        client.predict(api_name='/vote_tie')
    lines = stored(arena['votes'])
    vote = lines[-1]
    assert len(lines) == 2 and vote['leaked'] is False and vote['vote'] == 'tie' and '滴答同学' in (vote['model_a'], vote['model_b'])
    assert '共 2 票' in board and '计入 1 票' in board
    for name in (vote['model_a'], vote['model_b']):  # not enough battles for an interval yet
        assert f'| — | {name} | 1000.0 | 数据不足（1 < 10 场） | — | 1000.0 | 1 | 0 / 1 / 0 | 0% |' in board
    board, win, count = client.predict(api_name='/leaderboard')
    assert '计入 1 票' in board and win and count


def test_stop_ends_a_stream_that_is_waiting_on_a_silent_peer(client):
    job = client.submit('慢同学', PROMPT, 40, 0, 20, *OFF, api_name='/single')
    for _ in range(200):  # the stream has started once its first (empty) update arrived
        if job.outputs():
            break
        time.sleep(0.05)
    client.predict(api_name='/stop_single')  # same session as the stream
    chat, took = job.result(timeout=60)
    assert answer(chat) == '（已停止）' and took.endswith('0 字 · 已停止'), (answer(chat), took)  # not the 5 s timeout message


def test_stop_on_a_streaming_answer_always_reads_stopped(client):
    for _ in range(3):  # the worker and the page loop race to notice Stop: every press must read 已停止
        job = client.submit('滴答同学', PROMPT, 40, 0, 20, *OFF, api_name='/single')
        while not any(answer(out[0]) for out in job.outputs()):
            time.sleep(0.02)
        client.predict(api_name='/stop_single')
        chat, took = job.result(timeout=60)
        assert answer(chat).endswith('（已停止）') and took.endswith('已停止') and answer(chat) != TICK * TICKS, (answer(chat), took)


def test_bad_peers_file_stops_the_arena_at_start(tmp_path):
    path = tmp_path / 'peers.json'
    path.write_text(json.dumps([{'name': '甲', 'checkpoint': 5}], ensure_ascii=False), encoding='utf-8')
    proc = subprocess.run([PYTHON, 'sample_gradio.py', f'--peers={path}', f'--port={free_port()}'], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f"{path}: entry 1 ('甲'): \"checkpoint\" must be a non-empty string, got 5" in proc.stderr
    # a port another arena still holds: one line at start, before any model is loaded
    with socket.socket() as held:
        held.bind(('127.0.0.1', 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run([PYTHON, 'sample_gradio.py', f'--peers={path}', f'--port={port}', '--host=127.0.0.1'],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'error: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use' in proc.stderr


# ----------------------------------------------------------------------------- the plain functions
def test_the_same_model_under_two_names_is_one_group(tmp_path, monkeypatch):
    (tmp_path / 'out' / 'sft').mkdir(parents=True)
    (tmp_path / 'out' / 'sft' / 'ckpt.pt').write_bytes(b'')
    os.symlink(tmp_path / 'out' / 'sft', tmp_path / 'link')
    monkeypatch.chdir(tmp_path)
    entries = [{'name': 'a', 'checkpoint': 'out/sft'}, {'name': 'b', 'checkpoint': str(tmp_path / 'link' / 'ckpt.pt')},
               {'name': 'c', 'url': 'http://127.0.0.1:5000/', 'kind': 'minigpt', 'model': 'sft'},
               {'name': 'd', 'url': 'http://localhost:5000/v1', 'kind': 'openai', 'model': 'sft'},
               {'name': 'e', 'url': 'http://192.168.1.5:5000', 'kind': 'minigpt', 'model': 'sft'},
               {'name': 'f', 'url': 'http://127.0.0.1:5000', 'kind': 'minigpt', 'model': 'pretrain'},
               {'name': 'g', 'url': 'http://192.168.1.6:5000', 'kind': 'minigpt', 'model': 'sft', 'same_as': 'a'},
               {'name': 'h', 'checkpoint': 'out/pretrain'}]
    groups = same_model_groups(entries, local={'192.168.1.5', 'localhost'})  # this machine's LAN address is .5
    assert groups['a'] == groups['b'] == groups['g']  # one checkpoint file, and "same_as"
    assert groups['c'] == groups['d'] == groups['e']  # one server under three names, /generate and /v1
    assert len({groups['a'], groups['c'], groups['f'], groups['h']}) == 4


def test_pairs_are_drawn_by_weight_never_within_a_group_and_sides_at_random():
    rng = random.Random(0)
    weights = {'a': 1, 'a2': 1, 'b': 2, 'c': 1, 'never': 0}
    groups = {'a': 'A', 'a2': 'A', 'b': 'B', 'c': 'C', 'never': 'N'}
    draws = [draw_pair(weights, groups, rng) for _ in range(20_000)]
    pairs = Counter(frozenset(d) for d in draws)
    assert frozenset({'a', 'a2'}) not in pairs and not any('never' in d for d in draws)
    # pair odds = product of weights: a-b 2, a2-b 2, b-c 2, a-c 1, a2-c 1 (of 8)
    for pair, share in (({'a', 'b'}, 2 / 8), ({'b', 'c'}, 2 / 8), ({'a', 'c'}, 1 / 8)):
        assert pairs[frozenset(pair)] / len(draws) == pytest.approx(share, abs=0.015)
    assert sum(d[0] == 'b' for d in draws) / sum('b' in d for d in draws) == pytest.approx(0.5, abs=0.02)
    assert draw_pair({'a': 1, 'a2': 1}, {'a': 'A', 'a2': 'A'}, rng) is None


def test_a_contestant_that_keeps_failing_is_drawn_less_until_it_answers(monkeypatch):
    monkeypatch.setattr(sample_gradio, 'CONTESTANTS', {'x': {'name': 'x', 'weight': 2}, 'y': {'name': 'y'}})
    monkeypatch.setattr(sample_gradio, 'FAILS', {'x': 2, 'y': 3})
    assert sample_gradio.weight('x') == 2 and sample_gradio.weight('y') == pytest.approx(0.1)


def test_pacing_leaks_and_the_cap():
    assert sample_gradio.paced(['abcdef', 'ab'], ['running', 'running']) == ['ab', 'ab']
    assert sample_gradio.paced(['abcdef', 'abc'], ['done', 'running']) == ['abc', 'abc']  # done early: still paced
    assert sample_gradio.paced(['ab', 'abcdef'], ['done', 'running']) == ['ab', 'abcdef']
    assert sample_gradio.paced(['abcdef', 'ab'], ['done', 'done']) == ['abcdef', 'ab']
    assert sample_gradio.paced(['abcdef', '⚠️'], ['running', 'failed']) == ['abcdef', '⚠️']
    words = ['Qwen', '张三的模型', 'x']
    assert sample_gradio.leaks(['我是 QWEN 模型', '你好'], words) == ['Qwen']
    assert sample_gradio.leaks(['x 是未知数'], words) == []  # one-letter words would mark everything
    pieces = capped((p for p in ['啊' * 10] * 5), 25)
    assert next(pieces) + next(pieces) + next(pieces) == '啊' * 25
    with pytest.raises(TooLong):
        next(pieces)


def test_a_battle_id_is_written_once(tmp_path, monkeypatch):
    path = str(tmp_path / 'arena.db')
    db = store.connect(path)
    store.add_vote(db, {'battle_id': 'old', 'model_a': 'x', 'model_b': 'y', 'vote': 'A'})
    db.close()
    monkeypatch.setattr(sample_gradio, 'STORE', {})
    vote = {'model_a': 'x', 'model_b': 'y'}
    assert not sample_gradio.write_vote(dict(vote, battle_id='old', vote='B'), path)  # voted before a restart
    assert sample_gradio.write_vote(dict(vote, battle_id='new', vote='A'), path)
    assert not sample_gradio.write_vote(dict(vote, battle_id='new', vote='B'), path)
    assert [(r['battle_id'], r['vote']) for r in stored(path)] == [('old', 'A'), ('new', 'A')]


def test_a_vote_stands_when_the_leaderboard_fails_after_it(tmp_path, monkeypatch):
    """The page's own vote handler: the vote is written once, and a board that cannot be computed says so."""
    import gradio as gr
    path = tmp_path / 'arena.db'
    monkeypatch.setattr(sample_gradio, 'CONTESTANTS', {n: {'name': n, 'url': 'http://127.0.0.1:1', 'kind': 'minigpt'}
                                                       for n in ('甲', '乙')})
    monkeypatch.setattr(sample_gradio, 'votes', str(path))
    monkeypatch.setattr(sample_gradio, 'STORE', {})

    def broken_board():
        raise RuntimeError('a font went missing')
    monkeypatch.setattr(sample_gradio, 'board_text', broken_board)
    demo = sample_gradio.build_page()
    vote = next(f.fn for f in demo.fns.values() if f.name == 'vote')  # the first is 模型 A 更好
    fight = {'id': 'battle-1', 'failed': False, 'names': ('甲', '乙'), 'secs': (1.25, 2.5), 'prompt': '北京##',
             'params': {'temperature': 0.1}, 'answers': ('首都', '城市'), 'leaks': [], 'states': ['done', 'done']}
    reveal, board, *buttons = vote(fight)
    assert '已记录' in reveal and '模型 A 是 **甲**（用时 1.2 秒）' in reveal
    assert board == '⚠️ 排行榜暂时算不出来（RuntimeError: a font went missing）；你的一票已经记下了。'
    assert [r['battle_id'] for r in stored(path)] == ['battle-1']
    with pytest.raises(gr.Error, match='这一场已经投过票了'):
        vote(fight)  # a second click, or a replayed API call
    assert len(stored(path)) == 1


# ----------------------------------------------------------------------------- in a real browser
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get('CI'), reason='Debian chromium not installed')


@needs_chromium
def test_browser_sees_both_panes_stream(arena, tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, viewport={'width': 1280, 'height': 1100})
        try:
            page = browser.new_page()
            page.goto(arena['url'], timeout=60_000)
            page.get_by_role('tab', name='并排比较').click()
            # every change of either pane's text is recorded, to check that the panes only grow while streaming
            page.evaluate("""() => { window.seen = {sbs_a: [], sbs_b: []};
                for (const id of ['sbs_a', 'sbs_b']) {
                    const el = document.getElementById(id);
                    new MutationObserver(() => window.seen[id].push(el.innerText)).observe(el, {subtree: true, childList: true, characterData: true});
                } }""")
            page.locator('#sbs_prompt textarea').press_sequentially('春节是中国')
            page.locator('#sbs_send').click()
            page.wait_for_function("""() => ['sbs_a', 'sbs_b'].every(id =>
                document.getElementById(id).innerText.includes('最重要的节日。人们在春节吃饺子。')
                && document.getElementById(id + '_time').innerText.includes('完成'))""", timeout=60_000)
            page.screenshot(path=str(tmp_path / 'side_by_side.png'), full_page=True)
            seen = page.evaluate('window.seen')
            for id in ('sbs_a', 'sbs_b'):
                assert '春节是中国' in page.locator(f'#{id}').inner_text()
                assert page.locator(f'#{id}_time').inner_text().startswith('用时 ')
                # what the answer bubble held at each change: a growing prefix of the final answer (… is the placeholder)
                grown = [t.split('春节是中国', 1)[-1].strip().split('\n')[0].strip() for t in seen[id] if '春节是中国' in t]
                grown = [t for t in grown if t != '…']
                assert grown and all('最重要的节日。人们在春节吃饺子。'.startswith(t) for t in grown), grown
            # every example prompt is on the page, none on a second page
            with open(os.path.join(ROOT, 'examples.csv'), encoding='utf-8', newline='') as f:
                examples = [row['prompt'] for row in csv.DictReader(f)]
            text = page.evaluate('() => document.body.innerText')
            assert all(e in text for e in examples if e), [e for e in examples if e not in text]
        finally:
            browser.close()
    assert (tmp_path / 'side_by_side.png').stat().st_size > 10_000


BOARD_NAMES = ['微调模型 (本地)', '预训练模型 (本地)', '张三的模型', '李四的预训练模型', 'LM Studio: qwen', '王五的模型']


@needs_chromium
def test_browser_leaderboard_shows_the_table_and_both_pictures(tmp_path):
    """600 synthetic votes among six contestants (plus leaked votes and bad lines), as a class would have after a week."""
    from bench.bench_ratings import synthetic_votes
    from playwright.sync_api import sync_playwright
    votes, port = tmp_path / 'arena.db', free_port()
    synthetic_votes(str(tmp_path / 'votes.jsonl'), 600, BOARD_NAMES, seed=1, leaked_rate=0.03)
    store.import_jsonl(store.connect(str(votes)), str(tmp_path / 'votes.jsonl'))
    peers = [{'name': n, 'url': f'http://127.0.0.1:{free_port()}', 'model': n} for n in BOARD_NAMES]  # never called here
    (tmp_path / 'peers.json').write_text(json.dumps(peers, ensure_ascii=False), encoding='utf-8')
    with serving(['sample_gradio.py', f"--peers={tmp_path / 'peers.json'}", f'--votes={votes}', '--host=127.0.0.1',
                  f'--port={port}'], f'http://127.0.0.1:{port}/', tmp_path / 'arena.log', ENV), sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, viewport={'width': 1400, 'height': 1000})
        try:
            page = browser.new_page()
            page.goto(f'http://127.0.0.1:{port}/', timeout=60_000)
            page.get_by_role('tab', name='排行榜').click()
            page.wait_for_function("""() => ['win_matrix', 'count_matrix'].every(id => {
                const img = document.querySelector('#' + id + ' img'); return img && img.complete && img.naturalWidth > 300; })""",
                                   timeout=60_000)
            sizes = page.evaluate("() => ['win_matrix', 'count_matrix'].map(id => document.querySelector('#' + id + ' img').naturalWidth)")
            text = page.locator('#leaderboard').inner_text()
            page.screenshot(path=str(tmp_path / 'leaderboard.png'), full_page=True)
        finally:
            browser.close()
    assert all(s > 300 for s in sizes), sizes
    assert all(n in text for n in BOARD_NAMES) and '排名 (UB)' in text and '数据不足' not in text
    assert '票的回答泄露了模型名字，未计入' in text
    assert (tmp_path / 'leaderboard.png').stat().st_size > 50_000
    print(f"leaderboard screenshot: {tmp_path / 'leaderboard.png'}")

"""
The arena started for real (sample_gradio.py as a subprocess on a free loopback port), driven with
gradio_client and with a headless Chromium. Contestants: the tiny checkpoint twice, server.py serving
it (as a MiniGPT peer and as an OpenAI-compatible peer), a closed port, a peer that answers HTML and
a peer that never answers in time.
"""
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import PYTHON, ROOT, free_port, serving

PROMPT, ANSWER = '北京是中国的', '首都。北京有很多名胜古迹。'
ENV = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False', HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')


class OddPeer(BaseHTTPRequestHandler):
    """Peers that misbehave: /garbage answers an HTML page, /slow stays silent longer than the arena waits."""
    def do_POST(self):
        if self.path.startswith('/slow'):
            time.sleep(8)
        body = b'<html><body>404 page</body></html>'
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def arena(tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('arena')
    odd = ThreadingHTTPServer(('127.0.0.1', 0), OddPeer)
    threading.Thread(target=odd.serve_forever, daemon=True).start()
    api_port, port, closed = free_port(), free_port(), free_port()
    peers = [{'name': '本地甲', 'checkpoint': tiny_checkpoint},
             {'name': '本地乙', 'checkpoint': tiny_checkpoint},
             {'name': '离线同学', 'url': f'http://127.0.0.1:{closed}'},
             {'name': '乱码同学', 'url': f'http://127.0.0.1:{odd.server_port}/garbage'},
             {'name': '慢同学', 'url': f'http://127.0.0.1:{odd.server_port}/slow'},
             {'name': 'API 同学', 'url': f'http://127.0.0.1:{api_port}'},
             {'name': 'API 同学 (openai)', 'url': f'http://127.0.0.1:{api_port}/v1', 'kind': 'openai', 'model': 'tiny'}]
    (tmp / 'peers.json').write_text(json.dumps(peers, ensure_ascii=False), encoding='utf-8')
    votes = tmp / 'votes.jsonl'
    try:
        with serving(['server.py', f'--models=tiny={tiny_checkpoint}', '--host=127.0.0.1', f'--port={api_port}'],
                     f'http://127.0.0.1:{api_port}/health', tmp / 'server.log', ENV), \
             serving(['sample_gradio.py', f"--peers={tmp / 'peers.json'}", f'--votes={votes}', '--host=127.0.0.1',
                      f'--port={port}', '--seed=4', '--timeout=5', '--bootstrap_rounds=50'],
                     f'http://127.0.0.1:{port}/', tmp / 'arena.log', ENV):
            yield {'url': f'http://127.0.0.1:{port}/', 'votes': votes, 'closed': closed, 'odd': odd.server_port}
    finally:
        odd.shutdown()
        odd.server_close()


@pytest.fixture(scope='module')
def client(arena):
    from gradio_client import Client
    return Client(arena['url'], verbose=False)


def answer(chat):
    content = chat[-1]['content']
    return content if isinstance(content, str) else ''.join(part['text'] for part in content)


def test_single_model_streams_from_local_and_server_peers(client):
    for name in ('本地甲', 'API 同学'):
        job = client.submit(name, PROMPT, 40, 0, 20, api_name='/single')
        chat, took = job.result(timeout=60)
        assert answer(chat) == ANSWER and chat[0]['content'][0]['text'] == PROMPT
        assert took.startswith('用时 ') and took.endswith(f'{len(ANSWER)} 字 · 完成')
        texts = [answer(out[0]) for out in job.outputs()]
        assert all(ANSWER.startswith(t) for t in texts if t != '…'), texts  # the pane only ever grows
    # an OpenAI-compatible peer gets the prompt as a chat message; the tiny model's reply to that is
    # unpredictable, but it must arrive without an error
    chat, took = client.predict('API 同学 (openai)', '北京是哪个国家的首都？##', 20, 0, 20, api_name='/single')
    assert '⚠️' not in answer(chat) and took.endswith('完成'), (answer(chat), took)


def test_broken_peers_show_a_message_and_the_other_pane_still_works(client, arena):
    expect = {'离线同学': f"连不上 http://127.0.0.1:{arena['closed']}",
              '乱码同学': '回答不是 MiniGPT /generate 的纯文本流（Content-Type: text/html）',
              '慢同学': f"http://127.0.0.1:{arena['odd']}/slow 超过 5 秒没有回应"}
    for name, message in expect.items():
        chat_a, chat_b, took_a, took_b = client.predict('本地乙', name, PROMPT, 40, 0, 20, api_name='/side_by_side')
        assert answer(chat_a) == ANSWER and took_a.endswith('完成')
        assert answer(chat_b).startswith(f'⚠️ {name} 出错：') and message in answer(chat_b) and took_b.endswith('出错'), answer(chat_b)
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match='请先输入提示词'):
        client.predict('本地甲', '   ', 40, 0, 20, api_name='/single')


def test_battle_hides_names_until_one_vote_which_moves_the_leaderboard(client, arena):
    from gradio_client.exceptions import AppError
    board = client.predict(api_name='/leaderboard')
    assert '共 0 票' in board and '| 本地甲 | 1000.0 |' in board
    for _ in range(20):  # pairs are random (seeded): play until one has no broken contestant
        chat_a, chat_b, took_a, took_b, note = client.predict(PROMPT, 40, 0, 20, api_name='/battle')
        if note.startswith('本场有模型出错'):  # not counted, so the names may show
            assert '⚠️' in answer(chat_a) + answer(chat_b) and '模型 A 是 **' in note
            with pytest.raises(AppError, match='不计票'):
                client.predict(api_name='/vote_A')
            continue
        assert note == '请投票：投票后揭晓双方名字。'  # names stay hidden until the vote
        break
    else:
        pytest.fail('no battle between two working contestants in 20 draws')
    reveal, board, = client.predict(api_name='/vote_A')[:2]
    lines = arena['votes'].read_text(encoding='utf-8').splitlines()
    assert len(lines) == 1
    vote = json.loads(lines[0])
    assert vote['vote'] == 'A' and vote['prompt'] == PROMPT and vote['model_a'] != vote['model_b']
    assert vote['params'] == {'max_new_tokens': 40, 'temperature': 0.0, 'top_k': 20}
    assert vote['answer_a'] == answer(chat_a) and vote['answer_b'] == answer(chat_b) and vote['time'].endswith('+00:00')
    assert ANSWER in (vote['answer_a'], vote['answer_b'])
    assert f"模型 A 是 **{vote['model_a']}**，模型 B 是 **{vote['model_b']}**" in reveal
    assert '共 1 票' in board
    assert f"| 1 | {vote['model_a']} | 1002.0 | 1002.0 ~ 1002.0 | 1 | 1 / 0 / 0 | 100% |" in board
    assert f"| {vote['model_b']} | 998.0 | 998.0 ~ 998.0 | 1 | 0 / 0 / 1 | 0% |" in board
    with pytest.raises(AppError, match='已经投过票'):
        client.predict(api_name='/vote_B')
    assert len(arena['votes'].read_text(encoding='utf-8').splitlines()) == 1
    assert '共 1 票' in client.predict(api_name='/leaderboard')


def test_stop_ends_a_stream_that_is_waiting_on_a_silent_peer(client):
    job = client.submit('慢同学', PROMPT, 40, 0, 20, api_name='/single')
    for _ in range(200):  # the stream has started once its first (empty) update arrived
        if job.outputs():
            break
        time.sleep(0.05)
    client.predict(api_name='/stop_single')  # same session as the stream
    chat, took = job.result(timeout=60)
    assert answer(chat) == '（已停止）' and took.endswith('0 字 · 已停止'), (answer(chat), took)  # not the 5 s timeout message


def test_bad_peers_file_stops_the_arena_at_start(tmp_path):
    path = tmp_path / 'peers.json'
    path.write_text(json.dumps([{'name': '甲', 'checkpoint': 'out/sft'}, {'name': '乙', 'adress': 'http://x'}], ensure_ascii=False),
                    encoding='utf-8')
    proc = subprocess.run([PYTHON, 'sample_gradio.py', f'--peers={path}', f'--port={free_port()}'], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"{path}: entry 2 ('乙'): unknown key(s) ['adress']" in proc.stderr


CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get('CI'), reason='Debian chromium not installed')
def test_browser_sees_both_panes_stream(arena, tmp_path):
    from playwright.sync_api import sync_playwright
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / 'profile'), executable_path=CHROMIUM, headless=True,
                                                       args=flags, viewport={'width': 1280, 'height': 1100})
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
            print(f"text changes seen while streaming: {[len(seen[i]) for i in ('sbs_a', 'sbs_b')]}")
        finally:
            browser.close()
    assert (tmp_path / 'side_by_side.png').stat().st_size > 10_000

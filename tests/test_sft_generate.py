"""
sft/sft_generate.py against a real HTTP server on a loopback port that speaks the OpenAI chat-completions
wire format and answers from a script (clean, fenced, prose, too few, ungrounded, invalid, 500, 429, slow),
or with bodies that are no chat completion (not JSON, HTML, a list, no message, not UTF-8), or drops the
connection; a server that is down; a SIGKILL mid-run and a rerun; and the offline rules backend.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import zlib

import pytest

from conftest import (PYTHON, ROOT, ChatServer, free_port, lines, load_script, read_jsonl, run_script, station,
                      write_jsonl)

SCRIPT = os.path.join(ROOT, 'sft', 'sft_generate.py')
RULES_SCRIPT = os.path.join(ROOT, 'sft', 'rules.py')
LIMITS_ARGS = (3, 6, 40, 150)  # the defaults of --min_pairs, --max_pairs, --max_question_chars, --max_answer_chars


def load_generator():
    return load_script('sft/sft_generate.py')


def fullwidth(pairs):
    return '\n'.join('{“question”：“%s”，“answer”：“%s”}' % (p['question'], p['answer']) for p in pairs)


# each article, and what the server answers to its 1st, 2nd, 3rd... request
GOOD = {i: station(i) for i in range(12)}
SCENARIOS = [  # (name, [(status, reply, delay) per attempt], expected: 'accepted' or the reject reason)
    ('clean', [(200, lines(GOOD[0][1]), 0)], 'accepted'),
    ('fenced', [(200, '```json\n' + json.dumps(GOOD[1][1], ensure_ascii=False, indent=2) + '\n```', 0)], 'accepted'),
    ('prose', [(200, '好的，以下是根据文章生成的问答：\n\n' + lines(GOOD[2][1][:2]).replace('"', '“', 1) + '\n'
                + lines(GOOD[2][1][2:]) + '\n\n希望对你有帮助！', 0)], 'accepted'),
    ('fullwidth', [(200, fullwidth(GOOD[3][1]), 0)], 'accepted'),
    ('too_few_then_ok', [(200, lines(GOOD[4][1][:2]), 0), (200, lines(GOOD[4][1]), 0)], 'accepted'),
    ('http500_then_ok', [(500, 'boom', 0), (200, lines(GOOD[5][1]), 0)], 'accepted'),
    ('http429_then_ok', [(429, 'slow down', 0), (200, lines(GOOD[6][1]), 0)], 'accepted'),
    ('slow_then_ok', [(200, lines(GOOD[7][1]), 3.0), (200, lines(GOOD[7][1]), 0)], 'accepted'),
    ('ungrounded', [(200, lines(GOOD[8][1][:2] + [{'question': '第8号气象站有几名职工？', 'answer': '一百二十名职工'}]), 0)],
     'ungrounded'),
    ('invalid_json', [(200, '{"question": "第9号气象站位于哪里？", "answer": 青海省西宁市}\n{"question": ', 0)], 'no_pairs'),
    ('always_500', [(500, 'internal error', 0)], 'http'),
    ('too_few', [(200, lines(GOOD[11][1][:2]), 0)], 'count'),
]


def scripted(article, attempt):
    i = int(re.match(r'第(\d+)号', article).group(1))
    replies = SCENARIOS[i][1]
    return replies[min(attempt, len(replies) - 1)]


def test_parse_pairs_and_grounding():
    g = load_generator()
    LIMITS = g.Limits(*LIMITS_ARGS)
    pairs = GOOD[0][1]
    for reply in (lines(pairs), '```json\n' + json.dumps(pairs, ensure_ascii=False) + '\n```',
                  '以下是问答：\n' + lines(pairs) + '\n以上。', fullwidth(pairs)):
        assert g.parse_pairs(reply) == pairs
    assert g.parse_pairs('{"question": "a", "answer": 1}') == [{'question': 'a', 'answer': '1'}]
    assert g.parse_pairs(SCENARIOS[9][1][0][1]) == []
    # a full-width quote inside a value is content, not a delimiter
    assert g.parse_pairs('{“question”: ““十四五”规划是什么？”, “answer”: “国民经济规划”}') == [
        {'question': '“十四五”规划是什么？', 'answer': '国民经济规划'}]
    article = g.normalize(GOOD[0][0])
    assert g.grounded('青海省西宁市', article) and g.grounded('青海西宁市', article)  # lenient: one char dropped
    assert not g.grounded('一百二十名职工', article) and not g.grounded('西宁', g.normalize('北京是首都。'))
    assert g.check_pairs(pairs, article, LIMITS) is None
    assert g.check_pairs(pairs + [pairs[0]], article, LIMITS)[0] == 'repeat'
    assert g.check_pairs(pairs[:2], article, LIMITS)[0] == 'count'
    assert g.check_pairs([dict(pairs[0], question='它位于哪里？')] + pairs[1:], article, LIMITS)[0] == 'pronoun'
    assert g.check_pairs([dict(pairs[0], answer='青海省\ufffd西宁市')] + pairs[1:], article, LIMITS)[0] == 'bad_chars'
    assert g.check_pairs([dict(pairs[0], answer='')] + pairs[1:], article, LIMITS)[0] == 'empty'
    assert g.check_pairs([dict(pairs[0], question='问' * 41)] + pairs[1:], article, LIMITS)[0] == 'too_long'


def test_openai_backend_against_scripted_server(tmp_path):
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [GOOD[i][0] for i in range(len(SCENARIOS))])
    out, rej = tmp_path / 'pairs.jsonl', tmp_path / 'rejects.jsonl'
    with ChatServer(scripted) as server:
        args = [SCRIPT, f'--input_dir={tmp_path / "corpus"}', f'--output={out}', f'--rejects={rej}',
                f'--base_url={server.url}', '--model=test-model', '--concurrency=4', '--timeout=1.5',
                '--max_attempts=3', '--backoff=0.05', '--api_key_env=SFT_TEST_KEY']
        proc = run_script(args, env={'SFT_TEST_KEY': 'sk-secret-123'}, timeout=60)
        assert {r['auth'] for r in server.requests} == {'Bearer sk-secret-123'}
        assert {r['temperature'] for r in server.requests} == {0.45}
        assert 'sk-secret-123' not in proc.stdout + proc.stderr
        pairs, rejects = read_jsonl(out), read_jsonl(rej)
        expected_ok = [i for i, s in enumerate(SCENARIOS) if s[2] == 'accepted']
        by_id = {}
        for p in pairs:
            by_id.setdefault(p['id'], []).append({'question': p['question'], 'answer': p['answer']})
        assert sorted(by_id) == expected_ok
        for i in expected_ok:
            assert by_id[i] == GOOD[i][1], SCENARIOS[i][0]
        expected_rejects = {i: s[2] for i, s in enumerate(SCENARIOS) if s[2] != 'accepted'}
        assert {r['id']: r['reason'] for r in rejects} == expected_rejects
        assert len(rejects) == len(SCENARIOS) - len(expected_ok)
        for r in rejects:
            assert r['attempts'] == 3 and r['source'].endswith(f'a.jsonl:{r["id"] + 1}')
        assert '一百二十名职工' in next(r['reply'] for r in rejects if r['reason'] == 'ungrounded')
        assert 'internal error' in next(r['reply'] for r in rejects if r['reason'] == 'http')
        assert 'accepted 8 articles (24 pairs), rejected 4' in proc.stdout

        # a rerun skips what is done and what was rejected for its content, and tries the http reject again
        # (three more requests), replacing its record instead of adding one
        n_before = len(server.requests)
        proc = run_script(args, env={'SFT_TEST_KEY': 'sk-secret-123'}, timeout=60)
        assert 'skipped 8 already done and 3 rejected before' in proc.stdout
        assert read_jsonl(out) == pairs
        assert len(server.requests) - n_before == 3
        assert {r['article'] for r in server.requests[n_before:]} == {GOOD[10][0]}  # always_500, the http one
        assert sorted(r['id'] for r in read_jsonl(rej)) == sorted(r['id'] for r in rejects)


# 200 replies that are no chat completion, and what the reject's detail says about each
NO_COMPLETION = {
    'not_json': (b'Internal Server Error: model crashed', 'not JSON'),
    'html': (b'<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>', 'not JSON'),
    'json_list': (json.dumps([{'question': 'q', 'answer': 'a'}]).encode(), 'JSON list'),
    'no_message': (json.dumps({'id': 'x', 'object': 'chat.completion', 'choices': [{'index': 0}]}).encode(),
                   'no choices[0].message'),
    'not_utf8': (b'{"choices": [{"message": {"role": "assistant", "content": "\xff\xfe\xfa"}}]}', 'not UTF-8'),
    'deep': (b'[' * 100000, 'not JSON'),
}


def ids_in(path):
    return [r['id'] for r in read_jsonl(path)] if path.exists() else []


def article_no(article):
    return int(re.match(r'第(\d+)号', article).group(1))


def test_every_bad_reply_is_a_reject_of_its_article_not_the_end_of_the_run(tmp_path):
    kinds = list(NO_COMPLETION)
    n = len(kinds) + 2  # and two articles the server answers well
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [station(i)[0] for i in range(n)])
    out, rej = tmp_path / 'pairs.jsonl', tmp_path / 'rejects.jsonl'

    def reply(article, attempt):
        i = article_no(article)
        return (200, NO_COMPLETION[kinds[i]][0], 0) if i < len(kinds) else (200, lines(station(i)[1]), 0)

    with ChatServer(reply) as server:
        proc = run_script([SCRIPT, f'--input_dir={tmp_path / "corpus"}', f'--output={out}', f'--rejects={rej}',
                           f'--base_url={server.url}', '--concurrency=2', '--max_attempts=2', '--backoff=0.01'],
                          timeout=60)
    assert 'Traceback' not in proc.stderr
    assert sorted(set(ids_in(out))) == [n - 2, n - 1]
    rejects = {r['id']: r for r in read_jsonl(rej)}
    assert sorted(rejects) == list(range(len(kinds))) and len(read_jsonl(rej)) == len(kinds)
    for i, kind in enumerate(kinds):
        r = rejects[i]
        assert r['reason'] == 'http' and r['kind'] == 'reply' and r['attempts'] == 2, (kind, r)
        assert NO_COMPLETION[kind][1] in r['detail'], (kind, r['detail'])
    assert 'Bad Gateway' in rejects[kinds.index('html')]['reply']


def test_thirty_percent_bad_replies_under_concurrency_4_with_spawn(tmp_path):
    """Every article ends up saved or rejected, exactly once, over a run and a rerun, with spawn as the start method."""
    n, bad = 40, list(NO_COMPLETION.values()) + [(b'', 'not JSON')]
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [station(i)[0] for i in range(n)])
    out, rej = tmp_path / 'pairs.jsonl', tmp_path / 'rejects.jsonl'
    up = {'faults': True}

    def reply(article, attempt):
        i = article_no(article)
        h = zlib.crc32(f'{i}/{attempt}'.encode()) % 100
        if up['faults'] and (i % 13 == 0 or h < 30):  # 30% of requests, and every request of articles 0, 13, 26, 39
            return (500, 'overloaded', 0.01) if h % 7 == 0 else (200, bad[h % len(bad)][0], 0.01)
        return 200, lines(station(i)[1]), 0.01

    code = ('import multiprocessing, runpy, sys; multiprocessing.set_start_method("spawn", force=True); '
            'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')
    with ChatServer(reply) as server:
        args = ['-c', code, SCRIPT, f'--input_dir={tmp_path / "corpus"}', f'--output={out}', f'--rejects={rej}',
                f'--base_url={server.url}', '--concurrency=4', '--max_attempts=3', '--backoff=0.01']
        proc = run_script(args, timeout=120)
        saved, rejected = set(ids_in(out)), ids_in(rej)
        assert 'Traceback' not in proc.stderr
        assert len(rejected) == len(set(rejected)) and not saved & set(rejected)
        assert saved | set(rejected) == set(range(n))
        assert {0, 13, 26, 39} <= set(rejected)
        assert all(r['reason'] == 'http' for r in read_jsonl(rej))
        assert len(read_jsonl(out)) == 3 * len(saved)  # no article written twice

        up['faults'] = False  # the server mends: a rerun retries the http rejects, and leaves no record of them
        proc = run_script(args, timeout=120)
    assert f'skipped {len(saved)} already done and 0 rejected before' in proc.stdout
    assert ids_in(rej) == []
    pairs = read_jsonl(out)
    assert sorted(set(ids_in(out))) == list(range(n)) and len(pairs) == 3 * n


def test_server_down_stops_early_and_marks_nothing(tmp_path):
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [station(i)[0] for i in range(30)])
    out, rej = tmp_path / 'pairs.jsonl', tmp_path / 'rejects.jsonl'

    def run(url, *extra):
        return run_script([SCRIPT, f'--input_dir={tmp_path / "corpus"}', f'--output={out}', f'--rejects={rej}',
                           f'--base_url={url}', '--concurrency=4', '--max_attempts=3', '--backoff=0.01', *extra],
                          check=False, timeout=60)

    t0 = time.time()
    proc = run(f'http://127.0.0.1:{free_port()}/v1')  # nothing listens there
    assert proc.returncode == 1 and time.time() - t0 < 30
    assert 'no answer from http://127.0.0.1' in proc.stderr and 'is the LLM server running' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert ids_in(out) == [] and ids_in(rej) == []

    # a server that drops one article's connections but answers the others: that article is an http reject
    # (kind "down") and the run goes on
    def reply(article, attempt):
        i = article_no(article)
        return ('drop', '', 0) if i == 3 else (200, lines(station(i)[1]), 0)

    with ChatServer(reply) as server:
        proc = run(server.url, '--limit=8')
    assert proc.returncode == 0, proc.stderr
    assert sorted(ids_in(out)) == [i for i in range(8) if i != 3 for _ in range(3)]
    assert [(r['id'], r['reason'], r['kind']) for r in read_jsonl(rej)] == [(3, 'http', 'down')]

    # a key the server refuses stops the run at once: no retries, nothing marked (the http reject of article 3
    # was taken out to be retried, and is not written back)
    with ChatServer(lambda article, attempt: (401, 'invalid api key', 0)) as server:
        proc = run(server.url)
    assert proc.returncode == 1 and 'refused the request (HTTP 401)' in proc.stderr and 'Traceback' not in proc.stderr
    assert len({r['article'] for r in server.requests}) == len(server.requests) <= 8  # each tried once
    assert ids_in(rej) == []


def test_sigkill_then_rerun_gives_each_article_once(tmp_path):
    n = 16
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [station(i)[0] for i in range(n)])
    out, rej = tmp_path / 'pairs.jsonl', tmp_path / 'rejects.jsonl'
    with ChatServer(lambda article, attempt: (200, lines(station(int(re.match(r'第(\d+)号', article).group(1)))[1]),
                                              0.25)) as server:
        args = [PYTHON, SCRIPT, f'--input_dir={tmp_path / "corpus"}', f'--output={out}', f'--rejects={rej}',
                f'--base_url={server.url}', '--concurrency=2', '--timeout=10.0']
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while time.time() < deadline and not (out.exists() and len({p['id'] for p in read_jsonl(out)}) >= 3):
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        done = {p['id'] for p in read_jsonl(out)}
        assert 3 <= len(done) < n, 'the kill came too late to test anything'
        # what a kill in the middle of a write leaves: part of an article's block, the last line cut short
        missing = min(set(range(n)) - done)
        torn = lines([dict(p, id=missing) for p in station(missing)[1][:2]])
        with open(out, 'a', encoding='utf-8') as f:
            f.write(torn[:len(torn) - 7])
        proc = run_script(args[1:], timeout=60)
        assert 'torn last line dropped' in proc.stderr
    pairs = read_jsonl(out)
    assert len(pairs) == 3 * n
    for i in range(n):
        block = [k for k, p in enumerate(pairs) if p['id'] == i]
        assert block == list(range(block[0], block[0] + 3)), f'article {i} not written once, whole'
        assert [{'question': pairs[k]['question'], 'answer': pairs[k]['answer']} for k in block] == station(i)[1]
    assert not rej.exists() or rej.read_text() == ''


def test_malformed_output_line_is_an_error(tmp_path):
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), [GOOD[0][0]])
    out = tmp_path / 'pairs.jsonl'
    out.write_text('{"question": "q", "answer": "a", "id": 0}\nnot json\n{"question": "q", "answer": "a", "id": 1}\n')
    with pytest.raises(ValueError, match=f"^{re.escape(str(out))}:2: not a JSON object with an integer 'id'"):
        load_generator().repair_tail(str(out))  # a library function raises; only main() exits
    proc = run_script([SCRIPT, '--backend=rules', f'--input_dir={tmp_path / "corpus"}', f'--output={out}',
                       f'--rejects={tmp_path / "r.jsonl"}'], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {out}:2: not a JSON object with an integer 'id'; " \
        "fix or remove the line"
    assert out.read_text().count('\n') == 3  # untouched


def completion(text):
    """A chat-completion response, whole, as a server sends it."""
    body = json.dumps({'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': text}}]}).encode()
    return b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body


class DripServer:
    """A server on 127.0.0.1 answering every request with `response`, a byte every `every` seconds from byte `start`."""
    def __init__(self, response, start, every):
        self.response, self.start, self.every = response, start, every
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.url = f'http://127.0.0.1:{self.listener.getsockname()[1]}/v1'
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn):
        with conn:
            data = b''
            while b'\r\n\r\n' not in data:
                data += conn.recv(65536)
            head, body = data.split(b'\r\n\r\n', 1)
            length = int(re.search(rb'content-length: *(\d+)', head, re.I).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            try:
                conn.sendall(self.response[:self.start])
                for i in range(self.start, len(self.response)):
                    time.sleep(self.every)
                    conn.sendall(self.response[i:i + 1])
            except OSError:  # the client gave up
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.listener.close()


@pytest.mark.slow
def test_timeout_bounds_the_whole_request_not_each_read():
    g = load_generator()
    response = completion(lines(GOOD[0][1]))  # ~400 bytes: 40 s at a byte every 0.1 s
    body_start = response.index(b'\r\n\r\n') + 4
    for start in (0, body_start):  # the status line and headers dripped too, or only the body
        with DripServer(response, start, every=0.1) as server:
            t0 = time.monotonic()
            with pytest.raises(g.ChatError) as failed:
                g.ask_chat('文章：\n' + GOOD[0][0], server.url, 'm', timeout=1.0)
            elapsed = time.monotonic() - t0
        assert failed.value.kind == 'down' and str(failed.value) == 'no complete reply within 1s'
        assert elapsed < 10, f'a reply dripped a byte every 0.1 s held the request for {elapsed:.1f} s, timeout 1 s'
    with DripServer(response, body_start, every=0.001) as server:  # a slow reply that ends in time is a reply
        assert g.parse_pairs(g.ask_chat('文章：\n' + GOOD[0][0], server.url, 'm', timeout=30.0)) == GOOD[0][1]


@pytest.mark.slow
def test_ask_chat_asks_once_with_retries_for_another_script(monkeypatch):
    g = load_generator()
    monkeypatch.setenv('JUDGE_KEY', 'sk-judge')
    replies = {'第0号': [(500, 'busy', 0), (500, 'busy', 0), (200, '好', 0)], '第1号': [(401, 'bad key', 0)],
               '第2号': [('drop', '', 0)], '第3号': [(200, b'<html>502</html>', 0)]}

    def responder(article, attempt):
        script = replies[article[:3]]
        return script[min(attempt, len(script) - 1)]

    with ChatServer(responder) as server:
        def ask(text, **kw):
            return g.ask_chat('文章：\n' + text, server.url, 'judge-model', 'JUDGE_KEY', 5.0, 0.0, **kw)
        assert ask('第0号', attempts=3, backoff=0.01) == '好'
        assert [(r['auth'], r['model'], r['temperature']) for r in server.requests] == [
            ('Bearer sk-judge', 'judge-model', 0.0)] * 3
        for article, kind, detail in (('第1号', 'refused', 'HTTP 401'), ('第2号', 'down', 'connection failed'),
                                      ('第3号', 'reply', 'reply is not JSON')):
            n = len(server.requests)
            with pytest.raises(g.ChatError) as failed:
                ask(article, attempts=2, backoff=0.01)
            assert failed.value.kind == kind and str(failed.value).startswith(detail), failed.value
            assert len(server.requests) - n == (1 if kind == 'refused' else 2)  # a refusal is not retried
        assert '502' in failed.value.body
    with pytest.raises(ValueError, match='not an http'):
        g.ask_chat('q', 'localhost:1234/v1', 'm')
    with pytest.raises(ValueError, match='attempts=0: at least 1'):
        g.ask_chat('q', 'http://127.0.0.1:1/v1', 'm', attempts=0)


def test_limits_are_arguments_not_settings():
    g = load_generator()
    article = g.normalize(GOOD[0][0])
    pairs = GOOD[0][1]
    assert g.check_pairs(pairs, article, g.Limits(3, 6, 40, 150)) is None
    assert g.check_pairs(pairs, article, g.Limits(1, 2, 40, 150))[0] == 'count'
    assert g.check_pairs(pairs, article, g.Limits(1, 6, 10, 150))[0] == 'too_long'  # 第0号气象站位于哪里？ is 11
    assert len(g.rules_pairs(RULES_ARTICLES[1], set(), g.Limits(1, 1, 40, 150))) == 1


RULES_ARTICLES = [
    '故宫\n\n故宫位于北京市中心。北京故宫被誉为“世界五大宫之首”。故宫博物院成立于１９２５年１０月。每年有上千万游客参观故宫。',
    '长江是中国第一长河。长江流域面积达１８０万平方公里。',
    '１２月３１日，国家主席江泽民发表新年讲话。美国总统克林顿今天抵达北京。他说这件事情很重要。',
    # no concrete subject anywhere: pronouns, adverbs, verbs, fragments, relative times, bare generalities
    '他说这件事情很重要。应当是所有有志者的共同理想。意思是告诉主人家。他来到位于山脚的小村。仰首是彩旗招展。'
    '即使是娱乐内容的收费电话。各级干部特别是领导干部。创作无疑是重要的一环。认为人类活动是最重要的因素。'
    '这也是一个重大的突破。今年是落实十五大精神的第一年。原因是多方面的。市场是第一信号。上次是范志毅于１９９６年获得。'
    '全市蔬菜种植面积达到５５万亩。１９９６年产量达到１９０万吨。逐步让位于以和平与发展为主题的新时代。',
    '新华社是中国的国家通讯社。新华社总部位于北京。第十八届冬奥会在日本长野举行。国务院总理李鹏于１９９８年１月５日会见了日本客人。',
    '长江是亚洲第一长河。',  # 长江是什么？ was asked in article 1: one question, one answer
]
RULES_EXPECTED = [  # (id, question, answer), in order
    (0, '故宫位于哪里？', '北京市中心'), (0, '北京故宫被誉为什么？', '世界五大宫之首'), (0, '故宫博物院成立于何时？', '１９２５年１０月'),
    (1, '长江是什么？', '中国第一长河'), (1, '中国第一长河是什么？', '长江'), (1, '长江流域面积达多少平方公里？', '１８０万平方公里'),
    (2, '国家主席江泽民发表新年讲话是在什么时候？', '１２月３１日'), (2, '美国总统是谁？', '克林顿'),
    (4, '新华社是什么？', '中国的国家通讯社'), (4, '新华社总部位于哪里？', '北京'), (4, '第十八届冬奥会在哪里举行？', '日本长野'),
    (4, '国务院总理李鹏于何时会见了日本客人？', '１９９８年１月５日'),
    (5, '亚洲第一长河是什么？', '长江'),
]


def run_rules(tmp_path, name, *extra):
    out, rej = tmp_path / f'{name}.jsonl', tmp_path / f'{name}_rejects.jsonl'
    proc = run_script([SCRIPT, '--backend=rules', f'--input_dir={tmp_path / "corpus"}', f'--output={out}',
                       f'--rejects={rej}', *extra], timeout=60)
    return out, rej, proc


def test_rules_backend_gives_the_expected_pairs(tmp_path):
    from corpus import clean_article, iter_articles
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), RULES_ARTICLES)
    out, rej, _ = run_rules(tmp_path, 'one')
    pairs = read_jsonl(out)
    assert [(p['id'], p['question'], p['answer']) for p in pairs] == RULES_EXPECTED
    articles = {i: clean_article(t) for i, _, _, t in iter_articles(str(tmp_path / 'corpus'))}
    assert all(p['answer'] in articles[p['id']] for p in pairs)  # verbatim spans
    assert [(r['id'], r['reason']) for r in read_jsonl(rej)] == [(3, 'no_pairs')]
    assert run_rules(tmp_path, 'two')[0].read_bytes() == out.read_bytes()  # deterministic

    # --limit=2 gives the first articles' lines; a rerun without it goes on from there (knowing what was asked)
    resumed, _, _ = run_rules(tmp_path, 'three', '--limit=2')
    assert {p['id'] for p in read_jsonl(resumed)} == {0, 1} and out.read_bytes().startswith(resumed.read_bytes())
    _, _, proc = run_rules(tmp_path, 'three')
    assert resumed.read_bytes() == out.read_bytes() and 'skipped 2 already done' in proc.stdout


@pytest.mark.slow
def test_rules_backend_asks_wiki_entries_about_their_titles(tmp_path):
    """The title line of an entry, which the cleaned text no longer has, reaches the rules."""
    from corpus import clean_article
    with open(os.path.join(ROOT, 'tests', 'fixtures', 'wiki_entries.jsonl'), encoding='utf-8') as f:
        raws = [json.loads(line)['text'] for line in f]
    write_jsonl(str(tmp_path / 'corpus' / 'wiki.jsonl'), raws)
    out, rej, proc = run_rules(tmp_path, 'wiki')
    pairs = read_jsonl(out)
    assert len({p['id'] for p in pairs}) >= 0.8 * len(raws), proc.stdout
    assert all(p['answer'] in clean_article(raws[p['id']]) for p in pairs)
    assert pairs[:2] == [{'question': '王家坝是什么？', 'answer': '安徽省阜南县的一个行蓄洪区', 'id': 0},
                         {'question': '王家坝位于哪里？', 'answer': '淮河上游与中游的分界处', 'id': 0}]
    assert {'question': '李白是谁？', 'answer': '唐代伟大的浪漫主义诗人', 'id': 18} in pairs


def test_rules_ask_nothing_without_a_concrete_subject():
    g = load_generator()
    LIMITS = g.Limits(*LIMITS_ARGS)
    for sentence in RULES_ARTICLES[3].replace('。', '。\n').split():
        assert g.rules_pairs(sentence, set(), LIMITS) == [], sentence
    for text in RULES_ARTICLES:
        for pair in g.rules_candidates(text):
            assert not g._PRONOUN.search(pair['question']) and len(pair['answer']) <= 20, pair



def test_rules_command_prints_what_the_rules_find():
    proc = run_script([RULES_SCRIPT, RULES_ARTICLES[1]])
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [
        {'question': q, 'answer': a} for _, q, a in RULES_EXPECTED[3:6]]
    proc = run_script([RULES_SCRIPT, '他说这件事情很重要。'])
    assert proc.stdout == '' and 'no pairs' in proc.stderr

def test_next_sentence_pairs_only_under_the_flag(tmp_path):
    write_jsonl(str(tmp_path / 'corpus' / 'a.jsonl'), ['北京的冬天很冷。人们都穿上了厚厚的棉衣。', RULES_ARTICLES[1]])
    out, rej, _ = run_rules(tmp_path, 'default')
    assert '下一句' not in out.read_text(encoding='utf-8') and ids_in(rej) == [0]
    out, rej, _ = run_rules(tmp_path, 'flag', '--next_sentence=True')
    pairs = [(p['id'], p['question'], p['answer']) for p in read_jsonl(out)]
    assert pairs[0] == (0, '“北京的冬天很冷”的下一句是什么？', '人们都穿上了厚厚的棉衣。')
    assert pairs[1:4] == [(1, q, a) for _, q, a in RULES_EXPECTED[3:6]]  # the facts first, then the next sentences
    assert pairs[4:] == [(1, '“长江是中国第一长河”的下一句是什么？', '长江流域面积达１８０万平方公里。')]

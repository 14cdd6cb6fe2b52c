"""
sft/sft_generate.py against a real HTTP server on a loopback port that speaks the OpenAI chat-completions
wire format and answers from a script (clean, fenced, prose, too few, ungrounded, invalid, 500, 429, slow);
a SIGKILL mid-run and a rerun; and the offline rules backend.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import PYTHON, ROOT, run_script, write_jsonl

SCRIPT = os.path.join(ROOT, 'sft', 'sft_generate.py')


def load_generator():
    spec = importlib.util.spec_from_file_location('sft_generate', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ChatServer:
    """
    A chat-completions endpoint on 127.0.0.1: responder(article, attempt) -> (status, reply text, delay s).
    attempt counts the requests seen for that article (0 first). Serves requests concurrently.
    """
    def __init__(self, responder):
        self.responder, self.attempts, self.lock, self.requests = responder, {}, threading.Lock(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                prompt = body['messages'][-1]['content']
                article = prompt.split('文章：\n', 1)[1]
                with outer.lock:
                    attempt = outer.attempts.get(article, 0)
                    outer.attempts[article] = attempt + 1
                    outer.requests.append({'article': article, 'auth': self.headers.get('Authorization'),
                                           'temperature': body.get('temperature'), 'model': body.get('model')})
                status, reply, delay = outer.responder(article, attempt)
                time.sleep(delay)
                if status == 200:
                    payload = {'id': 'chatcmpl-1', 'object': 'chat.completion', 'created': 0, 'model': body['model'],
                               'choices': [{'index': 0, 'finish_reason': 'stop',
                                            'message': {'role': 'assistant', 'content': reply}}],
                               'usage': {'prompt_tokens': 1, 'completion_tokens': 1, 'total_tokens': 2}}
                else:
                    payload = {'error': {'message': reply, 'type': 'server_error'}}
                data = json.dumps(payload, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(data)))
                    if status == 429:
                        self.send_header('Retry-After', '0')
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout case)
                    pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def lines(pairs):
    return '\n'.join(json.dumps(p, ensure_ascii=False) for p in pairs)


def fullwidth(pairs):
    return '\n'.join('{“question”：“%s”，“answer”：“%s”}' % (p['question'], p['answer']) for p in pairs)


def station(i):
    """A numbered article and three pairs grounded in it."""
    article = f'第{i}号气象站位于青海省西宁市。第{i}号气象站成立于{1950 + i}年。第{i}号气象站是全国海拔最高的气象站之一。'
    pairs = [{'question': f'第{i}号气象站位于哪里？', 'answer': '青海省西宁市'},
             {'question': f'第{i}号气象站成立于哪一年？', 'answer': f'{1950 + i}年'},
             {'question': f'第{i}号气象站有什么特点？', 'answer': '全国海拔最高的气象站之一'}]
    return article, pairs


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
    assert g.check_pairs(pairs, article) is None
    assert g.check_pairs(pairs + [pairs[0]], article)[0] == 'repeat'
    assert g.check_pairs(pairs[:2], article)[0] == 'count'
    assert g.check_pairs([dict(pairs[0], question='它位于哪里？')] + pairs[1:], article)[0] == 'pronoun'
    assert g.check_pairs([dict(pairs[0], answer='青海省\ufffd西宁市')] + pairs[1:], article)[0] == 'bad_chars'
    assert g.check_pairs([dict(pairs[0], answer='')] + pairs[1:], article)[0] == 'empty'
    assert g.check_pairs([dict(pairs[0], question='问' * 41)] + pairs[1:], article)[0] == 'too_long'


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


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

        # a rerun skips what is done and tries the rejects again; nothing is duplicated
        n_before = len(server.requests)
        proc = run_script(args, env={'SFT_TEST_KEY': 'sk-secret-123'}, timeout=60)
        assert 'skipped 8 already done' in proc.stdout
        assert read_jsonl(out) == pairs
        assert len(server.requests) - n_before == 4 * 3
        assert {r['id'] for r in read_jsonl(rej)[len(rejects):]} == {r['id'] for r in rejects}


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
    proc = run_script([SCRIPT, '--backend=rules', f'--input_dir={tmp_path / "corpus"}', f'--output={out}',
                       f'--rejects={tmp_path / "r.jsonl"}'], check=False)
    assert proc.returncode != 0 and f'{out}:2:' in proc.stderr
    assert out.read_text().count('\n') == 3  # untouched


RULES_ARTICLES = [
    '故宫\n\n故宫位于北京市中心，是明清两代的皇家宫殿。故宫始建于明朝永乐四年。北京故宫被誉为世界五大宫之首。'
    '故宫博物院成立于1925年。每年有上千万游客参观故宫。',
    '长江是中国最长的河流，全长约6300公里。长江发源于青藏高原。长江流经十一个省级行政区。长江的入海口位于上海。',
    '他说这件事情很重要。但是大家都不同意。',  # nothing usable: pronouns, no statement
    '新华社成立于1931年，是中国的国家通讯社。新华社总部位于北京。新华社在海外设有多个分社。新华社简称新华。',
]


def test_rules_backend_answers_are_verbatim_spans(tmp_path):
    from data_utils import clean_article, iter_articles
    corpus = tmp_path / 'corpus'
    write_jsonl(str(corpus / 'a.jsonl'), RULES_ARTICLES)
    runs = []
    for name, limit in (('one', 0), ('two', 0), ('three', 2)):
        out, rej = tmp_path / f'{name}.jsonl', tmp_path / f'{name}_rejects.jsonl'
        run_script([SCRIPT, '--backend=rules', f'--input_dir={corpus}', f'--output={out}', f'--rejects={rej}',
                    f'--limit={limit}'], timeout=60)
        runs.append(out.read_bytes())
    assert runs[0] == runs[1]  # deterministic
    assert {p['id'] for p in read_jsonl(tmp_path / 'three.jsonl')} == {0, 1}  # --limit=2: articles 0 and 1 only
    assert runs[0].startswith(runs[2])
    articles = {i: clean_article(t) for i, _, _, t in iter_articles(str(corpus))}
    pairs = read_jsonl(tmp_path / 'one.jsonl')
    assert {p['id'] for p in pairs} == {0, 1, 3}
    for p in pairs:
        assert p['answer'] in articles[p['id']], p
        assert 3 <= sum(q['id'] == p['id'] for q in pairs) <= 6
    got = {(p['id'], p['question'], p['answer']) for p in pairs}
    assert (0, '故宫位于哪里？', '北京市中心') in got
    assert (0, '北京故宫被誉为什么？', '世界五大宫之首') in got
    assert (1, '长江是什么？', '中国最长的河流') in got
    assert (3, '新华社成立于什么时候？', '1931年') in got
    assert (3, '新华社总部位于哪里？', '北京') in got
    assert [r['reason'] for r in read_jsonl(tmp_path / 'one_rejects.jsonl')] == ['no_pairs']

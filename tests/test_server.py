"""
The real server.py (waitress) on a loopback port: the official openai client, raw HTTP for bad input,
the OpenAI sampling fields, concurrency and its cap, timeouts, disconnects.
"""
import json
import socket
import threading
import time

import pytest
import requests
import torch
from openai import OpenAI

from conftest import A_TOKEN, EOT_TOKEN, GPT2, SENTENCES, free_port, run_script, serving, train_tiny_checkpoint
from engine import generate_text
from checkpoint import load_checkpoint, save_checkpoint
from model import GPT, GPTConfig

KEY = 'test-key-123'
AUTH = {'Authorization': f'Bearer {KEY}'}
# question/answer pairs in the SFT layout; no question ends in punctuation, so q + '##' + a encodes as
# encode(q) + [A_TOKEN] + encode(a), and no answer contains its question
QA = [('首都在哪', '北京。'), ('最长的河', '长江。'), ('熊猫吃啥', '竹子。'), ('春节吃啥', '饺子。')]


def endless_checkpoint(out_dir):
    """A random model that can never say EOT under top_k=50, so its generations run until stopped."""
    torch.manual_seed(0)
    args = dict(block_size=64, vocab_size=GPT2.vocab_size, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=False)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        model.lm_head.weight[EOT_TOKEN] = 0.0  # logit 0: far below the top 50 of 50,000 random logits
    save_checkpoint(str(out_dir), {'model_args': args, 'model': model.state_dict(), 'tokenizer': GPT2.for_checkpoint()})


FOLDERS = {}  # model name -> checkpoint folder, for the tests that compare with the engine in-process


@pytest.fixture(scope='module')
def server(tiny_checkpoint, tmp_path_factory):
    for q, a in QA:
        assert GPT2.encode(q + '##' + a) == GPT2.encode(q) + [A_TOKEN] + GPT2.encode(a)
    qa_dir, endless_dir = tmp_path_factory.mktemp('qa'), tmp_path_factory.mktemp('endless')
    FOLDERS.update(qa=str(qa_dir), tiny=tiny_checkpoint, endless=str(endless_dir))
    train_tiny_checkpoint(qa_dir, texts=[q + '##' + a for q, a in QA], block_size=24, steps=80)
    endless_checkpoint(endless_dir)
    port = free_port()
    args = [f'--models=qa={qa_dir},tiny={tiny_checkpoint},endless={endless_dir}', '--host=127.0.0.1',
            f'--port={port}', '--max_new_tokens=20000', '--max_prompt_tokens=50', '--max_body_bytes=20000', '--device=cpu']
    base = f'http://127.0.0.1:{port}'
    with serving(['server.py', *args], base + '/health', tmp_path_factory.mktemp('log') / 'server.log',
                 env={'MINIGPT_API_KEY': KEY, 'OMP_NUM_THREADS': '1'}):  # one thread: see test_sample.py
        yield base


def client(base):
    return OpenAI(base_url=base + '/v1', api_key=KEY, max_retries=0, timeout=60)


def test_health_and_models(server):
    assert requests.get(server + '/health').json() == {'status': 'ok', 'models': ['qa', 'tiny', 'endless'], 'active': 0}
    assert [m.id for m in client(server).models.list().data] == ['qa', 'tiny', 'endless']


def test_openai_completions_plain_and_streamed(server):
    c = client(server)
    r = c.completions.create(model='tiny', prompt='北京', max_tokens=200, temperature=0)
    assert r.choices[0].text == SENTENCES[0][2:] and r.choices[0].finish_reason == 'stop'
    assert r.usage.prompt_tokens == len(GPT2.encode('北京'))
    assert r.usage.completion_tokens >= len(SENTENCES[0][2:]) and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = [ch.choices[0].text for ch in c.completions.create(model='tiny', prompt='北京', max_tokens=200, temperature=0, stream=True)]
    assert ''.join(chunks) == SENTENCES[0][2:] and len(chunks) > 5
    short = c.completions.create(model='tiny', prompt='长江', max_tokens=3, temperature=0)
    assert short.choices[0].finish_reason == 'length' and short.usage.completion_tokens == 3
    # the seed's convention: a prompt ending in ## is a question, the answer alone comes back
    assert c.completions.create(model='qa', prompt=QA[2][0] + ' ##', temperature=0).choices[0].text == QA[2][1]


def test_openai_chat_plain_and_streamed_answers_only(server):
    c = client(server)
    messages = [{'role': 'system', 'content': '你是助手'}, {'role': 'user', 'content': '随便问问'},
                {'role': 'assistant', 'content': '好'}, {'role': 'user', 'content': QA[0][0]}]
    r = c.chat.completions.create(model='qa', messages=messages, temperature=0)  # 'qa' is also the default
    assert r.choices[0].message.content == QA[0][1] and r.choices[0].message.role == 'assistant'
    assert r.usage.prompt_tokens == len(GPT2.encode(QA[0][0])) + 1
    stream = c.chat.completions.create(messages=[{'role': 'user', 'content': QA[1][0]}], model='qa', temperature=0,
                                       stream=True, stream_options={'include_usage': True})
    deltas, usage = [], None
    for ch in stream:
        if ch.choices:
            deltas.append(ch.choices[0].delta.content or '')
        usage = ch.usage or usage
    answer = ''.join(deltas)
    assert answer == QA[1][1] and QA[1][0] not in answer and usage.completion_tokens > 0


def test_generate_streams_in_chunks(server):
    r = requests.post(server + '/generate', json={'prompt': '春节', 'max_new_tokens': 100, 'temperature': 0, 'top_k': 20,
                                                  'model': 'tiny'}, headers=AUTH, stream=True, timeout=60)
    assert r.status_code == 200 and r.headers['Content-Type'].startswith('text/plain')
    chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert len(chunks) > 1 and b''.join(chunks).decode('utf-8') == SENTENCES[3][2:]
    # a question on /generate: the answer only
    r = requests.post(server + '/generate', json={'prompt': QA[3][0] + '##', 'max_new_tokens': 50, 'temperature': 0},
                      headers=AUTH, timeout=60)
    assert r.text == QA[3][1]


def test_eight_clients_streaming_at_once(server):
    results, errors = {}, []

    def chat(i):
        try:
            q, a = QA[i % len(QA)]
            stream = client(server).chat.completions.create(model='qa', messages=[{'role': 'user', 'content': q}],
                                                            temperature=0, stream=True)
            results[i] = (''.join(ch.choices[0].delta.content or '' for ch in stream if ch.choices), a)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def plain(i):
        try:
            r = requests.post(server + '/generate', json={'prompt': SENTENCES[i % 4][:2], 'temperature': 0, 'model': 'tiny'},
                              headers=AUTH, stream=True, timeout=60)
            results[i] = (b''.join(r.iter_content(chunk_size=None)).decode('utf-8'), SENTENCES[i % 4][2:])
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    threads = [threading.Thread(target=chat if i < 6 else plain, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for i, (got, want) in results.items():
        assert got == want, f'client {i}'


def test_disconnect_stops_generation(server):
    def active():
        return requests.get(server + '/health').json()['active']
    r = requests.post(server + '/generate', json={'prompt': 'hello', 'max_new_tokens': 20000, 'temperature': 1.0,
                                                  'top_k': 50, 'model': 'endless'}, headers=AUTH, stream=True, timeout=60)
    pieces = r.iter_content(chunk_size=None)
    for _ in range(3):
        assert next(pieces)
    assert active() == 1
    r.close()  # 20000 tokens would take far longer than the wait below
    for _ in range(100):
        if active() == 0:
            break
        time.sleep(0.1)
    assert active() == 0


BIG = json.dumps({'prompt': 'x' * 30000})
BAD = [
    ('POST', '/generate', 'not json', 400, 'JSON object'),
    ('POST', '/generate', '[1, 2]', 400, 'JSON object'),
    ('POST', '/generate', {'max_new_tokens': 5}, 400, '"prompt" is required'),
    ('POST', '/generate', {'prompt': 5}, 400, '"prompt" must be str'),
    ('POST', '/generate', {'prompt': '北京', 'max_new_tokens': '10'}, 400, '"max_new_tokens" must be int'),
    ('POST', '/generate', {'prompt': '北京', 'max_new_tokens': True}, 400, '"max_new_tokens" must be int'),
    ('POST', '/generate', {'prompt': '北京', 'temperature': 'hot'}, 400, '"temperature" must be'),
    ('POST', '/generate', {'prompt': '北京', 'temperature': -0.1}, 400, 'temperature'),
    ('POST', '/generate', {'prompt': '北京', 'top_k': 0}, 400, '"top_k" must be >= 1'),
    ('POST', '/generate', {'prompt': '北京', 'top_k': 2.5}, 400, '"top_k" must be int'),
    ('POST', '/generate', {'prompt': '北京', 'max_new_tokens': 20001}, 400, 'between 1 and 20000'),
    ('POST', '/generate', {'prompt': '北京', 'seed': -1}, 400, '"seed"'),
    ('POST', '/generate', {'prompt': '北京' * 60}, 400, 'more than the 50 allowed'),
    ('POST', '/generate', {'prompt': '  '}, 400, 'prompt is empty'),
    ('POST', '/generate', {'prompt': '北京', 'model': 'gpt-9'}, 404, 'unknown model "gpt-9"'),
    ('POST', '/v1/completions', {'prompt': ['a', 'b']}, 400, '"prompt" must be a string'),
    ('POST', '/v1/completions', {'prompt': '北京', 'max_tokens': 0}, 400, 'between 1 and'),
    ('POST', '/v1/completions', {'prompt': '北京', 'stream': 'yes'}, 400, '"stream" must be bool'),
    ('POST', '/v1/chat/completions', {'messages': []}, 400, 'non-empty list'),
    ('POST', '/v1/chat/completions', {'messages': 'hi'}, 400, 'non-empty list'),
    ('POST', '/v1/chat/completions', {'messages': [{'role': 'user', 'content': 5}]}, 400, 'content must be a string'),
    ('POST', '/v1/chat/completions', {'messages': [{'role': 'system', 'content': 'x'}]}, 400, 'no user message'),
    ('POST', '/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'x'}], 'model': 'nope'}, 404, 'unknown model'),
    ('POST', '/generate', BIG, 413, ''),
    ('GET', '/no/such/route', None, 404, '/no/such/route'),
    ('GET', '/generate', None, 405, 'not allowed'),
    ('DELETE', '/v1/models', None, 405, 'not allowed'),
]


@pytest.mark.parametrize('method,path,body,status,message', BAD, ids=[f'{b[1]}-{i}' for i, b in enumerate(BAD)])
def test_bad_input_gets_4xx_json_error(server, method, path, body, status, message):
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    r = requests.request(method, server + path, data=data, headers=AUTH, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()['error']
    assert isinstance(error['type'], str) and error['type'] and message in error['message']


def test_api_key_required_and_server_still_serving(server):
    for headers in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': KEY}):
        r = requests.post(server + '/generate', json={'prompt': '北京'}, headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()['error']['type'] == 'authentication_error'
    assert requests.get(server + '/v1/models', timeout=30).status_code == 401
    assert requests.get(server + '/health', timeout=30).json()['status'] == 'ok'  # open: run.sh and monitors poll it
    r = requests.post(server + '/generate', json={'prompt': '熊猫', 'temperature': 0, 'top_k': 20.0, 'model': 'tiny'},
                      headers=AUTH, timeout=60)  # 20.0 (a JavaScript slider's number) is taken as 20
    assert r.text == SENTENCES[2][2:]


# ----------------------------------------------------------------------------- OpenAI's sampling fields

def in_process(name, prompt, **kwargs):
    """What the engine gives for the same request in this process, on one thread as the server runs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok, _ = load_checkpoint(FOLDERS[name])
        return generate_text(model, tok, prompt, **kwargs)
    finally:
        torch.set_num_threads(n)


def test_seed_top_p_and_penalties_are_honoured(server):
    c = client(server)

    def text(**kwargs):
        return c.completions.create(model='endless', prompt='hello', max_tokens=30, **kwargs).choices[0].text
    sampled = text(temperature=1.0, seed=5)
    assert sampled == text(temperature=1.0, seed=5) != text(temperature=1.0, seed=6)  # seed reproduces, not ignored
    greedy = text(temperature=0)
    assert sampled != greedy and text(temperature=1.0, seed=5, top_p=0.0) == greedy  # top_p 0: the most likely id only
    assert text(temperature=1.0, seed=5, top_p=0.5) == in_process('endless', 'hello', max_new_tokens=30, temperature=1.0,
                                                                  top_k=20, top_p=0.5, seed=5)
    for penalized in (dict(temperature=0, presence_penalty=1.5), dict(temperature=0, frequency_penalty=1.5)):
        assert text(**penalized) == in_process('endless', 'hello', max_new_tokens=30, **penalized) != greedy
    # /generate takes the same names
    r = requests.post(server + '/generate', json={'prompt': 'hello', 'model': 'endless', 'max_new_tokens': 30, **penalized},
                      headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.text == text(**penalized)
    r = requests.post(server + '/generate', json={'prompt': 'hello', 'model': 'endless', 'max_new_tokens': 30,
                                                  'temperature': 1.0, 'seed': 5}, headers=AUTH, timeout=60)
    assert r.text == sampled


def test_stop_strings_end_the_text_before_them(server):
    c = client(server)
    whole = SENTENCES[0][2:]  # 是中国的首都。北京有很多名胜古迹。

    def complete(stop, **kwargs):
        r = c.completions.create(model='tiny', prompt='北京', max_tokens=200, temperature=0, stop=stop, **kwargs)
        return r.choices[0].text, r.choices[0].finish_reason
    assert complete('首都') == ('是中国的', 'stop')
    assert complete(['名胜', '。']) == ('是中国的首都', 'stop')  # the first one in the text wins
    assert complete('首都X') == (whole, 'stop')  # never whole: nothing is cut
    assert complete('是') == ('', 'stop')
    short = c.completions.create(model='tiny', prompt='北京', max_tokens=3, temperature=0, stop='不会出现')
    assert short.choices[0].finish_reason == 'length'
    # streamed: the stop text never goes out, and neither does a tail that might have begun it
    chunks = [ch.choices[0].text for ch in c.completions.create(model='tiny', prompt='北京', max_tokens=200,
                                                                temperature=0, stop='首都', stream=True)]
    assert ''.join(chunks) == '是中国的' and len(chunks) > 2
    chunks = [ch.choices[0].text for ch in c.completions.create(model='tiny', prompt='北京', max_tokens=200,
                                                                temperature=0, stop=['首都X'], stream=True)]
    assert ''.join(chunks) == whole and '首都。' in [ch for ch in chunks if '首' in ch][0]  # held back, then released
    reply = c.chat.completions.create(model='qa', messages=[{'role': 'user', 'content': QA[0][0]}], temperature=0, stop='。')
    assert reply.choices[0].message.content == QA[0][1][:-1]
    r = requests.post(server + '/generate', json={'prompt': '北京', 'model': 'tiny', 'temperature': 0, 'stop': ['的首']},
                      headers=AUTH, timeout=60)
    assert r.text == '是中国'


TINY_TEMPERATURE = 1e-40  # logits / 1e-40 overflow float32: before the engine's threshold, softmax gave NaN and a 500


def test_tiny_temperature_is_greedy_through_the_server(server):
    greedy = SENTENCES[1][2:]
    body = {'prompt': '长江', 'model': 'tiny', 'temperature': TINY_TEMPERATURE, 'max_new_tokens': 100}
    r = requests.post(server + '/generate', json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.text == greedy
    openai_body = {'prompt': '长江', 'model': 'tiny', 'temperature': TINY_TEMPERATURE, 'max_tokens': 100}
    r = requests.post(server + '/v1/completions', json=openai_body, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()['choices'][0]['text'] == greedy
    r = requests.post(server + '/v1/completions', json=dict(openai_body, stream=True), headers=AUTH, timeout=60)
    events = [line for line in r.text.split('\n\n') if line]
    assert r.status_code == 200 and events[-1] == 'data: [DONE]'
    assert ''.join(json.loads(e[6:])['choices'][0]['text'] for e in events[:-1]) == greedy
    chat = client(server).chat.completions.create(model='qa', messages=[{'role': 'user', 'content': QA[2][0]}],
                                                  temperature=TINY_TEMPERATURE, stream=True)
    assert ''.join(ch.choices[0].delta.content or '' for ch in chat if ch.choices) == QA[2][1]


def test_non_streaming_client_that_leaves_stops_its_generation(server):
    def active():
        return requests.get(server + '/health', timeout=10).json()['active']
    body = json.dumps({'prompt': 'hello', 'model': 'endless', 'max_tokens': 20000, 'temperature': 1.0}).encode()
    sock = socket.create_connection(('127.0.0.1', int(server.rsplit(':', 1)[1])), timeout=30)
    sock.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                 + f'Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n'.encode() + body)
    for _ in range(100):
        if active() == 1:
            break
        time.sleep(0.1)
    assert active() == 1
    sock.close()  # 20000 tokens would take minutes; the generation must stop within a token or two
    for _ in range(100):
        if active() == 0:
            break
        time.sleep(0.1)
    assert active() == 0


# name of the field each bad request must name, in the error's "param" and its message
FIELD_ERRORS = [
    ('/v1/completions', {'prompt': '北京', 'top_p': -0.1}, 'top_p'),
    ('/v1/completions', {'prompt': '北京', 'top_p': 1.5}, 'top_p'),
    ('/v1/completions', {'prompt': '北京', 'top_p': '0.9'}, 'top_p'),
    ('/v1/completions', {'prompt': '北京', 'presence_penalty': 2.5}, 'presence_penalty'),
    ('/v1/completions', {'prompt': '北京', 'frequency_penalty': -2.01}, 'frequency_penalty'),
    ('/v1/completions', {'prompt': '北京', 'frequency_penalty': [1]}, 'frequency_penalty'),
    ('/v1/completions', {'prompt': '北京', 'stop': 5}, 'stop'),
    ('/v1/completions', {'prompt': '北京', 'stop': ['a', 'b', 'c', 'd', 'e']}, 'stop'),
    ('/v1/completions', {'prompt': '北京', 'stop': ['']}, 'stop'),
    ('/v1/completions', {'prompt': '北京', 'seed': 'x'}, 'seed'),
    ('/v1/completions', {'prompt': '北京', 'n': 2}, 'n'),
    ('/v1/completions', {'prompt': '北京', 'logprobs': 1}, 'logprobs'),
    ('/v1/completions', {'prompt': '北京', 'echo': True}, 'echo'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'x'}], 'logprobs': True}, 'logprobs'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'x'}], 'n': 3}, 'n'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'x'}],
                              'tools': [{'type': 'function', 'function': {'name': 'f'}}]}, 'tools'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': 'x'}], 'top_p': -1}, 'top_p'),
    ('/generate', {'prompt': '北京', 'top_p': 2}, 'top_p'),
    ('/generate', {'prompt': '北京', 'presence_penalty': -3}, 'presence_penalty'),
    ('/generate', {'prompt': '北京', 'stop': {'a': 1}}, 'stop'),
    ('/generate', {'prompt': '##'}, 'prompt'),
    ('/generate', {'prompt': ' ## '}, 'prompt'),
    ('/v1/chat/completions', {'messages': [{'role': 'user', 'content': '##'}]}, 'messages'),
]


@pytest.mark.parametrize('path,body,param', FIELD_ERRORS, ids=[f'{e[2]}-{i}' for i, e in enumerate(FIELD_ERRORS)])
def test_bad_fields_get_400_naming_the_field(server, path, body, param):
    r = requests.post(server + path, json=body, headers=AUTH, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()['error']
    assert error['param'] == param and error['type'] == 'invalid_request_error'
    assert f'"{param}"' in error['message'] or param == 'prompt' and 'question is empty' in error['message'] \
        or param == 'messages' and 'question is empty' in error['message'], error['message']


RAW_BAD = [  # bodies json.dumps cannot write: each once gave a 500 (RecursionError, a surrogate in an error message)
    '{"prompt": "x", "a": ' + '[' * 5000 + ']' * 5000 + '}',
    '{"prompt": "x", "model": "\\ud800"}',
    '{"prompt": "x", "max_new_tokens": "\\ud800"}',
    '{"prompt": "x", "top_k": "\\udfff\\ud800"}',
    '{"prompt": "\\ud800"}',
    '{"prompt": "x", "temperature": NaN}',
    '{"prompt": "x", "temperature": Infinity}',
    b'{"prompt": "\xff\xfe"}',
]


@pytest.mark.parametrize('body', RAW_BAD, ids=range(len(RAW_BAD)))
def test_raw_bodies_that_broke_the_server_get_400(server, body):
    for path in ('/generate', '/v1/completions'):
        r = requests.post(server + path, data=body, headers=AUTH, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()['error']['type'] == 'invalid_request_error'
    assert requests.get(server + '/health', timeout=10).status_code == 200


# ----------------------------------------------------------------------------- the server's edges

READ_TIMEOUT = 2  # the edge server's --read_timeout


@pytest.fixture(scope='module')
def edge_server(tmp_path_factory, server):
    """All interfaces, no API key, two generation slots and a 2 s read timeout: the limits, small enough to hit."""
    port = free_port()
    log = tmp_path_factory.mktemp('edge') / 'server.log'
    args = ['server.py', f'--models=endless={FOLDERS["endless"]}', '--host=0.0.0.0', f'--port={port}', '--device=cpu',
            '--max_generations=2', f'--read_timeout={READ_TIMEOUT}', '--max_new_tokens=20000']
    with serving(args, f'http://127.0.0.1:{port}/health', log, env={'MINIGPT_API_KEY': '', 'OMP_NUM_THREADS': '1'}):
        yield f'http://127.0.0.1:{port}', log


def test_open_to_the_network_without_a_key_says_so_at_start(edge_server):
    base, log = edge_server
    text = log.read_text(encoding='utf-8')
    port = base.rsplit(':', 1)[1]
    assert 'warning: listening on all interfaces without an API key' in text
    assert f':{port}' in text.split('warning:')[1] and '--host=127.0.0.1' in text and '--api_key' in text


def test_half_open_connection_is_closed_within_the_read_timeout(edge_server):
    base, _ = edge_server
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', int(base.rsplit(':', 1)[1])), timeout=30) as sock:
        sock.sendall(b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt": ')  # and no more
        assert sock.recv(1000) == b''  # the server closed it; a timeout here (30 s) fails the test
    waited = time.monotonic() - t0
    assert READ_TIMEOUT - 0.5 < waited < READ_TIMEOUT + 4, waited


def test_a_413_closes_the_connection(server):
    """A client that sent too much gets its error object and is let go, not kept until the 30 s read timeout."""
    port = int(server.rsplit(':', 1)[1])
    body = BIG.encode()
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        sock.sendall(b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                     + f'Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n'.encode() + body)
        data = b''
        while chunk := sock.recv(65536):  # a timeout here (10 s) means the server kept the connection open
            data += chunk
    head, _, rest = data.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 413 ') and b'\r\nConnection: close' in head, head
    assert b'"type":"request_too_large"' in rest


def test_connections_past_the_cap_wait_until_one_closes(server, tmp_path):
    """--max_connections: two idle clients hold both slots, a third is not served until one of them leaves."""
    port = free_port()
    args = ['server.py', f'--models=endless={FOLDERS["endless"]}', '--host=127.0.0.1', f'--port={port}', '--device=cpu',
            '--max_connections=2', '--read_timeout=60']
    with serving(args, f'http://127.0.0.1:{port}/health', tmp_path / 'server.log', env={'OMP_NUM_THREADS': '1'}):
        time.sleep(0.5)  # the readiness check's own connection is closed by now
        idle = [socket.create_connection(('127.0.0.1', port), timeout=10) for _ in range(2)]
        try:
            for sock in idle:
                sock.sendall(b'GET /health HTTP/1.1\r\nHost: x\r\n')  # headers never finished
            with pytest.raises(requests.exceptions.ReadTimeout):
                requests.get(f'http://127.0.0.1:{port}/health', timeout=(5, 2))  # accepted by the OS, not the server
            idle.pop().close()
            assert requests.get(f'http://127.0.0.1:{port}/health', timeout=20).json()['status'] == 'ok'
        finally:
            for sock in idle:
                sock.close()


def test_generations_past_the_cap_get_503(edge_server):
    base, _ = edge_server
    body = {'prompt': 'hello', 'model': 'endless', 'max_new_tokens': 20000, 'temperature': 1.0}
    streams = [requests.post(base + '/generate', json=body, stream=True, timeout=60) for _ in range(2)]
    readers = [r.iter_content(chunk_size=None) for r in streams]  # kept: a dropped reader closes its connection
    try:
        for r, reader in zip(streams, readers):
            assert r.status_code == 200 and next(reader)
        for path, extra in (('/generate', {}), ('/v1/completions', {'max_tokens': 5}), ('/v1/completions', {'stream': True})):
            r = requests.post(base + path, json=dict(body, **extra), timeout=30)
            assert r.status_code == 503 and r.headers['Retry-After'], r.text
            assert r.json()['error']['type'] == 'server_busy' and 'busy' in r.json()['error']['message']
        assert requests.get(base + '/health', timeout=10).json()['active'] == 2  # still answering
    finally:
        for r in streams:
            r.close()
    for _ in range(100):
        if requests.get(base + '/health', timeout=10).json()['active'] == 0:
            break
        time.sleep(0.1)
    r = requests.post(base + '/v1/completions', json=dict(body, max_tokens=5), timeout=60)
    assert r.status_code == 200 and r.json()['usage']['completion_tokens'] == 5  # the slots came back


@pytest.mark.parametrize('args,env,message', [
    (['--port=70000'], {}, '--port=70000'),  # once listened on 70000 % 65536 = 4464 while saying 70000
    (['--api_key=密钥'], {}, 'printable ASCII'),  # no HTTP client can send it
    ([], {'MINIGPT_API_KEY': 'key with spaces'}, 'printable ASCII'),
])
def test_bad_settings_refused_at_start(tiny_checkpoint, args, env, message):
    proc = run_script(['server.py', f'--models=tiny={tiny_checkpoint}', '--host=127.0.0.1', *args], env=env,
                      check=False, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr

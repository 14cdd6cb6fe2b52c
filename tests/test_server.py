"""The real server.py on a loopback port: the official openai client, raw HTTP for bad input, concurrency, disconnects."""
import json
import threading
import time

import pytest
import requests
import torch
from openai import OpenAI

from config.train_config import A_TOKEN, EOT_TOKEN
from conftest import SENTENCES, free_port, serving, train_tiny_checkpoint
from data_utils import get_encoding, tokenizer_facts
from model import GPT, GPTConfig, save_checkpoint

KEY = 'test-key-123'
AUTH = {'Authorization': f'Bearer {KEY}'}
# question/answer pairs in the SFT layout; no question ends in punctuation, so q + '##' + a encodes as
# encode(q) + [A_TOKEN] + encode(a), and no answer contains its question
QA = [('首都在哪', '北京。'), ('最长的河', '长江。'), ('熊猫吃啥', '竹子。'), ('春节吃啥', '饺子。')]


def endless_checkpoint(out_dir):
    """A random model that can never say EOT under top_k=50, so its generations run until stopped."""
    torch.manual_seed(0)
    args = dict(block_size=64, vocab_size=50304, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=False)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        model.lm_head.weight[EOT_TOKEN] = 0.0  # logit 0: far below the top 50 of 50,000 random logits
    save_checkpoint(str(out_dir), {'model_args': args, 'model': model.state_dict(), 'tokenizer': tokenizer_facts()})


@pytest.fixture(scope='module')
def server(tiny_checkpoint, tmp_path_factory):
    enc = get_encoding()
    for q, a in QA:
        assert enc.encode_ordinary(q + '##' + a) == enc.encode_ordinary(q) + [A_TOKEN] + enc.encode_ordinary(a)
    qa_dir, endless_dir = tmp_path_factory.mktemp('qa'), tmp_path_factory.mktemp('endless')
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
    enc = get_encoding()
    c = client(server)
    r = c.completions.create(model='tiny', prompt='北京', max_tokens=200, temperature=0)
    assert r.choices[0].text == SENTENCES[0][2:] and r.choices[0].finish_reason == 'stop'
    assert r.usage.prompt_tokens == len(enc.encode_ordinary('北京'))
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
    assert r.usage.prompt_tokens == len(get_encoding().encode_ordinary(QA[0][0])) + 1
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

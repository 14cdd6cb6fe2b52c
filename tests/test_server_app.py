"""
server.py in-process: request parsing through create_app's test client, and waitress's edges (the 413,
a request that trickles in) on a loopback port in a thread; no checkpoint, a tiny random model.
"""
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import requests
import torch

import contestants
import server
from conftest import GPT2, free_port, random_model, run_script
from engine import Engine, Sampling, generate_text


@pytest.fixture(scope='module')
def model():
    """
    A random model that never says EOT and, greedy, soon loops: the penalties change its text. float64, peaked
    logits: a batch's matmuls may differ from one row's in the last bits, never in what is picked.
    """
    m = random_model(seed=0, block_size=64)
    with torch.no_grad():
        m.lm_head.weight[GPT2.eot] = -100.0
    return m


@pytest.fixture(scope='module')
def app(model):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    engines = {'m': Engine(model, GPT2, slots=4, max_waiting=2)}
    yield server.create_app(engines, server.settings(max_new_tokens=200, api_key='')).test_client()
    torch.set_num_threads(n)


def test_generate_without_sampling_fields_is_the_arenas_default(app, model):
    """/generate, a local arena contestant with no settings and Sampling() give the same text: one set of defaults."""
    body = {'prompt': '北京是', 'seed': 3, 'max_new_tokens': 40}
    r = app.post('/generate', json=body)
    assert r.status_code == 200
    want = generate_text(model, GPT2, '北京是', Sampling(seed=3, max_new_tokens=40))
    assert r.get_data(as_text=True) == want
    arena = ''.join(contestants.stream_local(Engine(model, GPT2, slots=2), '北京是', {'seed': 3, 'max_new_tokens': 40}))
    assert arena == want
    unpenalized = generate_text(model, GPT2, '北京是', Sampling(seed=3, max_new_tokens=40, presence_penalty=0,
                                                                  frequency_penalty=0))
    assert want != unpenalized  # the penalties are on by default on /generate
    assert Sampling().presence_penalty == Sampling().frequency_penalty == 1.0 and Sampling().top_k == 20


def test_v1_defaults_are_openais(app, model):
    r = app.post('/v1/completions', json={'prompt': '北京是', 'seed': 3, 'max_tokens': 40})
    want = generate_text(model, GPT2, '北京是', Sampling.openai(seed=3, max_new_tokens=40))
    assert r.json['choices'][0]['text'] == want
    assert Sampling.openai() == Sampling(temperature=1.0, top_k=None, top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0)


@pytest.mark.parametrize('body,param,message', [
    ({'temperature': 10 ** 400}, 'temperature', 'finite number'),  # an integer too large for a float: once a 500
    ({'top_p': -10 ** 400}, 'top_p', 'finite number'),
    ({'seed': 2 ** 32}, 'seed', 'between 0 and 4294967295'),  # 2**32 + s drew what s draws
    ({'seed': 2 ** 63 - 1}, 'seed', 'between 0 and 4294967295'),
    ({'max_tokens': 5, 'max_new_tokens': 5}, 'max_tokens', 'not both'),
    ({'max_tokens': 0}, 'max_tokens', 'between 1 and 200'),
    ({'n': 2}, 'n', 'not supported'),
    ({'n': 1.5}, 'n', 'not supported'),
])
def test_bad_values_get_400_naming_the_field(app, body, param, message):
    r = app.post('/generate', json={'prompt': '北京', **body})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json['error']['param'] == param and message in r.json['error']['message'], r.json


def test_max_tokens_on_generate_n_as_a_float_and_the_largest_seed(app, model):
    r = app.post('/generate', json={'prompt': '北京', 'max_tokens': 7, 'temperature': 0})
    assert r.status_code == 200 and r.get_data(as_text=True) == generate_text(model, GPT2, '北京', Sampling(
        max_new_tokens=7, temperature=0))
    r = app.post('/v1/completions', json={'prompt': '北京', 'max_tokens': 7, 'n': 1.0, 'seed': 2 ** 32 - 1})
    assert r.status_code == 200 and r.json['usage']['completion_tokens'] == 7
    seeds = [app.post('/generate', json={'prompt': '北京', 'seed': s, 'temperature': 2.0, 'max_new_tokens': 10})
             .get_data(as_text=True) for s in (5, 5 + 2 ** 16)]
    assert seeds[0] != seeds[1]


# ----------------------------------------------------------------------------- waitress on a loopback port

@pytest.fixture(scope='module')
def live(model):
    """The real HTTP server in this process: 20,000-byte bodies, a 2 s deadline for a request, 5 s of silence."""
    settings = server.settings(host='127.0.0.1', port=free_port(), max_body_bytes=20000, request_timeout=2,
                               read_timeout=5, max_generations=2, max_waiting=2, api_key='')
    engines = {'m': Engine(model, GPT2, slots=2, max_waiting=2)}
    http = server.serve(server.create_app(engines, settings), settings, len(engines))
    threading.Thread(target=http.run, daemon=True).start()
    yield f'http://127.0.0.1:{settings.port}'
    http.close()


@pytest.mark.parametrize('size', [600_000, 5_000_000])
def test_a_large_body_gets_a_json_413_not_a_broken_pipe(live, size):
    data = json.dumps({'prompt': 'x' * size}).encode()
    r = requests.post(live + '/generate', data=data, timeout=30)
    assert r.status_code == 413 and r.headers['Content-Type'] == 'application/json'
    assert r.json()['error'] == {'message': 'the request body is larger than the 20000 bytes allowed',
                                 'type': 'request_too_large', 'param': None}
    with pytest.raises(urllib.error.HTTPError) as e:  # urllib sends the whole body before reading: a reset would show
        urllib.request.urlopen(urllib.request.Request(live + '/generate', data=data), timeout=30)
    assert e.value.code == 413 and json.loads(e.value.read())['error']['type'] == 'request_too_large'
    assert requests.get(live + '/health', timeout=10).status_code == 200


def test_a_request_that_trickles_in_is_cut_at_the_deadline(live):
    """One header byte a second stays under the read timeout (5 s) but not the 2 s allowed for a whole request."""
    port = int(live.rsplit(':', 1)[1])
    t0 = time.monotonic()
    closed = None
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        for byte in b'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ' + b'a' * 30:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.5)
                sock.setblocking(False)
                try:
                    if sock.recv(100) == b'':
                        closed = time.monotonic() - t0
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except OSError:
                closed = time.monotonic() - t0
                break
    assert closed is not None and 1.5 < closed < 4.5, closed
    assert requests.get(live + '/health', timeout=10).json()['status'] == 'ok'


@pytest.mark.slow
@pytest.mark.parametrize('arg,message', [
    ('--host=999.1.1.1', '--host=999.1.1.1'),
    ('--threads=-3', '--threads=-3'),
    ('--max_new_tokens=0', '--max_new_tokens=0'),
    ('--max_prompt_tokens=0', '--max_prompt_tokens=0'),
    ('--max_body_bytes=0', '--max_body_bytes=0'),
    ('--queue_timeout=-1.0', '--queue_timeout=-1.0'),
])
def test_bad_settings_are_one_line_errors(arg, message):
    proc = run_script(['server.py', '--models=x=nowhere', arg], check=False, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], proc.stderr


def test_importing_server_and_sample_reads_no_settings(monkeypatch, tmp_path):
    """The configurator runs in main(): a test (or a script) imports them and calls their parts directly."""
    import importlib
    import sys
    monkeypatch.setattr(sys, 'argv', ['x', '--no_such_setting=1', '--port=abc'])
    for name in ('server', 'sample'):
        monkeypatch.delitem(sys.modules, name, raising=False)
        module = importlib.import_module(name)  # once: "unknown setting --no_such_setting" and an exit
        assert module.__name__ == name
    sample = sys.modules['sample']
    with pytest.raises(ValueError, match='"top_p"'):
        sample.sampling_of(1, 10, 0.5, 20, 1.5, 0.0, 0.0, 1)
    assert sample.sampling_of(2, 10, 0.5, 0, 0.9, 0.0, 0.0, 1) == Sampling(max_new_tokens=10, temperature=0.5, top_k=None,
                                                                             top_p=0.9, presence_penalty=0, frequency_penalty=0,
                                                                             seed=1)
    with pytest.raises(ValueError, match='--models entry "nonsense" must look like name=checkpoint_folder'):
        server.load_models('nonsense', 'cpu')  # it raises; only main() exits
    with pytest.raises(ValueError, match=f'model x: .*{tmp_path.name}'):
        server.load_models(f'x={tmp_path}', 'cpu')

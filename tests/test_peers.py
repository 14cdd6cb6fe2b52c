"""
contestants.py against peers that misbehave at the byte level, each a loopback socket scripted by the test: a
body with neither length nor chunks, a trickle that never ends, keep-alive pings, a gzip body, [DONE] on an open
connection, a server that does not speak HTTP; and the peers file's checks.
"""
import contextlib
import gzip
import json
import os
import socket
import threading
import time

import pytest

from conftest import ROOT
from contestants import (MAX_WEIGHT, PeerError, TooLong, default_peers, describe_error, load_models, load_peers,
                         stream_answer)

PARAMS = {'max_new_tokens': 40, 'temperature': 0.0, 'top_k': 20, 'top_p': 1.0, 'presence_penalty': 0.0,
          'frequency_penalty': 0.0}
PLAIN = b'HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n'
EVENTS = b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n'


def sse(text, finish=None):
    event = {'choices': [{'delta': {'content': text}, 'finish_reason': finish}]}
    return b'data: ' + json.dumps(event).encode() + b'\n\n'


def chunk(data):
    return b'%x\r\n%s\r\n' % (len(data), data)


@contextlib.contextmanager
def raw_peer(script):
    """A peer on a loopback port that reads one request, then runs script(conn, seen); `seen` gets the request's
    head (str) and, when the arena went away first, 'gone' = the time a write to it failed."""
    server = socket.create_server(('127.0.0.1', 0))
    seen = {}

    def serve():
        conn, _ = server.accept()
        with conn:
            head = b''
            while b'\r\n\r\n' not in head:
                head += conn.recv(65536)
            seen['head'] = head.split(b'\r\n\r\n')[0].decode()
            try:
                script(conn, seen)
            except OSError:  # BrokenPipe / ConnectionReset: the arena closed the connection
                seen['gone'] = time.monotonic()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.getsockname()[1]}', seen
    finally:
        server.close()
        thread.join(10)


def for_seconds(conn, seconds, data, pause):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.sendall(data)
        time.sleep(pause)


# ----------------------------------------------------------------------------- reading a peer's answer
@pytest.mark.slow
def test_a_body_without_length_is_cut_at_the_cap_as_it_arrives():
    """No Content-Length, no chunks (it ends when the connection closes): 100 KB every 0.05 s for 3 s."""
    def flood(conn, seen):
        conn.sendall(PLAIN + b'Connection: close\r\n\r\n')
        for_seconds(conn, 3, b'a' * 100_000, 0.05)
    with raw_peer(flood) as (url, seen):
        start, got = time.monotonic(), ''
        with pytest.raises(TooLong):
            for piece in stream_answer({'name': 'x', 'url': url, 'kind': 'minigpt'}, None, '北京', PARAMS, 5, 500):
                got += piece
        took = time.monotonic() - start
    assert got == 'a' * 500 and took < 1.5, took  # read whole, it took the 3 s the peer kept sending
    assert 'gone' in seen and seen['gone'] - start < 2.5  # the connection was closed, the peer stopped


@pytest.mark.slow
@pytest.mark.parametrize('kind, head, start, beat, shown', [
    ('minigpt', PLAIN + b'Connection: close\r\n\r\n', b'', b'x', {'x'}),  # a character every 0.05 s, never silent
    ('openai', EVENTS + b'Connection: close\r\n\r\n', sse('hi'), b': ping\n\n', {'h', 'i'}),  # keep-alive comments
    ('openai', EVENTS + b'Connection: close\r\n\r\n', b'', sse(''), set()),  # empty deltas
])
def test_an_answer_that_never_ends_meets_its_deadline(kind, head, start, beat, shown):
    def trickle(conn, seen):
        conn.sendall(head + start)
        for_seconds(conn, 5, beat, 0.05)
    with raw_peer(trickle) as (url, seen):
        peer = {'name': 'x', 'url': url + ('/v1' if kind == 'openai' else ''), 'kind': kind, 'model': 'm'}
        began, got = time.monotonic(), ''
        with pytest.raises(PeerError) as err:
            for piece in stream_answer(peer, None, '北京', PARAMS, 1, 10_000, limit=1.5):
                got += piece
        took = time.monotonic() - began
    assert describe_error('x', peer, err.value, 1) == f'⚠️ x 出错：{peer["url"]} 的回答超过了 1.5 秒（一个回答最多这么久），已放弃'
    assert 1.4 < took < 2.5 and set(got) == shown, (took, got)
    assert 'gone' in seen  # the connection was closed under the peer


@pytest.mark.slow
def test_stop_on_a_stream_of_pings_closes_the_connection():
    """The consumer (the arena's worker on Stop) closes the generator between two pings: the socket is closed."""
    def pings(conn, seen):
        conn.sendall(EVENTS + b'Transfer-Encoding: chunked\r\n\r\n' + chunk(sse('你好')))
        end = time.monotonic() + 4
        while time.monotonic() < end:
            conn.sendall(chunk(b': ping\n\n'))
            time.sleep(0.05)
        conn.sendall(chunk(b'data: [DONE]\n\n') + b'0\r\n\r\n')
    with raw_peer(pings) as (url, seen):
        peer = {'name': 'x', 'url': url + '/v1', 'kind': 'openai', 'model': 'm'}
        pieces = stream_answer(peer, None, '北京', PARAMS, 2, 1000)
        assert next(pieces) == '你好'
        began = time.monotonic()
        assert next(pieces) == ''  # a ping: the consumer gets the turn, sees Stop, closes
        pieces.close()
        closed = time.monotonic()
        for _ in range(100):
            if 'gone' in seen:
                break
            time.sleep(0.02)
    assert closed - began < 1 and 'gone' in seen and seen['gone'] - closed < 1


@pytest.mark.slow
def test_done_ends_the_answer_while_the_connection_stays_open():
    def done_then_wait(conn, seen):
        conn.sendall(EVENTS + b'Transfer-Encoding: chunked\r\n\r\n' + chunk(sse('北京') + sse('是首都')))
        conn.sendall(chunk(b'data: [DONE]\n\n'))
        time.sleep(3)  # no end chunk, no close: keep-alive
    with raw_peer(done_then_wait) as (url, seen):
        began = time.monotonic()
        peer = {'name': 'x', 'url': url + '/v1', 'kind': 'openai', 'model': 'm'}
        answer = ''.join(stream_answer(peer, None, '北京', PARAMS, 2, 1000))
        took = time.monotonic() - began
    assert answer == '北京是首都' and took < 1, took


@pytest.mark.slow
def test_a_compressed_answer_is_refused_unread():
    body = gzip.compress('你好'.encode() * 1000)

    def gzipped(conn, seen):
        conn.sendall(PLAIN + b'Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
    with raw_peer(gzipped) as (url, seen):
        with pytest.raises(PeerError, match=r'回答是压缩过的（Content-Encoding: gzip）'):
            list(stream_answer({'name': 'x', 'url': url, 'kind': 'minigpt'}, None, '北京', PARAMS, 2, 10_000))
    assert 'accept-encoding: identity' in seen['head'].lower()


@pytest.mark.slow
@pytest.mark.parametrize('reply, message', [
    (b'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n', "不是 HTTP 服务（它的回应开头是 'SSH-2.0-OpenSSH_9.2p1 Debian-2"),
    (b'', '接受了连接，却一句 HTTP 回应也没有就断开了（不是 HTTP 服务？）'),
])
def test_a_peer_that_does_not_speak_http_is_named_so(reply, message):
    with raw_peer(lambda conn, seen: conn.sendall(reply)) as (url, seen):
        peer = {'name': 'x', 'url': url, 'kind': 'minigpt'}
        with pytest.raises(PeerError) as err:
            list(stream_answer(peer, None, '北京', PARAMS, 2, 100))
    assert describe_error('小明', peer, err.value, 2).startswith(f'⚠️ 小明 出错：{url} {message}'), str(err.value)
    assert '连不上' not in str(err.value)


@pytest.mark.slow
def test_the_key_variable_is_sent_as_a_bearer_token_and_a_short_body_is_a_failure(monkeypatch):
    monkeypatch.setenv('ZHANGSAN_KEY', 's3cret')

    def short(conn, seen):
        conn.sendall(PLAIN + b'Content-Length: 100\r\n\r\n' + '北京'.encode())
    with raw_peer(short) as (url, seen):
        with pytest.raises(PeerError, match='回答中途断了'):
            list(stream_answer({'name': 'x', 'url': url, 'kind': 'minigpt', 'api_key_env': 'ZHANGSAN_KEY'}, None,
                               '北京', PARAMS, 2, 100))
    assert 'Authorization: Bearer s3cret' in seen['head'].split('\r\n')
    monkeypatch.delenv('ZHANGSAN_KEY')
    with pytest.raises(PeerError, match='环境变量 ZHANGSAN_KEY 没有设置'):
        list(stream_answer({'name': 'x', 'url': url, 'kind': 'minigpt', 'api_key_env': 'ZHANGSAN_KEY'}, None, '北京',
                           PARAMS, 2, 100))


# ----------------------------------------------------------------------------- the peers file
@pytest.mark.parametrize('entries, message', [
    ([{'name': 'a', 'url': 'http://h:5000', 'modle': 'x'}], "entry 1 ('a'): unknown key(s) ['modle']"),
    ([{'name': 'a', 'checkpoint': 'out/sft'}, {'url': 'http://h:5000'}], 'entry 2: needs a non-empty "name"'),
    ([{'name': 'b'}], "entry 1 ('b'): needs \"url\""),
    ([{'name': 'c', 'url': 'h:5000'}], "entry 1 ('c'): needs \"url\""),
    ([{'name': 'd', 'url': 'http://h:1234/v1', 'kind': 'openai'}], 'an openai peer needs "model"'),
    ([{'name': 'e', 'url': 'http://h:5000', 'kind': 'ollama'}], '"kind" must be one of'),
    ([{'name': 'e', 'url': 'http://h:5000', 'kind': ['openai']}], '"kind" must be one of'),
    ([{'name': 'f', 'checkpoint': 'out/sft', 'url': 'http://h:5000'}], "unknown key(s) ['url']"),
    ([{'name': 'g', 'checkpoint': 'a'}, {'name': 'g', 'checkpoint': 'b'}], "entry 2 ('g'): the name 'g' is used twice"),
    ([{'name': 'h', 'checkpoint': 5}], "entry 1 ('h'): \"checkpoint\" must be a non-empty string, got 5"),
    ([{'name': 'i', 'checkpoint': None}], '"checkpoint" must be a non-empty string, got None'),
    ([{'name': 'j', 'url': 'http://h:5000', 'model': 3}], '"model" must be a non-empty string, got 3'),
    ([{'name': 'k', 'url': 'http://h:5000', 'weight': -1}], '"weight" must be a number >= 0 and <= 1000'),
    ([{'name': 'k', 'url': 'http://h:5000', 'weight': 'often'}], '"weight" must be a number >= 0'),
    ([{'name': 'k', 'url': 'http://h:5000', 'weight': 1e200}], '"weight" must be a number >= 0 and <= 1000 (1 = usual'),
    ([{'name': 'k', 'url': 'http://h:5000', 'weight': float('inf')}], 'got inf'),
    ([{'name': 'l', 'url': 'http://h:5000', 'same_as': 'nobody'}], '"same_as" must name other contestants'),
    ([{'name': 'm', 'checkpoint': 'a', 'same_as': ['m']}], '"same_as" must name other contestants'),
    ([{'name': 5, 'checkpoint': 'a'}], 'needs a non-empty "name"'),
    (['x'], "entry 1: expected an object, got 'x'"),
    ({'name': 'h'}, 'expected a non-empty JSON list'),
    ([{'name': 'p', 'url': 'http://h:99999'}],
     "entry 1 ('p'): \"url\" is not a valid URL (Port out of range 0-65535), got 'http://h:99999'"),
    ([{'name': 'p', 'url': 'http://h:port'}], '"url" is not a valid URL (Port could not be cast to integer value'),
    ([{'name': 'q', 'url': 'http://[::1:2'}], "\"url\" is not a valid URL (Invalid IPv6 URL), got 'http://[::1:2'"),
    ([{'name': 'r', 'url': 'http://:5000'}], '"url" names no host'),
    ([{'name': 's', 'url': 'http://h:5000', 'api_key_env': 'PATH'}],
     "\"api_key_env\" is the name of the environment variable that holds the API key"),
    ([{'name': 's', 'url': 'http://h:5000', 'api_key_env': 'HOME'}], "PATH is never sent; got 'HOME'"),
    ([{'name': 's', 'url': 'http://h:5000', 'api_key_env': 'MY KEY'}], "got 'MY KEY'"),
])
def test_peers_file_errors_name_the_entry(tmp_path, entries, message):
    path = tmp_path / 'peers.json'
    path.write_text(json.dumps(entries), encoding='utf-8')
    with pytest.raises(ValueError) as err:  # a library function raises; only the arena's main exits
        load_peers(str(path))
    assert message in str(err.value) and str(err.value).startswith(f'{path}: '), str(err.value)
    assert '\n' not in str(err.value)


def test_peers_file_encodings_key_variables_and_the_three_kinds(tmp_path):
    entries = [{'name': '本地', 'checkpoint': 'out/sft', 'weight': 2}, {'name': '张三的模型', 'url': 'http://192.168.1.20:5000'},
               {'name': 'qwen', 'url': 'http://127.0.0.1:1234/v1', 'kind': 'openai', 'model': 'qwen2-7b-instruct',
                'api_key_env': 'LMSTUDIO_KEY', 'same_as': ['张三的模型'], 'weight': 0.5},
               {'name': 'hf', 'url': 'https://[::1]:8443/v1', 'kind': 'openai', 'model': 'm', 'api_key_env': 'HF_TOKEN',
                'weight': MAX_WEIGHT}]
    path = tmp_path / 'peers.json'
    path.write_bytes(b'\xef\xbb\xbf' + json.dumps(entries, ensure_ascii=False).encode('utf-8'))  # Notepad's BOM is fine
    assert [e.get('kind') for e in load_peers(str(path))] == [None, 'minigpt', 'openai', 'openai']
    path.write_bytes(json.dumps(entries, ensure_ascii=False).encode('gbk'))  # saved as GBK by a Chinese Windows editor
    with pytest.raises(ValueError, match=f'{path}: not UTF-8 \\(byte 11'):
        load_peers(str(path))
    path.write_text('[{"name": "x",}]', encoding='utf-8')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_peers(str(path))
    with pytest.raises(ValueError, match='no such contestants file'):
        load_peers(str(tmp_path / 'none.json'))
    with open(os.path.join(ROOT, 'peers.example.json'), encoding='utf-8') as f:
        assert len(load_peers(f.name)) == len(json.load(f))


def test_without_peers_json_the_local_checkpoints_are_used(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match='^no peers.json and no out/sft or out/pretrain checkpoint'):
        default_peers()
    (tmp_path / 'out' / 'pretrain').mkdir(parents=True)
    (tmp_path / 'out' / 'pretrain' / 'ckpt.pt').write_bytes(b'')
    assert default_peers() == [{'name': 'pretrain (本地)', 'checkpoint': 'out/pretrain'}]
    assert "peers.json not found: using the local checkpoints ['out/pretrain']" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"^contestant 'x' \(.*out/pretrain\): ValueError: .*empty file"):
        load_models([{'name': 'x', 'checkpoint': 'out/pretrain'}], 'cpu')

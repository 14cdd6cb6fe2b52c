"""
The arena's contestants: the peers file that lists them, which of them are the same model underneath, how
a battle pair is drawn, and how each kind streams an answer. Plain functions; sample_gradio.py is the page.

    from contestants import load_peers, load_models, stream_answer
    entries = load_peers('peers.json')
    models = load_models(entries, 'cpu')
    for piece in stream_answer(entries[0], models.get(entries[0]['name']), '北京是', params, timeout=30, cap=2000):
        print(piece, end='')

Three kinds (see peers.example.json): a local checkpoint (the engine, in this process), a MiniGPT server
(POST /generate, a streamed plain-text body) and any OpenAI-compatible server (chat completions as
server-sent events). A peer is trusted for nothing: its answer is read as it arrives, a bounded piece at a time,
so the character cap, the silence timeout and the deadline of the whole answer hold whatever it sends. A status
other than 200, a body of the wrong type or compressed, bytes that are not UTF-8, a stream that ends without its
end mark, silence longer than the timeout and an answer that outlasts its deadline are each a failure; an answer
longer than asked for is cut. Peers are called directly (http.client), never through a proxy: they are machines
of the classroom network.
"""
import codecs
import contextlib
import http.client
import json
import os
import re
import socket
import threading
import urllib.parse

PEER_KEYS = {'name', 'url', 'kind', 'model', 'api_key_env', 'weight', 'same_as'}
LOCAL_KEYS = {'name', 'checkpoint', 'weight', 'same_as'}
KINDS = ('minigpt', 'openai')
MAX_WEIGHT = 1000  # a pair's odds are the product of two weights: bounded, their sum over all pairs stays finite
KEY_VARIABLE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(KEY|TOKEN|SECRET)[A-Za-z0-9_]*', re.IGNORECASE)  # "api_key_env"
OPENAI_SAMPLING = ('temperature', 'top_p', 'presence_penalty', 'frequency_penalty')  # the arena's knobs OpenAI has
ANSWER_TIMEOUTS = 10  # a peer's whole answer may take this many silence timeouts (30 s: 5 minutes), however it trickles
LOCAL_SLOTS = 4  # answers a local checkpoint generates together (its KV cache holds this many): side by side, a few users
READ_BYTES = 65536  # a peer's body is read this much at a time: the cap and the deadline act between two reads
MAX_LINE = 1_000_000  # bytes of one server-sent-events line


# ----------------------------------------------------------------------------- the peers file
def load_peers(path):
    """The contestants file, checked entry by entry; ValueError naming the file and the entry at the first problem."""
    if not os.path.exists(path):
        raise ValueError(f'{path}: no such contestants file (see peers.example.json)')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        entries = json.loads(raw.decode('utf-8-sig'))  # -sig: a BOM (Windows Notepad) is fine
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); save it as UTF-8')
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})')
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'{path}: expected a non-empty JSON list of contestants, like [{{"name": "本地", "checkpoint": "out/sft"}}]')
    names = [e.get('name') for e in entries if isinstance(e, dict)]
    for i, e in enumerate(entries, 1):
        where = f'{path}: entry {i}' + (f' ({e.get("name")!r})' if isinstance(e, dict) and 'name' in e else '')

        def need(ok, message):
            if not ok:
                raise ValueError(f'{where}: {message}')
        need(isinstance(e, dict), f'expected an object, got {e!r:.80}')
        allowed = LOCAL_KEYS if 'checkpoint' in e else PEER_KEYS
        need(not set(e) - allowed, f'unknown key(s) {sorted(set(e) - allowed)}; allowed here: {sorted(allowed)}')
        need(isinstance(e.get('name'), str) and e['name'].strip(), 'needs a non-empty "name"')
        need(names.index(e['name']) == i - 1, f'the name {e["name"]!r} is used twice')
        weight = e.get('weight', 1)
        need(isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight <= MAX_WEIGHT,
             f'"weight" must be a number >= 0 and <= {MAX_WEIGHT} (1 = usual, 0 = never in battles), '
             f'got {weight!r:.40}')
        same = [e['same_as']] if isinstance(e.get('same_as'), str) else e.get('same_as', [])
        need(isinstance(same, list) and all(n in names and n != e['name'] for n in same),
             f'"same_as" must name other contestants of this file, got {e.get("same_as")!r:.80}')
        for key in ('checkpoint', 'url', 'model', 'api_key_env'):
            need(key not in e or isinstance(e[key], str) and e[key].strip(),
                 f'"{key}" must be a non-empty string, got {e.get(key)!r:.60}')
        if 'checkpoint' in e:
            continue
        need(isinstance(e.get('url'), str) and e['url'].startswith(('http://', 'https://')),
             'needs "url" (http://host:port of a peer) or "checkpoint" (a local model folder)')
        try:
            url = urllib.parse.urlsplit(e['url'])
            url.port  # noqa: B018 -- parsing the port is the check: 99999 or 'x' raise here, not in a battle
        except ValueError as err:
            need(False, f'"url" is not a valid URL ({err}), got {e["url"]!r:.80}')
        need(url.hostname, f'"url" names no host, got {e["url"]!r:.80}')
        e.setdefault('kind', 'minigpt')
        need(e['kind'] in KINDS, f'"kind" must be one of {list(KINDS)}, got {e["kind"]!r:.40}')
        need(e['kind'] != 'openai' or e.get('model'), 'an openai peer needs "model" (the name its server lists under /v1/models)')
        need('api_key_env' not in e or KEY_VARIABLE.fullmatch(e['api_key_env']),
             '"api_key_env" is the name of the environment variable that holds the API key, sent to the peer as '
             'a bearer token: it must contain KEY, TOKEN or SECRET (like LMSTUDIO_KEY), so that a variable such as '
             f'PATH is never sent; got {e.get("api_key_env")!r:.60}')
    return entries


def default_peers():
    found = [{'name': f'{n} (本地)', 'checkpoint': p} for n, p in (('sft', 'out/sft'), ('pretrain', 'out/pretrain'))
             if os.path.exists(os.path.join(p, 'ckpt.pt'))]
    if not found:
        raise ValueError('no peers.json and no out/sft or out/pretrain checkpoint: train one, or pass --peers=FILE')
    print(f"peers.json not found: using the local checkpoints {[c['checkpoint'] for c in found]}")
    return found


def load_models(entries, device, slots=LOCAL_SLOTS):
    """
    An engine.Engine for each local checkpoint, keyed by contestant name: loaded once, and shared by every name of
    that checkpoint, so two of them answering side by side step together in one forward pass per token.
    """
    from checkpoint import checkpoint_path, load_checkpoint
    from engine import Engine
    from model import pick_device
    loaded, models = {}, {}
    for e in entries:
        if 'checkpoint' in e:
            path = os.path.realpath(checkpoint_path(e['checkpoint']))  # a folder, its ckpt.pt, a link: one model
            if path not in loaded:
                try:
                    loaded[path] = Engine(*load_checkpoint(path, pick_device(device))[:2], slots=slots)
                except Exception as err:  # missing, corrupt or foreign: the start stops with the contestant named
                    raise ValueError(f"contestant {e['name']!r} ({e['checkpoint']}): {type(err).__name__}: {err}") from err
            models[e['name']] = loaded[path]
    return models


# ----------------------------------------------------------------------------- who may meet whom
def this_machine():
    """Names and addresses under which a URL reaches this machine."""
    found = {'localhost', '::1', '0.0.0.0', socket.gethostname().lower()}
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(('192.0.2.1', 9))  # picks the LAN address; a UDP connect sends nothing
            found.add(s.getsockname()[0])
    except OSError:
        pass
    return found


def same_model_groups(entries, local=None):
    """name -> group; contestants that are one model share a group: same checkpoint file, same server and model, same_as."""
    local = this_machine() if local is None else local

    def identity(e):
        if 'checkpoint' in e:
            path = e['checkpoint']
            return 'checkpoint ' + os.path.realpath(os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path)
        url = urllib.parse.urlsplit(e['url'])
        where = (url.hostname or '').lower()
        where = 'localhost' if where in local or where.startswith('127.') else where
        path = url.path.rstrip('/').removesuffix('/v1')  # a MiniGPT server's /generate and its /v1 are one server
        return f"server {where}:{url.port or (443 if url.scheme == 'https' else 80)}{path} {e.get('model') or ''}"
    groups = {e['name']: identity(e) for e in entries}
    for e in entries:
        for other in [e['same_as']] if isinstance(e.get('same_as'), str) else e.get('same_as', []):
            old = groups[other]
            groups = {n: groups[e['name']] if g == old else g for n, g in groups.items()}
    return groups


def draw_pair(weights, groups, rng):
    """Two contestants of different groups, a pair drawn with odds = the product of their weights; sides at random."""
    names = list(weights)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if groups[a] != groups[b] and weights[a] * weights[b] > 0]
    if not pairs:
        return None
    pair = list(rng.choices(pairs, [weights[a] * weights[b] for a, b in pairs])[0])
    rng.shuffle(pair)
    return pair


# ----------------------------------------------------------------------------- streaming one answer
class PeerError(Exception):
    pass


class TooLong(Exception):
    pass


def stream_local(model_engine, prompt, params):
    """A local checkpoint's answer from its engine.Engine: the one place the arena calls the engine. params change
    the engine's Sampling() defaults, the demo's, which /generate starts from too. Closing it frees the slot."""
    import engine
    sampling = engine.Sampling(**params)
    try:
        request = model_engine.submit(engine.encode_prompt(model_engine.tok, prompt), sampling)
    except engine.Busy as err:
        raise PeerError(f'本地模型正忙（{model_engine.slots} 个回答正在生成，还有很多在排队），请稍后再试') from err
    return engine.pieces_of(model_engine.tok, request.groups(), sampling.stop)


def bearer(peer):
    """The Authorization header a peer's "api_key_env" asks for ({} without one)."""
    env = peer.get('api_key_env')
    if env and not os.environ.get(env):
        raise PeerError(f'环境变量 {env} 没有设置（这个模型的 API key）')
    return {'Authorization': f'Bearer {os.environ[env]}'} if env else {}


def failure(err, url, timeout, limit, expired, answering):
    """What went wrong, in words, for an exception raised while talking to the peer at url."""
    if expired:
        return f'{url} 的回答超过了 {limit:g} 秒（一个回答最多这么久），已放弃'
    if isinstance(err, TimeoutError):
        return f'{url} 超过 {timeout:g} 秒没有回应'
    if isinstance(err, http.client.RemoteDisconnected):  # before BadStatusLine and OSError: it is both
        return f'{url} 接受了连接，却一句 HTTP 回应也没有就断开了（不是 HTTP 服务？）'
    if isinstance(err, http.client.BadStatusLine):
        return f'{url} 不是 HTTP 服务（它的回应开头是 {str(err)[:60]!r}）'
    if isinstance(err, UnicodeDecodeError):
        return '回答不是 UTF-8 文本'
    if answering:
        return f'回答中途断了（{type(err).__name__}: {err}）'[:200]
    if isinstance(err, OSError):
        return f'连不上 {url}（对方没开机、没启动服务，或地址/端口写错了：{err}）'[:200]
    return f'{url} 的回应不合 HTTP（{type(err).__name__}: {err}）'[:200]


def peer_body(peer, path, body, timeout, limit, content_type, wrong_type):
    """
    The body of a peer's answer to POST `body` (JSON) at its url + path, as bytes arrive, read READ_BYTES at a
    time: only a 200 whose Content-Type starts with `content_type` (else PeerError(wrong_type + the type)) and whose
    body is not compressed (a small gzip can inflate to gigabytes). Silence longer than `timeout` seconds and an
    answer still going after `limit` seconds are PeerErrors; closing this generator (Stop) closes the connection.
    """
    url = urllib.parse.urlsplit(peer['url'])
    headers = {'Content-Type': 'application/json', 'Accept-Encoding': 'identity', **bearer(peer)}
    conn = (http.client.HTTPSConnection if url.scheme == 'https' else http.client.HTTPConnection)(
        url.hostname, url.port, timeout=min(timeout, limit))
    expired, answering, sock, r = threading.Event(), False, None, None

    def expire():  # the deadline: shut the socket under whichever read is waiting
        expired.set()
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
    watchdog = threading.Timer(limit, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        sock = conn.sock  # the response may outlive conn.sock (Connection: close hands the socket over to it)
        if expired.is_set():
            raise TimeoutError
        conn.request('POST', (url.path.rstrip('/') + path), json.dumps(body).encode('utf-8'), headers)
        r = conn.getresponse()
        answering = True
        if r.status != 200:
            raise PeerError(f"HTTP {r.status}：{r.read1(300).decode('utf-8', 'replace')}")
        encoding = (r.getheader('Content-Encoding') or 'identity').strip().lower()
        if encoding != 'identity':
            raise PeerError(f'回答是压缩过的（Content-Encoding: {encoding}）；只收未压缩的文本')
        kind = r.getheader('Content-Type') or ''
        if not kind.startswith(content_type):
            raise PeerError(f'{wrong_type}（Content-Type: {kind or "无"}）')
        while (data := r.read1(READ_BYTES)) and not expired.is_set():  # Linux reads on after a shutdown(SHUT_RD)
            yield data
        if expired.is_set() or r.length:  # cut off by the deadline, or shorter than its Content-Length
            raise http.client.IncompleteRead(b'', r.length)
    except PeerError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise PeerError(failure(e, peer['url'], timeout, limit, expired.is_set(), answering)) from e
    finally:
        watchdog.cancel()
        if r is not None:
            r.close()
        conn.close()


def stream_minigpt(peer, prompt, params, timeout, limit):
    body = dict(params, prompt=prompt, **({'model': peer['model']} if peer.get('model') else {}))
    decoder = codecs.getincrementaldecoder('utf-8')()  # strict: bytes that are not UTF-8 mean a garbled peer
    with contextlib.closing(peer_body(peer, '/generate', body, timeout, limit, 'text/plain',
                                      '回答不是 MiniGPT /generate 的纯文本流')) as chunks:
        try:
            for chunk in chunks:
                yield decoder.decode(chunk)
            decoder.decode(b'', final=True)
        except UnicodeDecodeError as e:
            raise PeerError('回答不是 UTF-8 文本') from e


def stream_openai(peer, prompt, params, timeout, limit):
    """A chat completion streamed as server-sent events, ended by finish_reason or [DONE]; anything else fails."""
    question = prompt.rstrip()[:-2].rstrip() if prompt.rstrip().endswith('##') else prompt
    body = {'model': peer['model'], 'messages': [{'role': 'user', 'content': question}], 'stream': True,
            'max_tokens': params['max_new_tokens'], **{k: params[k] for k in OPENAI_SAMPLING}}  # no top_k: not OpenAI's
    with contextlib.closing(peer_body(peer, '/chat/completions', body, timeout, limit, 'text/event-stream',
                                      '回答不是 OpenAI 的流式回答')) as chunks:
        buffer = b''
        for chunk in chunks:
            buffer += chunk
            *lines, buffer = buffer.split(b'\n')
            text = ''
            for raw in lines:
                try:
                    line = raw.decode('utf-8').strip()
                except UnicodeDecodeError as e:
                    raise PeerError('回答不是 UTF-8 文本') from e
                if not line.startswith('data:'):
                    continue  # comments (": ping"), event names, blank lines
                if line[5:].strip() == '[DONE]':
                    yield text
                    return  # the end, even if the server keeps the connection open
                try:
                    choices = json.loads(line[5:])['choices']
                    piece = (choices[0].get('delta') or {}).get('content') or '' if choices else ''
                    done = bool(choices and choices[0].get('finish_reason'))
                    assert isinstance(piece, str)
                except (ValueError, LookupError, TypeError, AttributeError, AssertionError):
                    raise PeerError(f'流里有一行不是 OpenAI 的回答块：{line[:120]}')
                text += piece
                if done:
                    yield text
                    return
            yield text  # possibly '' (a ping, an empty delta): the consumer may stop here
            if len(buffer) > MAX_LINE:
                raise PeerError(f'流里有一行超过 {MAX_LINE:,} 字节')
    raise PeerError('回答中途断了：流没有以 finish_reason 或 [DONE] 结束')


def capped(pieces, limit):
    """At most `limit` characters of a peer's answer; then TooLong (the peer sent more than it was asked for)."""
    total = 0
    try:
        for piece in pieces:
            if total + len(piece) > limit:
                yield piece[:limit - total]
                raise TooLong(limit)
            total += len(piece)
            yield piece
    finally:
        pieces.close()


def stream_answer(entry, model, prompt, params, timeout, cap, limit=None):
    """
    Text pieces of one contestant's answer: `model` when it is a local checkpoint, else its peer, cut at `cap`
    characters, silent at most `timeout` seconds at a time and `limit` seconds in all (default ANSWER_TIMEOUTS
    timeouts). A peer's piece may be '' (a keep-alive arrived): closing the generator there stops the answer and
    closes its connection.
    """
    if model is not None:
        return stream_local(model, prompt, params)
    stream = stream_openai if entry['kind'] == 'openai' else stream_minigpt
    return capped(stream(entry, prompt, params, timeout, limit or ANSWER_TIMEOUTS * timeout), cap)


def describe_error(name, entry, err, timeout):
    """A message a user understands, for the pane of the contestant that failed."""
    if isinstance(err, PeerError):
        why = str(err)
    elif isinstance(err, UnicodeDecodeError):
        why = '回答不是 UTF-8 文本'
    else:
        why = f'{type(err).__name__}: {str(err)[:200]}'
    return f'⚠️ {name} 出错：{why}'

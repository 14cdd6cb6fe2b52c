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
server-sent events). A peer is trusted for nothing: a status other than 200, a body of the wrong type, bytes
that are not UTF-8, a stream that ends without its end mark, silence longer than the timeout and an answer
longer than asked for are each a failure (or, the last, a cut) with a message for the user.
"""
import codecs
import json
import os
import socket
import urllib.parse

import requests
import urllib3

PEER_KEYS = {'name', 'url', 'kind', 'model', 'api_key_env', 'weight', 'same_as'}
LOCAL_KEYS = {'name', 'checkpoint', 'weight', 'same_as'}
KINDS = ('minigpt', 'openai')
OFF = {'top_p': 1.0, 'presence_penalty': 0.0, 'frequency_penalty': 0.0}  # values that leave sampling as it was


# ----------------------------------------------------------------------------- the peers file
def load_peers(path):
    """The contestants file, checked entry by entry; any problem stops the start with the file and the entry named."""
    if not os.path.exists(path):
        raise SystemExit(f'error: {path}: no such contestants file (see peers.example.json)')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        entries = json.loads(raw.decode('utf-8-sig'))  # -sig: a BOM (Windows Notepad) is fine
    except UnicodeDecodeError as e:
        raise SystemExit(f'error: {path}: not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); save it as UTF-8')
    except json.JSONDecodeError as e:
        raise SystemExit(f'error: {path}: not valid JSON ({e})')
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f'error: {path}: expected a non-empty JSON list of contestants, like [{{"name": "本地", "checkpoint": "out/sft"}}]')
    names = [e.get('name') for e in entries if isinstance(e, dict)]
    for i, e in enumerate(entries, 1):
        where = f'{path}: entry {i}' + (f' ({e.get("name")!r})' if isinstance(e, dict) and 'name' in e else '')

        def need(ok, message):
            if not ok:
                raise SystemExit(f'error: {where}: {message}')
        need(isinstance(e, dict), f'expected an object, got {e!r:.80}')
        allowed = LOCAL_KEYS if 'checkpoint' in e else PEER_KEYS
        need(not set(e) - allowed, f'unknown key(s) {sorted(set(e) - allowed)}; allowed here: {sorted(allowed)}')
        need(isinstance(e.get('name'), str) and e['name'].strip(), 'needs a non-empty "name"')
        need(names.index(e['name']) == i - 1, f'the name {e["name"]!r} is used twice')
        weight = e.get('weight', 1)
        need(isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight < float('inf'),
             f'"weight" must be a number >= 0 (1 = usual, 0 = never in battles), got {weight!r:.40}')
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
        e.setdefault('kind', 'minigpt')
        need(e['kind'] in KINDS, f'"kind" must be one of {list(KINDS)}, got {e["kind"]!r:.40}')
        need(e['kind'] != 'openai' or e.get('model'), 'an openai peer needs "model" (the name its server lists under /v1/models)')
    return entries


def default_peers():
    found = [{'name': f'{n} (本地)', 'checkpoint': p} for n, p in (('sft', 'out/sft'), ('pretrain', 'out/pretrain'))
             if os.path.exists(os.path.join(p, 'ckpt.pt'))]
    if not found:
        raise SystemExit('error: no peers.json and no out/sft or out/pretrain checkpoint: train one, or pass --peers=FILE')
    print(f"peers.json not found: using the local checkpoints {[c['checkpoint'] for c in found]}")
    return found


def load_models(entries, device):
    """(model, tokenizer) of each local checkpoint, loaded once (two names may share one), keyed by contestant name."""
    from checkpoint import load_checkpoint
    from model import pick_device
    loaded, models = {}, {}
    for e in entries:
        if 'checkpoint' in e:
            path = os.path.abspath(e['checkpoint'])
            if path not in loaded:
                try:
                    loaded[path] = load_checkpoint(path, pick_device(device))[:2]
                except Exception as err:  # missing, corrupt or foreign: the start stops with the contestant named
                    raise SystemExit(f"error: contestant {e['name']!r} ({path}): {type(err).__name__}: {err}")
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


def stream_local(loaded, prompt, params):
    """A local checkpoint's answer, loaded = (model, tokenizer): the one place the arena calls the engine."""
    import engine
    model, tok = loaded
    return engine.stream_text(model, tok, engine.encode_prompt(tok, prompt), **params)


def post(peer, path, body, timeout):
    """An open streamed response of a peer, or PeerError for anything but 200."""
    env = peer.get('api_key_env')
    if env and not os.environ.get(env):
        raise PeerError(f'环境变量 {env} 没有设置（这个模型的 API key）')
    headers = {'Authorization': f'Bearer {os.environ[env]}'} if env else {}
    r = requests.post(peer['url'].rstrip('/') + path, json=body, headers=headers, stream=True, timeout=(timeout, timeout))
    if r.status_code != 200:
        with r:
            raise PeerError(f"HTTP {r.status_code}：{next(r.iter_content(300), b'').decode('utf-8', 'replace')}")
    return r


def body_chunks(r):
    """The body as it arrives. requests reports silence in mid-body as a lost connection: it is a timeout."""
    try:
        yield from r.iter_content(chunk_size=None)
    except requests.ConnectionError as e:
        if e.args and isinstance(e.args[0], urllib3.exceptions.ReadTimeoutError):
            raise requests.ReadTimeout(str(e)) from e
        raise PeerError(f'回答中途断了（{e}）'[:200]) from e
    except requests.RequestException as e:  # a chunked body cut short: the peer stopped or crashed
        raise PeerError(f'回答中途断了（{type(e).__name__}）') from e


def stream_minigpt(peer, prompt, params, timeout):
    body = dict(params, prompt=prompt, **({'model': peer['model']} if peer.get('model') else {}))
    with post(peer, '/generate', body, timeout) as r:
        kind = r.headers.get('Content-Type', '')
        if not kind.startswith('text/plain'):
            raise PeerError(f'回答不是 MiniGPT /generate 的纯文本流（Content-Type: {kind or "无"}）')
        decoder = codecs.getincrementaldecoder('utf-8')()  # strict: bytes that are not UTF-8 mean a garbled peer
        for chunk in body_chunks(r):
            piece = decoder.decode(chunk)
            if piece:
                yield piece
        decoder.decode(b'', final=True)


def stream_openai(peer, prompt, params, timeout):
    """A chat completion streamed as server-sent events; anything that is not such a stream, ended, is a failure."""
    question = prompt.rstrip()[:-2].rstrip() if prompt.rstrip().endswith('##') else prompt
    body = {'model': peer['model'], 'messages': [{'role': 'user', 'content': question}], 'stream': True,
            'max_tokens': params['max_new_tokens'], **{k: params[k] for k in ('temperature', *OFF)}}  # no top_k: not OpenAI's
    with post(peer, '/chat/completions', body, timeout) as r:
        kind = r.headers.get('Content-Type', '')
        if not kind.startswith('text/event-stream'):
            raise PeerError(f'回答不是 OpenAI 的流式回答（Content-Type: {kind or "无"}）')
        ended, buffer = False, b''
        for chunk in body_chunks(r):
            buffer += chunk
            *lines, buffer = buffer.split(b'\n')
            for line in (x.decode('utf-8').strip() for x in lines):
                if ended or not line.startswith('data:'):
                    continue  # comments, event names, what follows the end
                if line[5:].strip() == '[DONE]':
                    ended = True
                    continue
                try:
                    choices = json.loads(line[5:])['choices']
                    text = (choices[0].get('delta') or {}).get('content') or '' if choices else ''
                    ended = bool(choices and choices[0].get('finish_reason'))
                    assert isinstance(text, str)
                except (ValueError, LookupError, TypeError, AttributeError, AssertionError):
                    raise PeerError(f'流里有一行不是 OpenAI 的回答块：{line[:120]}')
                if text:
                    yield text
            if len(buffer) > 1_000_000:
                raise PeerError('流里有一行超过 1 MB')
        if not ended:
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


def stream_answer(entry, model, prompt, params, timeout, cap):
    """Text pieces of one contestant's answer: `model` when it is a local checkpoint, else its peer, cut at `cap` characters."""
    if model is not None:
        return stream_local(model, prompt, params)
    pieces = (stream_openai if entry['kind'] == 'openai' else stream_minigpt)(entry, prompt, params, timeout)
    return capped(pieces, cap)


def describe_error(name, entry, err, timeout):
    """A message a user understands, for the pane of the contestant that failed."""
    url = entry.get('url', '')
    if isinstance(err, requests.Timeout):  # before ConnectionError: a connect timeout is both
        why = f'{url} 超过 {timeout} 秒没有回应'
    elif isinstance(err, requests.ConnectionError):
        why = f'连不上 {url}（对方没开机、没启动服务，或地址/端口写错了）'
    elif isinstance(err, UnicodeDecodeError):
        why = '回答不是 UTF-8 文本'
    elif isinstance(err, PeerError):
        why = str(err)
    else:
        why = f'{type(err).__name__}: {str(err)[:200]}'
    return f'⚠️ {name} 出错：{why}'

"""
The class arena's registrations: students register their own servers with the arena over HTTP, the arena
checks each one before accepting it and probes every contestant periodically, so battles are drawn only among
servers that are up. The arena (sample_gradio.py) holds a Registry; this file is also the students' command:

    python registry.py --arena=http://192.168.1.10:7860 --url=http://192.168.1.20:5000 --name=张三的模型 --owner=张三 --token=班级口令
    python registry.py --arena=... --url=... --name=... --owner=张三 --password=<roster password> --token=...  # a class with a roster
    python registry.py --help

A registration is a POST /register with JSON {name, url, owner, token, password?, model?, kind?}. The arena
refuses (with a message) a wrong class token, an owner not on the roster or with the wrong password, a name
that the peers file or another owner holds, and a server that does not answer GET /health, GET /v1/models and
a short canary prompt. Registering the same name again (same owner) updates it. Each contestant is probed every
`heartbeat` seconds (GET /health, or GET <url>/models for an OpenAI-compatible one); one not seen for `expiry`
seconds (no HTTP answer at all: refused, unreachable, silent) is down and out of battles until a probe reaches
it again; the peers file's servers are probed alike. FastChat's controller uses 45 s and 90 s;
the arena's defaults are 15 s and 45 s: a class's laptops come and go within a lesson.
"""
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import requests

import votes as store
from contestants import describe_error, stream_answer

CANARY_PROMPT = '北京是'  # a prompt every MiniGPT continues; the answer itself is not judged, only that one comes
CANARY_PARAMS = {'max_new_tokens': 8, 'temperature': 0.0, 'top_k': 1, 'top_p': 1.0, 'presence_penalty': 0.0,
                 'frequency_penalty': 0.0}
MAX_NAME = 40  # characters of a contestant's or an owner's name


class Refused(ValueError):
    """A registration the arena does not accept: its message is for the student, status the HTTP status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def probe_url(entry):
    """Where a contestant is asked whether it is up."""
    base = entry['url'].rstrip('/')
    return base + '/models' if entry.get('kind') == 'openai' else base + '/health'


def unreachable(url, err, timeout):
    """Why a probe of the server at url failed, in the words the arena's panes use for a peer that is down."""
    if isinstance(err, requests.Timeout):  # before ConnectionError: a connect timeout is both
        return f'{url} 超过 {timeout:g} 秒没有回应'
    if isinstance(err, requests.ConnectionError):
        return f'连不上 {url}（对方没开机、没启动服务，或地址/端口写错了）'
    return f'{url} 的回应不合 HTTP（{type(err).__name__}: {str(err)[:120]}）'


def check_server(entry, timeout):
    """
    {'model', 'latency', 'tokens_per_s'} of a server that answers /health, /v1/models (with `model` among its ids
    when one is named) and the canary prompt; Refused otherwise. latency: seconds to the canary's first piece;
    tokens_per_s: pieces of the answer per second (the servers stream one piece per token).
    """
    base = entry['url'].rstrip('/')
    try:
        health = requests.get(probe_url(entry), timeout=timeout)
        if health.status_code != 200:
            raise Refused(f'{probe_url(entry)} 回答 HTTP {health.status_code}，不是 200')
        listing = requests.get(base + '/models' if entry['kind'] == 'openai' else base + '/v1/models', timeout=timeout)
        ids = [m.get('id') for m in listing.json().get('data', [])] if listing.status_code == 200 else None
    except requests.RequestException as err:
        raise Refused(f"{entry['name']} 出错：{unreachable(base, err, timeout)}")
    except ValueError:
        ids = None
    if not ids or not all(isinstance(i, str) for i in ids):
        raise Refused(f'{base}/v1/models 没有列出模型（应当是 {{"data": [{{"id": ...}}]}}）')
    if entry.get('model') and entry['model'] not in ids:
        raise Refused(f"服务器上没有模型 {entry['model']!r}，它有：{', '.join(ids)}")
    model = entry.get('model') or ids[0]
    start, first, pieces = time.time(), None, 0
    try:
        for piece in stream_answer(dict(entry, model=model), None, CANARY_PROMPT, CANARY_PARAMS, timeout,
                                   CANARY_PARAMS['max_new_tokens'] * 8 + 100):
            first = first or time.time()
            pieces += 1
    except Exception as err:  # the canary failed: whatever the reason, the message says it
        raise Refused('试答失败：' + describe_error(entry['name'], entry, err, timeout).removeprefix('⚠️ '))
    if not pieces:
        raise Refused(f'试答“{CANARY_PROMPT}”没有生成任何内容')
    end = time.time()
    return {'model': model, 'latency': round(first - start, 3),
            'tokens_per_s': round(pieces / (end - first), 1) if end > first and pieces > 1 else None}


def text_field(payload, key, required=True):
    value = payload.get(key, '')
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(f'缺少 "{key}"（一段文字）')
    value = value.strip()
    if len(value) > MAX_NAME and key in ('name', 'owner') or any(ord(c) < 32 for c in value):
        raise Refused(f'"{key}" 太长（最多 {MAX_NAME} 个字）或含控制字符')
    return value


class Registry:
    """
    The contestants students registered, their state, and the probing. fixed: the peers file's names (not open to
    registration); token: the class token ('' = none); roster: owner -> password, or None; db_path: the votes
    store, where registrations are kept across restarts. check and probe are replaceable for tests.
    """

    def __init__(self, db_path, fixed=(), token='', roster=None, heartbeat=15.0, expiry=45.0, timeout=10.0,
                 check=check_server, on_change=None):
        self.db = store.connect(db_path)
        self.fixed = {n: dict(e, last_seen=time.time()) for n, e in dict(fixed).items()}  # live until probes say otherwise
        self.token, self.roster = token, roster
        self.heartbeat, self.expiry, self.timeout, self.check, self.on_change = heartbeat, expiry, timeout, check, on_change
        self.lock = threading.Lock()
        self.entries = {c['name']: c for c in store.contestants(self.db)}  # registered earlier: probed before they count
        self.stopped = threading.Event()

    def register(self, payload):
        """Checks and stores one registration; its message, or Refused."""
        if not isinstance(payload, dict):
            raise Refused('请求体应当是一个 JSON 对象')
        if self.token and payload.get('token') != self.token:
            raise Refused('班级口令不对（--token），问老师要', 403)
        name, url, owner = text_field(payload, 'name'), text_field(payload, 'url'), text_field(payload, 'owner')
        model, kind = text_field(payload, 'model', False), payload.get('kind') or 'minigpt'
        if not url.startswith(('http://', 'https://')):
            raise Refused(f'"url" 应当是 http://地址:端口，收到 {url!r:.80}')
        if kind not in ('minigpt', 'openai') or kind == 'openai' and not model:
            raise Refused('"kind" 应当是 minigpt 或 openai（openai 还需要 "model"）')
        if self.roster is not None and self.roster.get(owner) != payload.get('password'):
            raise Refused(f'{owner} 不在名单上，或密码不对（--password 是登录竞技场的密码）', 403)
        if name in self.fixed:
            raise Refused(f'名字 {name!r} 已被竞技场的参赛文件占用，换一个名字', 409)
        with self.lock:
            held = self.entries.get(name)
        if held and held['owner'] != owner:
            raise Refused(f"名字 {name!r} 已被 {held['owner']} 注册，换一个名字", 409)
        entry = {'name': name, 'url': url, 'kind': kind, **({'model': model} if model else {})}
        found = self.check(entry, self.timeout)
        now = time.time()
        record = dict(entry, owner=owner, model=found['model'], latency=found['latency'], tokens_per_s=found['tokens_per_s'],
                      registered=datetime.now(timezone.utc).isoformat(timespec='seconds'), last_seen=now, up=True)
        with self.lock:
            held = self.entries.get(name)
            if held and held['owner'] != owner:  # taken while this one was being checked
                raise Refused(f"名字 {name!r} 已被 {held['owner']} 注册，换一个名字", 409)
            self.entries[name] = record
        store.save_contestant(self.db, record)
        if self.on_change:
            self.on_change()
        return (f"{'已更新' if held else '已注册'} {name}（{owner}）：模型 {found['model']}，"
                f"首字 {found['latency']:.2f} 秒" + (f"，约 {found['tokens_per_s']} token/秒" if found['tokens_per_s'] else ''))

    def peer(self, name):
        """The registered contestant as a peers-file entry, for contestants.stream_answer."""
        e = self.entries[name]
        return {'name': name, 'url': e['url'], 'kind': e['kind'], **({'model': e['model']} if e.get('model') else {})}

    def live(self, name, now=None):
        """Whether a contestant may be drawn: fixed local ones always; the others when seen within the expiry."""
        with self.lock:
            e = self.entries.get(name) or self.fixed.get(name)
        if e is None or 'url' not in e:
            return e is not None
        return e.get('last_seen') is not None and (now or time.time()) - e['last_seen'] <= self.expiry

    def probe(self, name):
        """One heartbeat of one contestant: last_seen and latency on an answer, up recomputed either way."""
        with self.lock:
            e = self.entries.get(name) or self.fixed.get(name)
        start = time.time()
        try:  # any HTTP answer: the server is there (an answer that fails still shows in its pane)
            requests.get(probe_url(e), timeout=min(self.timeout, self.heartbeat)).close()
            ok = True
        except requests.RequestException:
            ok = False
        with self.lock:
            if ok:
                e['last_seen'], e['latency_probe'] = time.time(), round(time.time() - start, 3)
            was, e['up'] = e.get('up'), self.live_unlocked(e)
        if name in self.entries and was != e['up']:
            store.save_contestant(self.db, e)
        return e['up']

    def live_unlocked(self, e):
        return e.get('last_seen') is not None and time.time() - e['last_seen'] <= self.expiry

    def probe_all(self):
        """Probes every registered contestant and every URL peer of the peers file at once."""
        with self.lock:
            names = list(self.entries) + [n for n, e in self.fixed.items() if 'url' in e]
        if names:
            with ThreadPoolExecutor(min(16, len(names))) as pool:
                list(pool.map(self.probe, names))
        if self.on_change:
            self.on_change()

    def start(self):
        """Probes now and then every `heartbeat` seconds, in a daemon thread, until stop()."""
        def loop():
            while not self.stopped.is_set():
                try:
                    self.probe_all()
                except Exception as err:  # a probe round must never end the loop: the next one may work
                    print(f'registry: probe round failed: {type(err).__name__}: {err}', file=sys.stderr)
                self.stopped.wait(self.heartbeat)
        thread = threading.Thread(target=loop, daemon=True, name='registry-heartbeat')
        thread.start()
        return thread

    def stop(self):
        self.stopped.set()

    def rows(self, battles=None):
        """One dict per contestant for the contestants tab: name, owner, model, up, last seen, latency, tokens/s, battles."""
        now, battles = time.time(), battles or {}
        with self.lock:
            every = [(n, e, True) for n, e in self.entries.items()] + [(n, e, False) for n, e in self.fixed.items()]
            out = []
            for name, e, registered in every:
                seen = e.get('last_seen')
                out.append({'name': name, 'owner': e.get('owner', '（参赛文件）') if registered else '（参赛文件）',
                            'model': e.get('model') or ('本地 ' + e['checkpoint'] if 'checkpoint' in e else ''),
                            'up': 'checkpoint' in e or (seen is not None and now - seen <= self.expiry),
                            'last_seen': None if seen is None else round(now - seen, 1),
                            'latency': e.get('latency_probe', e.get('latency')), 'tokens_per_s': e.get('tokens_per_s'),
                            'battles': battles.get(name, 0)})
        return sorted(out, key=lambda r: (not r['up'], r['name']))


# ----------------------------------------------------------------------------- the students' command
arena = 'http://127.0.0.1:7860'  # the arena's address, as the teacher gives it
url = ''  # your server, as the arena's machine reaches it: http://<your LAN address>:5000
name = ''  # the name your model shows under on the board
owner = ''  # your own name (on a class roster: your sign-in name); empty: the same as --name
token = ''  # the class token the teacher gives
password = ''  # your arena password, when the class has a roster
model = ''  # which of your server's models (its /v1/models ids); empty: the first
kind = 'minigpt'  # minigpt (server.py) or openai (any OpenAI-compatible server; --url ends in /v1)
timeout = 60  # seconds to wait for the arena's answer (it tries your server first)

if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    if not url or not name:
        sys.exit('error: give --url=http://<your address>:5000 and --name=<your model\'s name> (and --token=...)')
    body = {'name': name, 'url': url, 'owner': owner or name, 'token': token, 'kind': kind,
            **({'password': password} if password else {}), **({'model': model} if model else {})}
    try:
        reply = requests.post(arena.rstrip('/') + '/register', json=body, timeout=timeout)
        message = reply.json().get('message', reply.text[:200])
    except requests.RequestException as err:
        sys.exit(f'error: cannot reach the arena at {arena}: {type(err).__name__}')
    except ValueError:
        sys.exit(f'error: {arena}/register answered HTTP {reply.status_code} without JSON: is that an arena?')
    if reply.status_code != 200:
        sys.exit(f'refused (HTTP {reply.status_code}): {message}')
    print(message)

"""
Serves trained checkpoints over HTTP: the peers' streaming /generate and an OpenAI-compatible API.

    python server.py --models=sft=out/sft,pretrain=out/pretrain --port=5000
    python server.py --models=mine=out/sft --host=127.0.0.1 --api_key=secret   # or MINIGPT_API_KEY=secret
    curl -N localhost:5000/generate -d '{"prompt": "中国的首都是哪里？##", "max_new_tokens": 60, "temperature": 0}'

Routes; a request names a model with "model", the first one is the default:
    GET  /health                 {"status": "ok", "models": [...], "active": generating now, "waiting": for a slot}
    POST /generate               {prompt, max_new_tokens (or max_tokens), model?, sampling...} -> plain text, streamed
    GET  /v1/models
    POST /v1/completions         {prompt, max_tokens, stream, model, sampling...}
    POST /v1/chat/completions    {messages, max_tokens, stream, model, sampling...}
Sampling, OpenAI's names, on every route: temperature, top_k, top_p, presence_penalty, frequency_penalty,
seed, stop (a string or up to 4; the text ends before the first, which is not returned). What a request
leaves out comes from engine.Sampling: the demo's defaults on /generate (the arena's: near greedy, penalties
1.0), OpenAI's on /v1 (temperature 1, top_p 1, penalties 0), what OpenAI's clients expect. n > 1, logprobs,
tools and the like get a 400 naming the field rather than being ignored; so does every bad value, with
{"error": {"message", "type", "param"}}. A prompt ending in ## is a question and a chat's last user
message always is: the model sees encode(question) + [the answer separator] and only the answer comes
back. With an API key set, every route but /health wants "Authorization: Bearer <key>".

Generation: each model has an engine.Engine, one thread that steps up to max_generations requests together
in one forward pass per token; up to max_waiting more wait for a slot, each for at most queue_timeout
seconds, then get a 503 with Retry-After (so does one more past max_waiting, at once). A client that goes
away, or a stop string, frees its slot at the engine's next step, streamed or not.

It runs on waitress (a WSGI server made for this, on Windows too), whose event loop reads each request
whole before a worker thread sees it, so a slow or half-sent request holds no thread. A connection that
sends nothing for read_timeout seconds is closed, and so is one that has not sent a whole request within
request_timeout; at most max_connections are open (more wait in the OS's queue). A body over max_body_bytes
gets a JSON 413, and the connection reads and drops the rest of what the client sends before it closes,
so the client reads the 413 rather than a reset connection.
"""
import hmac
import json
import os
import re
import socket
import sys
import time
import uuid
from contextlib import closing
from types import SimpleNamespace

from flask import Flask, Response, jsonify, request
from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import RequestEntityTooLarge
from werkzeug.exceptions import HTTPException

from checkpoint import load_checkpoint
from engine import Busy, Engine, Sampling, encode_prompt, pieces_of

DEFAULT_MODELS = 'sft=out/sft,pretrain=out/pretrain'
models = DEFAULT_MODELS  # name=checkpoint_folder,...; the first is the default (with this default, missing folders are skipped)
host = '0.0.0.0'  # all interfaces: peers call over the LAN; 127.0.0.1 keeps it local
port = 5000
device = 'auto'  # cpu, cuda, mps, or auto
api_key = ''  # require "Authorization: Bearer <api_key>"; empty = use env MINIGPT_API_KEY, or no key
max_new_tokens = 1024  # cap on tokens a request may ask for
max_prompt_tokens = 2048  # cap on prompt length in tokens
max_body_bytes = 256 * 1024  # larger request bodies get a 413
max_generations = 16  # per model: requests generating at once, stepped together in one forward pass (the engine's slots)
max_waiting = 32  # per model: requests waiting for a slot, in order; one more gets a 503 at once
queue_timeout = 10.0  # seconds a request may wait for a slot before it gets a 503 with Retry-After
max_connections = 100  # open connections; more wait in the OS's accept queue until one closes
read_timeout = 30  # seconds a connection may send nothing (a half-sent request, an idle keep-alive) before it is closed
request_timeout = 60  # seconds to receive one whole request, headers and body, however it trickles in
threads = 0  # torch CPU threads; 0 = torch's default (one per core)
SETTINGS = ('models', 'host', 'port', 'device', 'api_key', 'max_new_tokens', 'max_prompt_tokens', 'max_body_bytes',
            'max_generations', 'max_waiting', 'queue_timeout', 'max_connections', 'read_timeout', 'request_timeout',
            'threads')


def settings(**changes):
    """The settings above (as the configurator left them), with changes: what create_app and serve are given."""
    values = {name: globals()[name] for name in SETTINGS}
    unknown = set(changes) - set(values)
    assert not unknown, f'unknown settings {unknown}'
    return SimpleNamespace(**{**values, **changes})


# OpenAI fields this server cannot honour: any value but the one that means "off" is a 400 naming the field
UNSUPPORTED = {'n': 1, 'best_of': 1, 'logprobs': False, 'top_logprobs': 0, 'echo': False, 'suffix': '',
               'logit_bias': {}, 'tools': [], 'tool_choice': 'none', 'functions': [], 'function_call': 'none'}
SAMPLING_FIELDS = ('temperature', 'top_k', 'top_p', 'presence_penalty', 'frequency_penalty', 'seed', 'stop')


class ApiError(Exception):
    def __init__(self, status, message, kind='invalid_request_error', param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_json(message, kind, param=None):
    return {'error': {'message': message, 'type': kind, 'param': param}}


def error_body(status, message, kind, param=None):
    response = jsonify(error_json(message, kind, param))
    response.status_code = status
    if status == 503:
        response.headers['Retry-After'] = '2'
    return response


def on_http_error(e):
    """Unknown route, wrong method, body too large: the same JSON error as every other."""
    kinds = {404: 'not_found_error', 405: 'method_not_allowed', 413: 'request_too_large'}
    response = error_body(e.code, f'{request.method} {request.path}: {e.description}', kinds.get(e.code, 'invalid_request_error'))
    if e.code == 413:  # a client that sent that much is not kept connected until the read timeout: WSGI may not
        body = response.get_data()  # send Connection: close, but waitress closes after a body of unknown length
        response.response, response.direct_passthrough = iter([body]), True
        del response.headers['Content-Length']
    return response


def check_key(key):
    if key and request.path != '/health':
        given = request.headers.get('Authorization', '')
        if not hmac.compare_digest(given.encode(), f'Bearer {key}'.encode()):
            raise ApiError(401, 'missing or wrong API key: send "Authorization: Bearer <key>"', 'authentication_error')


# ----------------------------------------------------------------------------- request checking

def json_body():
    try:  # bytes: json finds the UTF-8/16/32 itself; curl -d sends a form content type, so none is required
        body = json.loads(request.get_data())
        json.dumps(body, ensure_ascii=False).encode('utf-8')  # a lone surrogate ("\ud800") is not text: refuse it here, once
    except RecursionError:
        raise ApiError(400, 'the body is nested too deeply to be a request')
    except UnicodeEncodeError:
        raise ApiError(400, 'the body holds a lone UTF-16 surrogate (such as \\ud800), which is not text')
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object')
    return body


def short(value):
    return json.dumps(value, ensure_ascii=False)[:50]


def field(body, name, kinds, default=None):
    """body[name] checked against kinds (bools are not numbers here); default if absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if int in kinds and float not in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)  # 20.0 from a JavaScript slider means 20
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = ' or '.join(k.__name__ for k in kinds)
        raise ApiError(400, f'"{name}" must be {names}, got {short(value)}', param=name)
    return value


def is_off(value, off):
    """A field's value that means what leaving it out means (1.0 is 1, as a JavaScript number is)."""
    if isinstance(off, int) and not isinstance(off, bool):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == off
    return value == off and type(value) is type(off)


def tokens_field(body, route):
    """(name, value) of the length limit a body gives: max_new_tokens on /generate (max_tokens taken too), OpenAI's on /v1."""
    names = ('max_new_tokens', 'max_tokens') if route == 'generate' else ('max_completion_tokens', 'max_tokens') \
        if route == 'chat' else ('max_tokens',)
    given = [n for n in names if body.get(n) is not None]
    if len(given) > 1:
        raise ApiError(400, f'give one of "{given[0]}" and "{given[1]}", not both', param=given[1])
    name = given[0] if given else names[0]
    return name, field(body, name, (int,))


def sampling(body, route, engines, settings):
    """(model name, its Engine, Sampling) from a request body, every value checked; route: generate, completions, chat."""
    for key, off in UNSUPPORTED.items():
        if body.get(key) is not None and not is_off(body[key], off):
            raise ApiError(400, f'"{key}" is not supported by this server (got {short(body[key])}); leave it out',
                           param=key)
    name = field(body, 'model', (str,), next(iter(engines)))
    if name not in engines:
        raise ApiError(404, f'unknown model "{name}"; this server has: {", ".join(engines)}', 'model_not_found', 'model')
    tokens_key, n = tokens_field(body, route)
    base = Sampling() if route == 'generate' else Sampling.openai()  # the demo's defaults, or OpenAI's
    n = min(base.max_new_tokens, settings.max_new_tokens) if n is None else n
    if not 1 <= n <= settings.max_new_tokens:
        raise ApiError(400, f'"{tokens_key}" must be between 1 and {settings.max_new_tokens}, got {n}', param=tokens_key)
    number = (int, float)
    kinds = dict(temperature=number, top_k=(int,), top_p=number, presence_penalty=number, frequency_penalty=number,
                 seed=(int,), stop=(str, list))
    given = {key: field(body, key, kinds[key]) for key in SAMPLING_FIELDS}
    try:  # the engine's own rules, so every caller refuses the same values
        return name, engines[name], base.but(max_new_tokens=n, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise ApiError(400, str(e), param=re.match(r'"(\w+)"', str(e)).group(1))


def prompt_ids(engine, text, settings, chat=False):
    param = 'messages' if chat else 'prompt'
    if not text.strip():
        raise ApiError(400, 'the prompt is empty', param=param)
    tok = engine.tok
    ids = encode_prompt(tok, text, chat=chat)
    if ids == [tok.a_token]:
        raise ApiError(400, 'the question is empty: write it before the ##', param=param)
    if len(ids) > settings.max_prompt_tokens:
        raise ApiError(400, f'the prompt is {len(ids)} tokens, more than the {settings.max_prompt_tokens} allowed',
                       param=param)
    return ids


def chat_question(body):
    messages = body.get('messages')
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, '"messages" must be a non-empty list of {"role", "content"} objects', param='messages')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get('role'), str):
            raise ApiError(400, f'messages[{i}] must be an object with a string "role"', param='messages')
        content = m.get('content')
        if isinstance(content, list):  # the newer form: a list of {"type": "text", "text": ...} parts
            content = ''.join(p.get('text', '') for p in content if isinstance(p, dict) and isinstance(p.get('text'), str))
        if not isinstance(content, str):
            raise ApiError(400, f'messages[{i}].content must be a string', param='messages')
        m['content'] = content
    users = [m['content'] for m in messages if m['role'] == 'user']
    if not users:
        raise ApiError(400, '"messages" holds no user message to answer', param='messages')
    return users[-1]  # the model was fine-tuned on single questions: the last one is what it answers


# ----------------------------------------------------------------------------- generation

def start(engine, ids, params, settings):
    """A Request holding one of the engine's slots, or a 503 once the queue is full or the wait is over."""
    busy = f'busy: {engine.slots} generations are running and more are waiting; retry in a few seconds'
    try:
        job = engine.submit(ids, params)
    except Busy:
        raise ApiError(503, busy, 'server_busy')
    if not job.wait_started(settings.queue_timeout):
        raise ApiError(503, busy, 'server_busy')
    return job


def run(engine, job, tally, environ):
    """Text pieces of a started request; tally counts the ids as they come. A client that has left stops it."""
    gone = environ.get('waitress.client_disconnected', lambda: False)  # waitress notices it on its event loop

    def steps():
        groups = job.groups()  # what the engine made since the last piece went out: one piece of text per wake-up
        try:
            for group in groups:
                if gone():
                    return
                tally['completion_tokens'] += len(group)
                yield group
        finally:
            groups.close()  # frees the slot at the engine's next step
    return pieces_of(engine.tok, steps(), job.row.sampling.stop, tally)


def new_tally(ids):  # what run() counts, for usage and finish_reason
    return {'prompt_tokens': len(ids), 'completion_tokens': 0, 'stopped': False}


def finish(tally, params):
    """(usage, finish_reason) once generation has ended."""
    p, c = tally['prompt_tokens'], tally['completion_tokens']
    reason = 'length' if c >= params.max_new_tokens and not tally['stopped'] else 'stop'
    return {'prompt_tokens': p, 'completion_tokens': c, 'total_tokens': p + c}, reason


def sse(objects):
    with closing(objects):  # a client that went away stops the generation now, not at garbage collection
        for obj in objects:
            yield f'data: {json.dumps(obj, ensure_ascii=False)}\n\n'
        yield 'data: [DONE]\n\n'


def utf8(pieces):
    with closing(pieces):
        for piece in pieces:
            yield piece.encode('utf-8')


def streamed(body, mimetype, job):
    """A streamed response; its request is cancelled when the server closes it (finished, or the client left)."""
    response = Response(body, mimetype=mimetype, headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
    response.call_on_close(job.cancel)
    return response


def openai_answer(body, name, engine, ids, params, settings, chat):
    stream = field(body, 'stream', (bool,), False)
    options = field(body, 'stream_options', (dict,), {})
    tally = new_tally(ids)
    kind = ('chat.completion.chunk' if stream else 'chat.completion') if chat else 'text_completion'
    head = {'id': f'{"chatcmpl" if chat else "cmpl"}-{uuid.uuid4().hex}', 'object': kind,
            'created': int(time.time()), 'model': name}

    def choice(text, reason):
        if not chat:
            return {'index': 0, 'text': text, 'logprobs': None, 'finish_reason': reason}
        if not stream:
            return {'index': 0, 'message': {'role': 'assistant', 'content': text}, 'finish_reason': reason}
        return {'index': 0, 'delta': {'content': text} if text else {}, 'finish_reason': reason}

    job = start(engine, ids, params, settings)
    pieces = run(engine, job, tally, request.environ)
    if not stream:
        try:
            text = ''.join(pieces)
        finally:
            pieces.close()
        usage, reason = finish(tally, params)
        return jsonify(dict(head, choices=[choice(text, reason)], usage=usage))

    def events():
        with closing(pieces):
            if chat:
                yield dict(head, choices=[{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}])
            for piece in pieces:
                yield dict(head, choices=[choice(piece, None)])
            usage, reason = finish(tally, params)
            yield dict(head, choices=[choice('', reason)])
            if options.get('include_usage'):
                yield dict(head, choices=[], usage=usage)
    return streamed(sse(events()), 'text/event-stream', job)


# ----------------------------------------------------------------------------- routes

def create_app(engines, settings):
    """The Flask app serving engines ({name: Engine}, the first is the default) under settings (see settings())."""
    app = Flask(__name__)
    app.config['MAX_CONTENT_LENGTH'] = settings.max_body_bytes
    app.json.ensure_ascii = False  # Chinese stays readable in curl
    app.register_error_handler(ApiError, lambda e: error_body(e.status, e.message, e.kind, e.param))
    app.register_error_handler(HTTPException, on_http_error)

    @app.errorhandler(Exception)
    def on_bug(e):
        app.logger.exception('unexpected error')
        return error_body(500, f'internal error: {type(e).__name__}: {e}', 'server_error')

    app.before_request(lambda: check_key(settings.api_key))

    @app.get('/health')
    def health():
        return jsonify({'status': 'ok', 'models': list(engines), 'active': sum(e.active for e in engines.values()),
                        'waiting': sum(e.queued for e in engines.values())})

    @app.get('/v1/models')
    def list_models():
        return jsonify({'object': 'list', 'data': [{'id': n, 'object': 'model', 'created': 0, 'owned_by': 'minigpt'}
                                                   for n in engines]})

    @app.post('/generate')
    def generate():
        body = json_body()
        text = field(body, 'prompt', (str,))
        if text is None:
            raise ApiError(400, '"prompt" is required', param='prompt')
        name, engine, params = sampling(body, 'generate', engines, settings)
        ids = prompt_ids(engine, text, settings)
        job = start(engine, ids, params, settings)
        return streamed(utf8(run(engine, job, new_tally(ids), request.environ)), 'text/plain', job)

    @app.post('/v1/completions')
    def completions():
        body = json_body()
        text = body.get('prompt')
        if isinstance(text, list) and len(text) == 1:
            text = text[0]
        if not isinstance(text, str):
            raise ApiError(400, '"prompt" must be a string (or a list of one string)', param='prompt')
        name, engine, params = sampling(body, 'completions', engines, settings)
        return openai_answer(body, name, engine, prompt_ids(engine, text, settings), params, settings, chat=False)

    @app.post('/v1/chat/completions')
    def chat_completions():
        body = json_body()
        question = chat_question(body)
        name, engine, params = sampling(body, 'chat', engines, settings)
        return openai_answer(body, name, engine, prompt_ids(engine, question, settings, chat=True), params, settings,
                             chat=True)
    return app


# ----------------------------------------------------------------------------- the HTTP server's edges

class TooLarge(RequestEntityTooLarge):
    """waitress's 413 for a body over the limit, as the JSON error every other refusal is."""
    def to_response(self, ident=None):
        body = json.dumps(error_json(f'the request body is larger than the {self.limit} bytes allowed',
                                     'request_too_large'), separators=(',', ':')).encode()
        return '413 Request Entity Too Large', [('Content-Type', 'application/json')], body


class Parser(HTTPRequestParser):
    limit = 0  # bytes a body may have, set by serve()

    def received(self, data):
        n = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge) and not isinstance(self.error, TooLarge):
            self.error = TooLarge('')
            self.error.limit = self.limit
        return n


class Channel(HTTPChannel):
    """
    waitress's connection with two bounds of its own:
    - one whole request (headers and body) must arrive within request_timeout seconds, so clients that send a
      byte now and then (under read_timeout) cannot hold every connection for ever;
    - after a 413 the connection lingers: its output is shut, and what the client is still sending is read and
      dropped (up to linger_bytes, and while it keeps sending), so the client reads the 413 instead of a
      connection reset, which closing a socket with unread input causes.
    """
    parser_class = Parser
    request_timeout, linger_bytes = 60, 16 * 1024 * 1024  # set by serve()
    request_began, lingering, refused = None, None, False

    def received(self, data):
        now = time.monotonic()
        if self.request is None:
            self.request_began = now
        elif now - self.request_began > self.request_timeout:
            self.will_close = True  # still not a whole request: the connection goes
            return False
        result = super().received(data)
        self.refused = self.refused or any(isinstance(r.error, TooLarge) for r in self.requests)
        return result

    def handle_close(self):
        if self.refused and self.lingering is None:
            self.lingering, self.will_close = self.linger_bytes, False
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the 413 is out: the client sees the response end
                return
            except OSError:
                pass
        super().handle_close()

    def readable(self):
        return True if self.lingering is not None else super().readable()

    def handle_read(self):
        if self.lingering is None:
            return super().handle_read()
        try:
            data = self.recv(65536)  # at the end of input recv() itself closes the socket
        except OSError:
            data = b''
        self.lingering -= len(data)
        if data:
            self.last_activity = time.time()  # waitress's read_timeout still closes a client that goes quiet
        if data and self.lingering <= 0:
            super().handle_close()


def serve(app, settings, n_engines):
    """waitress on settings.host:port with the bounds above; returns the server (call .run())."""
    Parser.limit = settings.max_body_bytes
    Channel.request_timeout = settings.request_timeout
    server = create_server(app, host=settings.host, port=settings.port,
                           # a worker thread per generating or waiting request, and spare ones for /health and 503s
                           threads=n_engines * (settings.max_generations + settings.max_waiting) + 4,
                           # waitress's limit counts its own listening socket and wake-up pipe too: 2 more than the clients
                           connection_limit=settings.max_connections + 2, channel_timeout=settings.read_timeout,
                           cleanup_interval=1, channel_request_lookahead=1,
                           max_request_body_size=settings.max_body_bytes + 1, ident='minigpt-zh')
    server.channel_class = Channel
    return server


def load_models(spec, device):
    """{name: (model, tokenizer)} from a --models value; ValueError names the entry that is wrong."""
    pairs = [p.strip() for p in spec.split(',') if p.strip()]
    loaded = {}
    for pair in pairs:
        name, sep, folder = pair.partition('=')
        if not sep or not name or not folder:
            raise ValueError(f'--models entry "{pair}" must look like name=checkpoint_folder')
        if name in loaded:
            raise ValueError(f'--models names "{name}" twice')
        if spec == DEFAULT_MODELS and not os.path.exists(os.path.join(folder, 'ckpt.pt')):
            print(f'skipping {name}: no {folder}/ckpt.pt', file=sys.stderr)
            continue
        try:
            loaded[name] = load_checkpoint(folder, device)[:2]
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f'model {name}: {e}') from e
        print(f'loaded {name} from {folder} ({loaded[name][0].num_params() / 1e6:.2f}M parameters) on {device}')
    if not loaded:
        raise ValueError(f'no checkpoint found for --models={spec}; train one, or pass --models=name=folder')
    return loaded


def check_settings(s):
    """Settings that would fail later, or start a server that refuses everything, raise ValueError here."""
    if not 1 <= s.port <= 65535:
        raise ValueError(f'--port={s.port}: a TCP port is between 1 and 65535')
    if s.api_key and not re.fullmatch(r'[!-~]+', s.api_key):  # what an HTTP client can put in a header
        raise ValueError('the API key (--api_key or MINIGPT_API_KEY) must be printable ASCII without spaces: '
                         'no HTTP client could send it')
    for name in ('max_new_tokens', 'max_prompt_tokens', 'max_body_bytes', 'max_generations', 'max_connections',
                 'read_timeout', 'request_timeout'):
        if getattr(s, name) < 1:
            raise ValueError(f'--{name}={getattr(s, name)}: must be at least 1')
    for name in ('max_waiting', 'queue_timeout', 'threads'):
        if getattr(s, name) < 0:
            raise ValueError(f'--{name}={getattr(s, name)}: must be 0 or more')
    try:
        numeric = re.fullmatch(r'[\d.]+', s.host) or ':' in s.host  # an address, never looked up by name
        socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST if numeric else 0)
    except (OSError, UnicodeError) as e:
        raise ValueError(f'--host={s.host}: not an address this machine can listen on ({e})')


def lan_address():
    """The address others reach this machine at: the one its default route leaves from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(('192.0.2.1', 9))  # TEST-NET-1: connect() on UDP only picks a route
            return s.getsockname()[0]
        except OSError:  # no network at all
            return "<this machine's address>"


def main():
    global api_key
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read(), globals())
    api_key = api_key or os.environ.get('MINIGPT_API_KEY', '')
    s = settings()
    try:
        check_settings(s)
    except ValueError as e:
        sys.exit(f'error: {e}')
    import torch
    if s.threads:
        torch.set_num_threads(s.threads)
    from model import pick_device
    try:
        loaded = load_models(s.models, pick_device(s.device))
    except ValueError as e:
        sys.exit(f'error: {e}')
    engines = {name: Engine(model, tok, slots=s.max_generations, max_waiting=s.max_waiting)
               for name, (model, tok) in loaded.items()}
    try:
        server = serve(create_app(engines, s), s, len(engines))
    except OSError as e:
        sys.exit(f'error: cannot listen on {s.host}:{s.port}: {e}')
    print(f'serving {", ".join(engines)} on http://{s.host}:{s.port} (API key {"on" if s.api_key else "off"}; '
          f'{s.max_generations} generations at once per model, {s.max_waiting} more may wait)', flush=True)
    if s.host in ('0.0.0.0', '::', '') and not s.api_key:
        print(f'warning: listening on all interfaces without an API key: anyone on your network can use it at '
              f'http://{lan_address()}:{s.port}. Keep it to this machine with --host=127.0.0.1, or require a key '
              f'with --api_key=... (or MINIGPT_API_KEY=...).', file=sys.stderr, flush=True)
    server.run()


if __name__ == '__main__':
    main()

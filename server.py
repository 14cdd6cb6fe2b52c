"""
Serves trained checkpoints over HTTP: the peers' streaming /generate and an OpenAI-compatible API.

    python server.py --models=sft=out/sft,pretrain=out/pretrain --port=5000
    python server.py --models=mine=out/sft --host=127.0.0.1 --api_key=secret   # or MINIGPT_API_KEY=secret
    curl -N localhost:5000/generate -d '{"prompt": "中国的首都是哪里？##", "max_new_tokens": 60, "temperature": 0}'

Routes (DESIGN.md §5); a request names a model with "model", the first one is the default:
    GET  /health                 {"status": "ok", "models": [...], "active": generations running now}
    POST /generate               {prompt, max_new_tokens, model?, sampling...} -> plain text, streamed
    GET  /v1/models
    POST /v1/completions         {prompt, max_tokens, stream, model, sampling...}
    POST /v1/chat/completions    {messages, max_tokens, stream, model, sampling...}
Sampling, OpenAI's names, on every route: temperature, top_k, top_p, presence_penalty, frequency_penalty,
seed, stop (a string or up to 4; the text ends before the first, which is not returned). n > 1, logprobs,
tools and the like get a 400 naming the field rather than being ignored; so does every bad value, with
{"error": {"message", "type", "param"}}. A prompt ending in ## is a question and a chat's last user
message always is: the model sees encode(question) + [the answer separator] and only the answer comes
back. With an API key set, every route but /health wants "Authorization: Bearer <key>".

It runs on waitress (a WSGI server made for this, on Windows too), whose event loop reads each request
whole before a worker thread sees it, so a slow or half-sent request holds no thread. A connection that
sends nothing for read_timeout seconds is closed; at most max_connections are open (more wait in the
OS's queue); at most max_generations generate at once, and one more gets a 503 with Retry-After. Each
generation has its own KV cache and RNG; the model steps of all of them take turns under one lock, one
token at a time, so streams interleave instead of fighting over the cores (tests/bench/bench_sample.py
measures both ways). A client that goes away stops its generation before the next token, streamed or not.
"""
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from contextlib import closing

from flask import Flask, Response, jsonify, request
from waitress import create_server
from werkzeug.exceptions import HTTPException

from engine import check_sampling, encode_prompt, generate_ids, text_pieces, until_stop
from checkpoint import load_checkpoint
from model import pick_device

DEFAULT_MODELS = 'sft=out/sft,pretrain=out/pretrain'
models = DEFAULT_MODELS  # name=checkpoint_folder,...; the first is the default (with this default, missing folders are skipped)
host = '0.0.0.0'  # all interfaces: peers call over the LAN; 127.0.0.1 keeps it local
port = 5000
device = 'auto'  # cpu, cuda, mps, or auto
api_key = ''  # require "Authorization: Bearer <api_key>"; empty = use env MINIGPT_API_KEY, or no key
max_new_tokens = 1024  # cap on tokens a request may ask for
max_prompt_tokens = 2048  # cap on prompt length in tokens
max_body_bytes = 256 * 1024  # larger request bodies get a 413
max_generations = 8  # generations at once, streamed or not; one more gets a 503 (8 share a 2-core CPU at ~20 tok/s each)
max_connections = 100  # open connections; more wait in the OS's accept queue until one closes
read_timeout = 30  # seconds a connection may send nothing (a half-sent request, an idle keep-alive) before it is closed
serialize = True  # model steps take turns under one lock (False: requests run their steps concurrently)
threads = 0  # torch CPU threads; 0 = torch's default (one per core)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
api_key = api_key or os.environ.get('MINIGPT_API_KEY', '')

DEFAULTS = dict(max_new_tokens=min(225, max_new_tokens), temperature=0.1, top_k=20)  # the seed's sampling settings
# OpenAI fields this server cannot honour: any value but the one that means "off" is a 400 naming the field
UNSUPPORTED = {'n': 1, 'best_of': 1, 'logprobs': False, 'top_logprobs': 0, 'echo': False, 'suffix': '',
               'logit_bias': {}, 'tools': [], 'tool_choice': 'none', 'functions': [], 'function_call': 'none'}
MAX_STOPS, MAX_STOP_CHARS = 4, 100  # OpenAI's 4 stop strings; longer than any answer of ours is a mistake
app = Flask(__name__)
app.config['MAX_CONTENT_LENGTH'] = max_body_bytes
app.json.ensure_ascii = False  # Chinese stays readable in curl
MODELS = {}  # name -> model, filled at start
STEP_LOCK = threading.Lock() if serialize else None
active = [0]  # generations holding a slot right now, for /health, the 503 and the disconnect tests
active_lock = threading.Lock()


class ApiError(Exception):
    def __init__(self, status, message, kind='invalid_request_error', param=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(status, message, kind, param=None):
    response = jsonify({'error': {'message': message, 'type': kind, 'param': param}})
    response.status_code = status
    if status == 503:
        response.headers['Retry-After'] = '2'
    return response


@app.errorhandler(ApiError)
def on_api_error(e):
    return error_body(e.status, e.message, e.kind, e.param)


@app.errorhandler(HTTPException)  # unknown route, wrong method, body too large
def on_http_error(e):
    kinds = {404: 'not_found_error', 405: 'method_not_allowed', 413: 'request_too_large'}
    response = error_body(e.code, f'{request.method} {request.path}: {e.description}', kinds.get(e.code, 'invalid_request_error'))
    if e.code == 413:  # a client that sent that much is not kept connected until the read timeout: WSGI may not
        body = response.get_data()  # send Connection: close, but waitress closes after a body of unknown length
        response.response, response.direct_passthrough = iter([body]), True
        del response.headers['Content-Length']
    return response


@app.errorhandler(Exception)
def on_bug(e):
    app.logger.exception('unexpected error')
    return error_body(500, f'internal error: {type(e).__name__}: {e}', 'server_error')


@app.before_request
def check_key():
    if api_key and request.path != '/health':
        given = request.headers.get('Authorization', '')
        if not hmac.compare_digest(given.encode(), f'Bearer {api_key}'.encode()):
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


def stop_strings(body):
    stop = body.get('stop')
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not (isinstance(stops, list) and len(stops) <= MAX_STOPS
            and all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)):
        raise ApiError(400, f'"stop" must be a string or a list of up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} '
                            f'characters, got {short(stop)}', param='stop')
    return stops


def sampling(body, tokens_key):
    """(model name, (model, tokenizer), generate_ids kwargs, stop strings) from a request body, every value checked."""
    for key, off in UNSUPPORTED.items():
        if body.get(key) is not None and not (body[key] == off and type(body[key]) is type(off)):
            raise ApiError(400, f'"{key}" is not supported by this server (got {short(body[key])}); leave it out',
                           param=key)
    name = field(body, 'model', (str,), next(iter(MODELS)))
    if name not in MODELS:
        raise ApiError(404, f'unknown model "{name}"; this server has: {", ".join(MODELS)}', 'model_not_found', 'model')
    n = field(body, tokens_key, (int,), DEFAULTS['max_new_tokens'])
    if not 1 <= n <= max_new_tokens:
        raise ApiError(400, f'"{tokens_key}" must be between 1 and {max_new_tokens}, got {n}', param=tokens_key)
    number = (int, float)
    params = dict(temperature=float(field(body, 'temperature', number, DEFAULTS['temperature'])),
                  top_k=field(body, 'top_k', (int,), DEFAULTS['top_k']), top_p=field(body, 'top_p', number, 1.0),
                  presence_penalty=field(body, 'presence_penalty', number, 0.0),
                  frequency_penalty=field(body, 'frequency_penalty', number, 0.0))
    try:
        check_sampling(**params)  # the engine's own rules, so every caller refuses the same values
    except ValueError as e:
        raise ApiError(400, str(e), param=re.match(r'"(\w+)"', str(e)).group(1))
    seed = field(body, 'seed', (int,))
    if seed is not None and not 0 <= seed < 2 ** 63:
        raise ApiError(400, f'"seed" must be between 0 and 2**63-1, got {seed}', param='seed')
    return name, MODELS[name], dict(params, max_new_tokens=n, seed=seed), stop_strings(body)


def prompt_ids(loaded, text, chat=False):
    param = 'messages' if chat else 'prompt'
    if not text.strip():
        raise ApiError(400, 'the prompt is empty', param=param)
    tok = loaded[1]
    ids = encode_prompt(tok, text, chat=chat)
    if ids == [tok.a_token]:
        raise ApiError(400, 'the question is empty: write it before the ##', param=param)
    if len(ids) > max_prompt_tokens:
        raise ApiError(400, f'the prompt is {len(ids)} tokens, more than the {max_prompt_tokens} allowed', param=param)
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

def take_slot():
    """A generation slot, or a 503: past max_generations each new one would only slow the others down."""
    with active_lock:
        if active[0] >= max_generations:
            raise ApiError(503, f'busy: {max_generations} generations are running; retry in a few seconds', 'server_busy')
        active[0] += 1


def free_slot():
    with active_lock:
        active[0] -= 1


def run(loaded, ids, params, tally, stops, environ):
    """Text pieces; tally counts the ids as they come. A client that has left stops it before the next token."""
    model, tok = loaded
    gen = generate_ids(model, tok, ids, **params)
    gone = environ.get('waitress.client_disconnected', lambda: False)  # waitress notices it on its event loop

    def steps():
        while not gone():
            if STEP_LOCK is None:
                i = next(gen, None)
            else:
                with STEP_LOCK:  # one step (one forward) at a time, across all requests
                    i = next(gen, None)
            if i is None:
                return
            tally['completion_tokens'] += 1
            yield i
    pieces = text_pieces(tok, steps())
    try:  # empty pieces are dropped: an SSE event or a chunk with no text means nothing to a client
        yield from (p for p in (until_stop(pieces, stops, tally) if stops else pieces) if p)
    finally:  # also reached when the client went away and the server closed us
        gen.close()


def new_tally(ids):  # what run() counts, for usage and finish_reason
    return {'prompt_tokens': len(ids), 'completion_tokens': 0, 'stopped': False}


def finish(tally, params):
    """(usage, finish_reason) once generation has ended."""
    p, c = tally['prompt_tokens'], tally['completion_tokens']
    reason = 'length' if c >= params['max_new_tokens'] and not tally['stopped'] else 'stop'
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


def streamed(body, mimetype):
    """A streamed response holding a generation slot until the server closes it (finished, or the client left)."""
    response = Response(body, mimetype=mimetype, headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})
    response.call_on_close(free_slot)
    return response


def openai_answer(body, name, model, ids, params, stops, chat):
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

    take_slot()
    pieces = run(model, ids, params, tally, stops, request.environ)
    if not stream:
        try:
            text = ''.join(pieces)
        finally:
            pieces.close()
            free_slot()
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
    return streamed(sse(events()), 'text/event-stream')


# ----------------------------------------------------------------------------- routes

@app.get('/health')
def health():
    return jsonify({'status': 'ok', 'models': list(MODELS), 'active': active[0]})


@app.get('/v1/models')
def list_models():
    return jsonify({'object': 'list', 'data': [{'id': n, 'object': 'model', 'created': 0, 'owned_by': 'minigpt'}
                                               for n in MODELS]})


@app.post('/generate')
def generate():
    body = json_body()
    text = field(body, 'prompt', (str,))
    if text is None:
        raise ApiError(400, '"prompt" is required', param='prompt')
    name, model, params, stops = sampling(body, 'max_new_tokens')
    ids = prompt_ids(model, text)
    take_slot()
    return streamed(utf8(run(model, ids, params, new_tally(ids), stops, request.environ)), 'text/plain')


@app.post('/v1/completions')
def completions():
    body = json_body()
    text = body.get('prompt')
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    if not isinstance(text, str):
        raise ApiError(400, '"prompt" must be a string (or a list of one string)', param='prompt')
    name, model, params, stops = sampling(body, 'max_tokens')
    return openai_answer(body, name, model, prompt_ids(model, text), params, stops, chat=False)


@app.post('/v1/chat/completions')
def chat_completions():
    body = json_body()
    question = chat_question(body)
    tokens_key = 'max_completion_tokens' if body.get('max_completion_tokens') is not None else 'max_tokens'
    name, model, params, stops = sampling(body, tokens_key)
    return openai_answer(body, name, model, prompt_ids(model, question, chat=True), params, stops, chat=True)


def load_models(spec, device):
    pairs = [p.strip() for p in spec.split(',') if p.strip()]
    loaded = {}
    for pair in pairs:
        name, sep, folder = pair.partition('=')
        if not sep or not name or not folder:
            sys.exit(f'error: --models entry "{pair}" must look like name=checkpoint_folder')
        if name in loaded:
            sys.exit(f'error: --models names "{name}" twice')
        if spec == DEFAULT_MODELS and not os.path.exists(os.path.join(folder, 'ckpt.pt')):
            print(f'skipping {name}: no {folder}/ckpt.pt', file=sys.stderr)
            continue
        try:
            loaded[name] = load_checkpoint(folder, device)[:2]
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f'error: model {name}: {e}')
        print(f'loaded {name} from {folder} ({loaded[name][0].num_params() / 1e6:.2f}M parameters) on {device}')
    if not loaded:
        sys.exit(f'error: no checkpoint found for --models={spec}; train one, or pass --models=name=folder')
    return loaded


def check_settings():
    """Settings that would fail later, or silently differ from what was asked, stop here with a message."""
    if not 1 <= port <= 65535:
        sys.exit(f'error: --port={port}: a TCP port is between 1 and 65535')
    if api_key and not re.fullmatch(r'[!-~]+', api_key):  # what an HTTP client can put in a header
        sys.exit('error: the API key (--api_key or MINIGPT_API_KEY) must be printable ASCII without spaces: '
                 'no HTTP client could send it')
    if min(max_generations, max_connections, read_timeout) < 1:
        sys.exit('error: --max_generations, --max_connections and --read_timeout must be at least 1')


def lan_address():
    """The address others reach this machine at: the one its default route leaves from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(('192.0.2.1', 9))  # TEST-NET-1: connect() on UDP only picks a route
            return s.getsockname()[0]
        except OSError:  # no network at all
            return "<this machine's address>"


if __name__ == '__main__':
    import torch
    check_settings()
    if threads:
        torch.set_num_threads(threads)
    MODELS.update(load_models(models, pick_device(device)))
    try:  # spare threads answer /health, /v1/models and the 503s while every generation slot is taken
        # waitress's limit counts its own listening socket and wake-up pipe too: 2 more than the clients
        server = create_server(app, host=host, port=port, threads=max_generations + 4, connection_limit=max_connections + 2,
                               channel_timeout=read_timeout, cleanup_interval=1, channel_request_lookahead=1,
                               max_request_body_size=4 * max_body_bytes, ident='minigpt-zh')
    except OSError as e:
        sys.exit(f'error: cannot listen on {host}:{port}: {e}')
    print(f'serving {", ".join(MODELS)} on http://{host}:{port} (API key {"on" if api_key else "off"})', flush=True)
    if host in ('0.0.0.0', '::', '') and not api_key:
        print(f'warning: listening on all interfaces without an API key: anyone on your network can use it at '
              f'http://{lan_address()}:{port}. Keep it to this machine with --host=127.0.0.1, or require a key '
              f'with --api_key=... (or MINIGPT_API_KEY=...).', file=sys.stderr, flush=True)
    server.run()

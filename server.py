"""
Serves trained checkpoints over HTTP: the peers' streaming /generate and an OpenAI-compatible API.

    python server.py --models=sft=out/sft,pretrain=out/pretrain --port=5000
    python server.py --models=mine=out/sft --host=127.0.0.1 --api_key=secret   # or MINIGPT_API_KEY=secret

Routes (DESIGN.md §5); a request names a model with "model", the first one is the default:
    GET  /health                 {"status": "ok", "models": [...], "active": streams running now}
    POST /generate               {prompt, max_new_tokens, temperature, top_k, model?, seed?} -> plain text, streamed
    GET  /v1/models
    POST /v1/completions         {prompt, max_tokens, temperature, top_k, seed, stream, model}
    POST /v1/chat/completions    {messages, max_tokens, temperature, top_k, seed, stream, model}

    curl -N localhost:5000/generate -d '{"prompt": "中国的首都是哪里？##", "max_new_tokens": 60, "temperature": 0}'

A prompt ending in ## is a question and a chat's last user message always is: the model sees
encode(question) + [A_TOKEN] and only the answer comes back. Streams carry whole characters only.
top_p, stop and other OpenAI fields are accepted and ignored. Bad input gets a 4xx with
{"error": {"message", "type"}}; with an API key set, every route but /health wants
"Authorization: Bearer <key>".

Concurrency: a threaded server, one thread per request, each with its own KV cache and RNG. The
model steps of all requests take turns under one lock, one token at a time, so streams interleave
instead of fighting over the CPU's cores (tests/bench/bench_sample.py measures both ways). A client
that disconnects makes the next write fail; the server then closes the stream's generator, which
stops its generation.
"""
import hmac
import json
import math
import os
import sys
import threading
import time
import uuid
from contextlib import closing

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from engine import encode_prompt, generate_ids, text_pieces
from model import load_checkpoint, pick_device

DEFAULT_MODELS = 'sft=out/sft,pretrain=out/pretrain'
models = DEFAULT_MODELS  # name=checkpoint_folder,...; the first is the default (with this default, missing folders are skipped)
host = '0.0.0.0'  # all interfaces: peers call over the LAN; 127.0.0.1 keeps it local
port = 5000
device = 'auto'  # cpu, cuda, mps, or auto
api_key = ''  # require "Authorization: Bearer <api_key>"; empty = use env MINIGPT_API_KEY, or no key
max_new_tokens = 1024  # cap on tokens a request may ask for
max_prompt_tokens = 2048  # cap on prompt length in tokens
max_body_bytes = 256 * 1024  # larger request bodies get a 413
serialize = True  # model steps take turns under one lock (False: requests run their steps concurrently)
threads = 0  # torch CPU threads; 0 = torch's default (one per core)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
api_key = api_key or os.environ.get('MINIGPT_API_KEY', '')

DEFAULTS = dict(max_new_tokens=min(225, max_new_tokens), temperature=0.1, top_k=20)  # the seed's sampling settings
app = Flask(__name__)
app.config['MAX_CONTENT_LENGTH'] = max_body_bytes
app.json.ensure_ascii = False  # Chinese stays readable in curl
MODELS = {}  # name -> model, filled at start
STEP_LOCK = threading.Lock() if serialize else None
active = [0]  # streams generating right now, for /health and the disconnect test
active_lock = threading.Lock()


class ApiError(Exception):
    def __init__(self, status, message, kind='invalid_request_error'):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(status, message, kind):
    return jsonify({'error': {'message': message, 'type': kind}}), status


@app.errorhandler(ApiError)
def on_api_error(e):
    return error_body(e.status, e.message, e.kind)


@app.errorhandler(HTTPException)  # unknown route, wrong method, body too large
def on_http_error(e):
    kinds = {404: 'not_found_error', 405: 'method_not_allowed', 413: 'request_too_large'}
    return error_body(e.code, f'{request.method} {request.path}: {e.description}', kinds.get(e.code, 'invalid_request_error'))


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
    body = request.get_json(force=True, silent=True)  # force: curl -d sends a form content type
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object')
    return body


def field(body, name, kinds, default=None):
    """body[name] checked against kinds (bools are not numbers here); default if absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if int in kinds and float not in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)  # 20.0 from a JavaScript slider means 20
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = ' or '.join(k.__name__ for k in kinds)
        raise ApiError(400, f'"{name}" must be {names}, got {json.dumps(value, ensure_ascii=False)[:50]}')
    return value


def sampling(body, tokens_key):
    """(model name, model, generate_ids kwargs) from a request body, every value checked."""
    name = field(body, 'model', (str,), next(iter(MODELS)))
    if name not in MODELS:
        raise ApiError(404, f'unknown model "{name}"; this server has: {", ".join(MODELS)}', 'model_not_found')
    n = field(body, tokens_key, (int,), DEFAULTS['max_new_tokens'])
    if not 1 <= n <= max_new_tokens:
        raise ApiError(400, f'"{tokens_key}" must be between 1 and {max_new_tokens}, got {n}')
    temperature = field(body, 'temperature', (int, float), DEFAULTS['temperature'])
    if not math.isfinite(temperature) or temperature < 0:
        raise ApiError(400, f'"temperature" must be >= 0 (0 = greedy), got {temperature}')
    top_k = field(body, 'top_k', (int,), DEFAULTS['top_k'])
    if top_k < 1:
        raise ApiError(400, f'"top_k" must be >= 1, got {top_k}')
    seed = field(body, 'seed', (int,))
    if seed is not None and not 0 <= seed < 2 ** 63:
        raise ApiError(400, f'"seed" must be between 0 and 2**63-1, got {seed}')
    return name, MODELS[name], dict(max_new_tokens=n, temperature=float(temperature), top_k=top_k, seed=seed)


def prompt_ids(text, chat=False):
    if not text.strip():
        raise ApiError(400, 'the prompt is empty')
    ids = encode_prompt(text, chat=chat)
    if len(ids) > max_prompt_tokens:
        raise ApiError(400, f'the prompt is {len(ids)} tokens, more than the {max_prompt_tokens} allowed')
    return ids


def chat_question(body):
    messages = body.get('messages')
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, '"messages" must be a non-empty list of {"role", "content"} objects')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get('role'), str):
            raise ApiError(400, f'messages[{i}] must be an object with a string "role"')
        content = m.get('content')
        if isinstance(content, list):  # the newer form: a list of {"type": "text", "text": ...} parts
            content = ''.join(p.get('text', '') for p in content if isinstance(p, dict) and isinstance(p.get('text'), str))
        if not isinstance(content, str):
            raise ApiError(400, f'messages[{i}].content must be a string')
        m['content'] = content
    users = [m['content'] for m in messages if m['role'] == 'user']
    if not users:
        raise ApiError(400, '"messages" holds no user message to answer')
    return users[-1]  # the model was fine-tuned on single questions: the last one is what it answers


# ----------------------------------------------------------------------------- generation

def run(model, ids, params, usage):
    """Text pieces; usage['completion_tokens'] counts the ids as they come."""
    gen = generate_ids(model, ids, **params)

    def steps():
        while True:
            if STEP_LOCK is None:
                i = next(gen, None)
            else:
                with STEP_LOCK:  # one step (one forward) at a time, across all requests
                    i = next(gen, None)
            if i is None:
                return
            usage['completion_tokens'] += 1
            yield i
    with active_lock:
        active[0] += 1
    try:
        yield from text_pieces(steps())
    finally:  # also reached when the client went away and the server closed us
        gen.close()
        with active_lock:
            active[0] -= 1


def new_usage(ids):
    return {'prompt_tokens': len(ids), 'completion_tokens': 0, 'total_tokens': 0}


def finish(usage, params):
    usage['total_tokens'] = usage['prompt_tokens'] + usage['completion_tokens']
    return 'length' if usage['completion_tokens'] >= params['max_new_tokens'] else 'stop'


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
    return Response(body, mimetype=mimetype, headers={'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no'})


def openai_answer(body, name, model, ids, params, chat):
    stream = field(body, 'stream', (bool,), False)
    options = field(body, 'stream_options', (dict,), {})
    usage = new_usage(ids)
    pieces = run(model, ids, params, usage)
    kind = ('chat.completion.chunk' if stream else 'chat.completion') if chat else 'text_completion'
    head = {'id': f'{"chatcmpl" if chat else "cmpl"}-{uuid.uuid4().hex}', 'object': kind,
            'created': int(time.time()), 'model': name}

    def choice(text, reason):
        if not chat:
            return {'index': 0, 'text': text, 'logprobs': None, 'finish_reason': reason}
        if not stream:
            return {'index': 0, 'message': {'role': 'assistant', 'content': text}, 'finish_reason': reason}
        return {'index': 0, 'delta': {'content': text} if text else {}, 'finish_reason': reason}

    if not stream:
        text = ''.join(pieces)
        return jsonify(dict(head, choices=[choice(text, finish(usage, params))], usage=usage))

    def events():
        with closing(pieces):
            if chat:
                yield dict(head, choices=[{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}])
            for piece in pieces:
                yield dict(head, choices=[choice(piece, None)])
            yield dict(head, choices=[choice('', finish(usage, params))])
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
        raise ApiError(400, '"prompt" is required')
    name, model, params = sampling(body, 'max_new_tokens')
    ids = prompt_ids(text)
    pieces = run(model, ids, params, new_usage(ids))
    return streamed(utf8(pieces), 'text/plain')


@app.post('/v1/completions')
def completions():
    body = json_body()
    text = body.get('prompt')
    if isinstance(text, list) and len(text) == 1:
        text = text[0]
    if not isinstance(text, str):
        raise ApiError(400, '"prompt" must be a string (or a list of one string)')
    name, model, params = sampling(body, 'max_tokens')
    return openai_answer(body, name, model, prompt_ids(text), params, chat=False)


@app.post('/v1/chat/completions')
def chat_completions():
    body = json_body()
    question = chat_question(body)
    tokens_key = 'max_completion_tokens' if body.get('max_completion_tokens') is not None else 'max_tokens'
    name, model, params = sampling(body, tokens_key)
    return openai_answer(body, name, model, prompt_ids(question, chat=True), params, chat=True)


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
            loaded[name], _ = load_checkpoint(folder, device)
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f'error: model {name}: {e}')
        print(f'loaded {name} from {folder} ({loaded[name].num_params() / 1e6:.2f}M parameters) on {device}')
    if not loaded:
        sys.exit(f'error: no checkpoint found for --models={spec}; train one, or pass --models=name=folder')
    return loaded


if __name__ == '__main__':
    import torch
    from werkzeug.serving import make_server
    if threads:
        torch.set_num_threads(threads)
    MODELS.update(load_models(models, pick_device(device)))
    server = make_server(host, port, app, threaded=True)
    print(f'serving {", ".join(MODELS)} on http://{host}:{port} (API key {"on" if api_key else "off"})', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass

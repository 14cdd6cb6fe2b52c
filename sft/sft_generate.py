"""
Question/answer pairs for SFT, made from the pretraining articles.

    python sft/sft_generate.py --backend=rules --input_dir=data/people_daily          # offline, no model
    python sft/sft_generate.py --backend=rules --input_dir=data/people_daily --limit=200 --next_sentence=True
    OPENAI_API_KEY=... python sft/sft_generate.py --input_dir=data/people_daily \\
        --base_url=http://localhost:1234/v1 --model=qwen2-7b-instruct --concurrency=8
    (Windows: `set OPENAI_API_KEY=...`, then the same command on one line)

Output: one {"question", "answer", "id"} per line in --output, id = the article's index from
corpus.iter_articles (so rerun on the same --input_dir). An article's lines are appended in one write once
all its pairs are accepted, so a rerun skips the ids already there; a torn last line (a run killed mid-write)
is dropped with its article, which is made again. An article that fails every attempt gets one record in
--rejects, with the reason and the last reply; a rerun skips it, unless the reason is "http" (the server
failed, not the article): then it is tried again and its old record removed. Each article ends up once, in one file.

openai backend: any OpenAI-compatible chat endpoint; the key is read from the environment variable named by
--api_key_env (never a flag, never printed). --timeout bounds each whole request (connecting, sending, the
reply's last byte), so a server that drips its reply a byte at a time times out too. Every way a request can
fail (no connection, a timeout, an HTTP error, a 200 whose body is not JSON, is HTML or a list, has no
choices[0].message, is not UTF-8) is a failed attempt: retried with backoff, then an "http" reject; the run
goes on. Two things stop it with exit 1, marking no article: HTTP 401/403/404 (the key, --model or --base_url
is wrong), and --max_down articles in a row whose every request got no answer at all (the server is down).
Replies are parsed leniently (code fences, prose, a JSON array, one object per line, full-width quotes) and
checked strictly: 3-6 pairs, no empty or over-long field, no control or U+FFFD character, no repeated question,
no pronoun in the question, every answer grounded in the article: after NFKC and dropping spaces and
punctuation, it occurs there, or 80% of its characters occur there in order and it shares a run of
min(8, half its length) characters with it.

rules backend: deterministic and offline, made for a tiny model to memorise: sft/rules.py finds the facts an
article states outright (X是什么？, X位于哪里？, X成立于何时？ ...) and copies each answer from the text (see what
it finds in one text: `python sft/rules.py "长江是中国第一长河。"`). Its pairs pass the same checks as an LLM's,
a question is asked once in the whole output, and --next_sentence=True adds “<sentence>”的下一句是什么？ pairs
(recall, not facts). An article with at least one pair (not --min_pairs: rules cannot invent more) is accepted.
An encyclopedia entry ("<title>\\n\\n<body>") is first asked about its title (王家坝是什么？).

Another script asks any OpenAI-compatible server one question with ask_chat (see its docstring):

    from sft.sft_generate import ChatError, ask_chat
"""
import http.client
import io
import json
import os
import re
import sys
import threading
import time
import unicodedata
import urllib.parse
from collections import namedtuple
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from difflib import SequenceMatcher
from itertools import takewhile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from corpus import clean_article, find_jsonl, iter_articles  # noqa: E402
from sft.rules import _PRONOUN, entry_title, rules_candidates  # noqa: E402

# -----------------------------------------------------------------------------
input_dir = 'data/people_daily'  # folder walked recursively for *.jsonl (as data/prepare.py)
output = 'sft/sft_saves.jsonl'  # accepted pairs, appended
rejects = 'sft/sft_rejects.jsonl'  # articles that failed every attempt, with reason and raw reply
backend = 'openai'  # 'openai' (any OpenAI-compatible chat endpoint) or 'rules' (offline)
base_url = 'http://localhost:1234/v1'  # LM Studio's default; vLLM/Ollama/OpenAI work the same
model = 'qwen2-7b-instruct'
api_key_env = 'OPENAI_API_KEY'  # name of the environment variable holding the key
temperature = 0.45  # low: pairs copied from the article, with a little variety between retries
timeout = 120.0  # seconds per whole request: a 7B model on a laptop answers within a minute; twice that is a hang
max_attempts = 4  # requests per article before it goes to the rejects file
backoff = 1.0  # seconds before the second attempt, doubling after each failure (1+2+4 s in all)
concurrency = 4  # requests in flight
max_down = 3  # this many articles in a row whose every request got no answer at all: the server is down, stop
limit = 0  # only articles with id < limit (0: all); a rerun with the same limit resumes the same set
next_sentence = False  # rules: also ask for the sentence after a sentence (recall, not facts)
min_pairs = 3
max_pairs = 6
max_question_chars = 40
max_answer_chars = 150
max_article_chars = 2000  # longer articles are cut in the prompt (grounding still checks the whole text)
# -----------------------------------------------------------------------------

SYSTEM = '你是一个严谨的中文阅读理解出题助手，只依据给定的文章出题，并严格按要求的格式输出。'
PROMPT = """请仔细阅读下面的文章，就其中最重要的信息提出{lo}到{hi}个问题，并给出答案。要求：
1. 每个问题离开文章也能看懂：主语必须是明确的人名、地名、机构、事件或事物，不能用"他""她""它""这""该""此""本文""文中"等代词或指代。
2. 每个答案都必须是文章里原样出现的一段文字，直接摘抄，不要改写、总结或补充文章以外的内容。
3. 问题互不相同。问题不超过{max_q}个字，答案不超过{max_a}个字。
4. 每行输出一个JSON对象，格式固定为 {{"question": "问题", "answer": "答案"}}，不要编号，不要解释，不要输出其他任何文字。
{hint}
文章：
{article}"""
RETRY_HINT = '注意：上一次的输出不合格（{}），请严格按以上要求重新生成。\n'

_OPEN = re.compile(r'[\[{]')
_Q = r'["“”＂]?(?:question|问题)["“”＂]?\s*[:：]\s*["“”＂](.*?)["“”＂]'
_A = r'["“”＂]?(?:answer|答案)["“”＂]?\s*[:：]\s*["“”＂](.*?)["“”＂]'
_LOOSE = re.compile(r'[{｛]\s*' + _Q + r'\s*[,，]\s*' + _A + r'\s*[}｝]')  # full-width quotes and colons
_BAD_CHARS = re.compile('[\x00-\x1f\x7f-\x9f\ufffd\ud800-\udfff]')
_KEYS = {'question': 'question', '问题': 'question', 'answer': 'answer', '答案': 'answer'}
# what every accepted set of pairs keeps to; main() makes it from --min_pairs ... --max_answer_chars
Limits = namedtuple('Limits', 'min_pairs max_pairs max_question_chars max_answer_chars')


def parse_pairs(reply):
    """Every {"question", "answer"} object in an LLM reply, wherever and however it was written, in order."""
    found, decoder, i, rest = [], json.JSONDecoder(), 0, list(reply)
    while (m := _OPEN.search(reply, i)):
        try:
            value, i = decoder.raw_decode(reply, m.start())
        except (json.JSONDecodeError, RecursionError):  # RecursionError: [[[[… nested past Python's stack
            i = m.start() + 1  # not JSON from here: look inside it for objects
            continue
        rest[m.start():i] = ' ' * (i - m.start())  # what the loose pattern below must not see again
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                pair = {_KEYS[k]: v for k, v in item.items() if k in _KEYS}
                if len(pair) == 2:
                    found.append((m.start(), {k: str(v).strip() if isinstance(v, (str, int, float)) else ''
                                              for k, v in pair.items()}))
    for m in _LOOSE.finditer(''.join(rest)):  # full-width or mixed quotes: not JSON, still meant as pairs
        found.append((m.start(), {'question': m[1].strip(), 'answer': m[2].strip()}))
    return [{'question': p['question'], 'answer': p['answer']} for _, p in sorted(found, key=lambda f: f[0])]


def normalize(text):
    """Letters and digits only, NFKC, lower case: what grounding and repeat checks compare."""
    return ''.join(c for c in unicodedata.normalize('NFKC', text).lower() if c.isalnum())


def grounded(answer, article_norm):
    a = normalize(answer)
    if not a:
        return False
    if a in article_norm:
        return True
    hits, pos = 0, 0
    for c in a:  # characters found in the article in the answer's order (greedy)
        j = article_norm.find(c, pos)
        if j >= 0:
            hits, pos = hits + 1, j + 1
    matcher = SequenceMatcher(None, a, article_norm, autojunk=False)
    run = matcher.find_longest_match(0, len(a), 0, len(article_norm)).size
    return hits >= 0.8 * len(a) and run >= min(8, len(a) / 2)


def pair_problem(pair, article_norm, limits):
    """(reason, detail) for the first thing wrong with one pair, or None."""
    for field, most in (('question', limits.max_question_chars), ('answer', limits.max_answer_chars)):
        text = pair[field]
        if not text:
            return 'empty', f'empty {field}'
        if len(text) > most:
            return 'too_long', f'{field} of {len(text)} characters (at most {most}): {text[:60]}'
        if _BAD_CHARS.search(text):
            return 'bad_chars', f'control or replacement character in {field}: {text[:60]!r}'
    if _PRONOUN.search(pair['question']):
        return 'pronoun', f'question needs the article to be understood: {pair["question"]}'
    if not grounded(pair['answer'], article_norm):
        return 'ungrounded', f'answer not found in the article: {pair["answer"][:60]}'
    return None


def check_pairs(pairs, article_norm, limits, least=None):
    """(reason, detail) if this set of pairs cannot be accepted for the article, else None. least: limits' own."""
    least = limits.min_pairs if least is None else least
    if not pairs:
        return 'no_pairs', 'no {"question": ..., "answer": ...} object in the reply'
    if not least <= len(pairs) <= limits.max_pairs:
        return 'count', f'{len(pairs)} pairs, expected {least} to {limits.max_pairs}'
    seen = set()
    for pair in pairs:
        problem = pair_problem(pair, article_norm, limits)
        if problem:
            return problem
        key = normalize(pair['question'])
        if key in seen:
            return 'repeat', f'question asked twice: {pair["question"]}'
        seen.add(key)
    return None


# ----------------------------------------------------------------------------- rules backend (sft/rules.py)

def rules_pairs(text, asked, limits, title='', next_sentence=False):
    """
    Up to limits.max_pairs valid candidates (the same checks as an LLM's pairs), first come first kept. asked
    holds the questions given so far, in any article: a question has one answer in the whole output. title: an
    encyclopedia entry's (the text is its body), whose opening sentence defines it.
    """
    article_norm, pairs = normalize(text), []
    for pair in rules_candidates(text, next_sentence, title):
        key = normalize(pair['question'])
        if key not in asked and pair['answer'] in text and not pair_problem(pair, article_norm, limits):
            asked.add(key)
            pairs.append(pair)
            if len(pairs) == limits.max_pairs:
                break
    return pairs


# ----------------------------------------------------------------------------- an OpenAI-compatible chat endpoint

class ChatError(Exception):
    """
    A chat request without a usable reply. kind: 'down' (no answer: refused connection, reset, the timeout),
    'status' (an HTTP error), 'reply' (a 2xx that is no chat completion), 'refused' (HTTP 401/403/404: the key,
    the model or the URL is wrong, whatever is asked). body: what the server sent, if anything (2,000 characters).
    """
    def __init__(self, kind, detail, body=''):
        super().__init__(detail)
        self.kind, self.body = kind, body


class _DeadlineSocket:
    """
    A connected socket whose every read and write ends by one deadline. A socket's own timeout restarts at each
    byte received, so a server dripping a byte every half second would hold a request as long as it liked.
    """
    def __init__(self, sock, deadline):
        self.sock, self.deadline = sock, deadline

    def _arm(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError('deadline passed')
        self.sock.settimeout(left)

    def sendall(self, data):
        self._arm()
        self.sock.sendall(data)

    def recv_into(self, buffer):
        self._arm()
        return self.sock.recv_into(buffer)

    def makefile(self, mode):  # what http.client reads the status line, headers and body through
        return io.BufferedReader(_Reader(self))

    def close(self):  # http.client closes its socket before reading an HTTP/1.0 body: post_json closes it after
        pass


class _Reader(io.RawIOBase):
    def __init__(self, sock):
        super().__init__()
        self.sock = sock

    def readable(self):
        return True

    def readinto(self, buffer):
        return self.sock.recv_into(buffer)


def post_json(url, payload, headers, timeout):
    """(HTTP status, body bytes) of one POST of payload as JSON; all of it takes at most timeout seconds."""
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ValueError(f'{url!r} is not an http:// or https:// URL')
    connection = (http.client.HTTPSConnection if parts.scheme == 'https' else http.client.HTTPConnection)(
        parts.hostname, parts.port, timeout=timeout)
    sock = None
    try:
        connection.connect()
        sock = connection.sock
        connection.sock = _DeadlineSocket(sock, deadline)
        connection.request('POST', (parts.path or '/') + (f'?{parts.query}' if parts.query else ''),
                           json.dumps(payload, ensure_ascii=False).encode('utf-8'),
                           {'Content-Type': 'application/json', 'Accept': 'application/json', **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
        if sock is not None:
            sock.close()


def chat_text(body):
    """The assistant's text in a chat-completion body (bytes), or ValueError saying what the body is instead."""
    try:
        data = json.loads(body.decode('utf-8'))
    except UnicodeDecodeError as e:
        raise ValueError(f'reply is not UTF-8 ({e.reason} at byte {e.start})')
    except (ValueError, RecursionError):
        raise ValueError(f'reply is not JSON: {body[:60].decode("utf-8", "replace")!r}')
    if not isinstance(data, dict):
        raise ValueError(f'reply is a JSON {type(data).__name__}, not a chat completion object')
    choice = (data.get('choices') or [None])[0] if isinstance(data.get('choices'), list) else None
    message = choice.get('message') if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get('content') or '', str):
        raise ValueError(f'reply has no choices[0].message with text: {json.dumps(data, ensure_ascii=False)[:100]}')
    return message.get('content') or ''


def ask_chat(messages, base_url, model, api_key_env='OPENAI_API_KEY', timeout=120.0, temperature=0.45, attempts=1,
             backoff=1.0, stop=None):
    """
    The reply text of one chat completion from an OpenAI-compatible server (LM Studio, vLLM, Ollama, OpenAI):

        ask_chat(messages, base_url, model, api_key_env='OPENAI_API_KEY', timeout=120.0, temperature=0.45,
                 attempts=1, backoff=1.0, stop=None) -> str

    messages: the user's prompt (a str) or OpenAI's list of {"role": ..., "content": ...}. base_url: up to /v1
    (http://localhost:1234/v1); the request goes to <base_url>/chat/completions. api_key_env: the name of the
    environment variable holding the key (a placeholder is sent when it is unset: local servers take any key).
    timeout: seconds for each whole request, from connecting to the reply's last byte. attempts: requests in
    all; a failed one is tried again after backoff seconds, doubling each time, except a 'refused' one. stop:
    a threading.Event that, once set, ends the waiting between attempts (the last failure is raised).
    Raises ChatError (see its kinds) when no attempt gave a reply, and ValueError for a base_url that is no
    http(s) URL. A caller that sees kind 'down' on several questions in a row should stop: the server is down.
    """
    if attempts < 1:
        raise ValueError(f'attempts={attempts}: at least 1')
    if isinstance(messages, str):
        messages = [{'role': 'user', 'content': messages}]
    url = base_url.rstrip('/') + '/chat/completions'
    headers = {'Authorization': f"Bearer {os.environ.get(api_key_env) or 'not-set'}"}
    for attempt in range(attempts):
        if attempt and stop is not None and stop.wait(backoff * 2 ** (attempt - 1)):
            break
        if attempt and stop is None:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            status, body = post_json(url, {'model': model, 'temperature': temperature, 'messages': messages},
                                     headers, timeout)
        except TimeoutError:
            failure = ChatError('down', f'no complete reply within {timeout:g}s')
        except (OSError, http.client.HTTPException) as e:  # refused, reset, closed without an answer, TLS
            failure = ChatError('down', f'connection failed: {type(e).__name__}: {e}')
        else:
            text = body[:2000].decode('utf-8', 'replace')
            if status in (401, 403, 404):
                raise ChatError('refused', f'HTTP {status}', text)
            if not 200 <= status < 300:
                failure = ChatError('status', f'HTTP {status}', text)
            else:
                try:
                    return chat_text(body)
                except ValueError as e:
                    failure = ChatError('reply', str(e), text)
    raise failure


def article_messages(text, hint, limits, max_article_chars):
    """The chat messages that ask for an article's pairs (hint: why the last reply was not accepted, or '')."""
    prompt = PROMPT.format(lo=limits.min_pairs, hi=limits.max_pairs, max_q=limits.max_question_chars,
                           max_a=limits.max_answer_chars, hint=hint, article=text[:max_article_chars])
    return [{'role': 'system', 'content': SYSTEM}, {'role': 'user', 'content': prompt}]


# ----------------------------------------------------------------------------- work per article

def make_pairs(ask, article, limits, attempts, backoff, stopping, asked=None, next_sentence=False):
    """
    (pairs, None) once accepted, (None, reject record) after `attempts` tries, or (None, None) when stopping
    (a threading.Event) is set. ask(text, hint) -> reply text or ChatError; ask=None is the rules backend
    (asked: its questions so far; next_sentence: its flag). backoff: seconds before the second try, doubling.
    """
    article_id, path, line_no, text, title = article
    reject = {'id': article_id, 'source': f'{path}:{line_no}', 'reason': 'empty_article',
              'detail': 'nothing left after cleaning', 'attempts': 0, 'reply': ''}
    if not text:
        return None, reject
    article_norm, hint = normalize(text), ''
    for attempt in range(1 if ask is None else attempts):  # the rules never change their mind
        if attempt and stopping.wait(backoff * 2 ** (attempt - 1)) or stopping.is_set():
            return None, None
        reject['attempts'], kind = attempt + 1, None
        if ask is None:
            pairs = rules_pairs(text, asked, limits, title, next_sentence)
            reply = json.dumps(pairs, ensure_ascii=False)
        else:
            try:
                reply = ask(text, hint)
            except ChatError as e:
                why, reply, kind = ('http', str(e)), e.body, e.kind
                if kind == 'refused':
                    break
                continue
            pairs = parse_pairs(reply)
        # --min_pairs keeps an LLM from stopping early; the rules cannot invent more than the text holds
        why = check_pairs(pairs, article_norm, limits, least=None if ask else 1)
        if why is None:
            return pairs, None
        hint = RETRY_HINT.format(why[1])
    reject.update(reason=why[0], detail=why[1], reply=reply)
    return None, dict(reject, kind=kind) if kind else reject

# ----------------------------------------------------------------------------- output files

def repair_tail(path):
    """
    Drops a torn last line (a run killed mid-write) and the complete lines before it that share its article
    id, so that article is made again. A bad line elsewhere is a ValueError: the file is someone's data.
    Returns the parsed records that remain.
    """
    if not os.path.exists(path):
        return []
    with open(path, 'rb') as f:
        data = f.read()
    lines = data.split(b'\n')
    records, torn = [], lines.pop() != b''  # a complete file ends with a newline
    for line_no, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode('utf-8'))
            assert isinstance(record, dict) and isinstance(record.get('id'), int)
        except (ValueError, AssertionError):
            if line_no < len(lines):
                raise ValueError(f"{path}:{line_no}: not a JSON object with an integer 'id'; fix or remove the line")
            torn, lines = True, lines[:-1]  # a final line that does not parse counts as torn too
            break
        records.append(record)
    if torn:
        keep = len(lines)
        while keep and records[keep - 1]['id'] == records[-1]['id']:
            keep -= 1
        dropped = '' if keep == len(records) else \
            f" and the {len(records) - keep} lines of article {records[-1]['id']}"
        print(f"{path}:{len(lines) + 1}: torn last line dropped{dropped}; redoing it", file=sys.stderr)
        records = records[:keep]
        with open(path, 'r+b') as f:
            f.truncate(sum(len(line) + 1 for line in lines[:keep]))
    return records


def append_lines(fd, records):
    """One write per article on an O_APPEND descriptor: its lines land together or, if killed, torn at the end."""
    data = ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records).encode('utf-8')
    while data:
        data = data[os.write(fd, data):]


def main():
    from tqdm import tqdm
    if backend not in ('openai', 'rules'):
        sys.exit(f"error: --backend={backend!r}: expected 'openai' or 'rules'")
    if not 1 <= min_pairs <= max_pairs:
        sys.exit(f"error: need 1 <= --min_pairs ({min_pairs}) <= --max_pairs ({max_pairs})")
    for name, value in (('max_attempts', max_attempts), ('concurrency', concurrency), ('max_down', max_down),
                        ('timeout', timeout)):
        if value <= 0:
            sys.exit(f"error: --{name}={value}: must be above 0")
    if not os.path.isdir(input_dir) or not find_jsonl(input_dir):
        sys.exit(f"error: --input_dir={input_dir}: no such folder, or no *.jsonl files in it or below it")
    parts = urllib.parse.urlsplit(base_url)
    if backend == 'openai' and (parts.scheme not in ('http', 'https') or not parts.hostname):
        sys.exit(f"error: --base_url={base_url!r}: expected an http:// or https:// URL, like http://localhost:1234/v1")
    for path in (output, rejects):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        saved = repair_tail(output)
        # a rerun tries again the articles that failed for the server's sake (http), each replacing its earlier
        # record; those rejected for what the model (or the rules) made of them stay rejected
        earlier = repair_tail(rejects)
    except ValueError as e:
        sys.exit(f"error: {e}")
    done = {r['id'] for r in saved}
    kept = {r['id']: r for r in earlier if r['id'] not in done and r.get('reason') != 'http'}
    if len(kept) < len(earlier):
        with open(rejects + '.tmp', 'wb') as f:
            append_lines(f.fileno(), kept.values())
        os.replace(rejects + '.tmp', rejects)
    asked = {normalize(r.get('question', '')) for r in saved}  # the rules ask each question once in all
    limits = Limits(min_pairs, max_pairs, max_question_chars, max_answer_chars)
    stopping = threading.Event()  # set when the run ends early: workers then give up their article
    ask = None
    if backend == 'openai':
        if not os.environ.get(api_key_env):  # local servers (LM Studio, Ollama, vLLM) accept any key
            print(f"note: ${api_key_env} is not set; sending a placeholder key", file=sys.stderr)

        def ask(text, hint):
            return ask_chat(article_messages(text, hint, limits, max_article_chars), base_url, model, api_key_env,
                            timeout, temperature)
    articles = takewhile(lambda a: limit <= 0 or a[0] < limit, iter_articles(input_dir))
    todo = ((i, path, line_no, clean_article(text), entry_title(text)) for i, path, line_no, text in articles
            if i not in done and i not in kept)
    counts, reasons, held, stop = {'accepted': 0, 'rejected': 0, 'pairs': 0}, {}, [], []
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_BINARY', 0)  # Windows: no \r\n
    out_fd, rej_fd = os.open(output, flags, 0o644), os.open(rejects, flags, 0o644)
    pool = ThreadPoolExecutor(concurrency)
    bar = tqdm(total=limit or None, initial=len(done) + len(kept), unit='art', desc='articles', dynamic_ncols=True)
    t0 = time.time()

    def write_reject(reject):
        append_lines(rej_fd, [reject])
        counts['rejected'] += 1
        reasons[reject['reason']] = reasons.get(reject['reason'], 0) + 1

    def record(article_id, pairs, reject):  # only the main thread writes, so articles never interleave
        if reject and reject.get('kind') in ('down', 'refused'):
            # one article that reached no server says little about it; max_down in a row say the server is down
            held.append(reject)
            if reject['kind'] == 'refused':
                stop.append(f"{base_url} refused the request ({reject['detail']}); check --base_url, --model and "
                            f"${api_key_env}")
            elif len(held) >= max_down:
                stop.append(f"no answer from {base_url} for {len(held)} articles in a row, {max_attempts} tries each "
                            f"({reject['detail']}); is the LLM server running at --base_url?")
            stopping.set() if stop else None
            return
        if pairs is None and reject is None:  # given up because the run is stopping
            return
        if not stopping.is_set():  # the server answered again: those were passing failures, retried on a rerun
            for r in held:
                write_reject(r)
            held.clear()
        if pairs:
            append_lines(out_fd, [dict(p, id=article_id) for p in pairs])
            counts['accepted'] += 1
            counts['pairs'] += len(pairs)
        else:
            write_reject(reject)
        bar.update(1)
        bar.set_postfix(counts, refresh=False)

    def record_finished(futures, until=FIRST_COMPLETED, seconds=None):
        finished, rest = wait(futures, seconds, return_when=until)
        failed = [f for f in finished if f.exception()]  # a bug, not a failed request: raised once the rest is saved
        for future in sorted(set(finished) - set(failed), key=lambda f: f.article_id):
            record(future.article_id, *future.result())
        if failed:
            raise failed[0].exception()
        return rest

    pending = set()
    try:
        for article in todo:
            if stopping.is_set():
                break
            if ask is None:  # the rules are quick and in order: the output is the same bytes every run
                record(article[0], *make_pairs(None, article, limits, 1, backoff, stopping, asked, next_sentence))
                continue
            future = pool.submit(make_pairs, ask, article, limits, max_attempts, backoff, stopping)
            future.article_id = article[0]
            pending.add(future)
            if len(pending) >= 2 * concurrency:  # a bounded window: the corpus is streamed
                pending = record_finished(pending)
        while pending:
            pending = record_finished(pending)
        if held and not stop and not counts['accepted'] + counts['rejected']:
            stop.append(f"no answer from {base_url} for any of {len(held)} articles ({held[-1]['detail']}); "
                        f"is the LLM server running at --base_url?")
        for r in held if not stop else []:
            write_reject(r)
    except KeyboardInterrupt:
        stop.append('interrupted')
        stopping.set()
        record_finished(pending, ALL_COMPLETED, 0)  # what had finished is saved
    finally:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        os.close(out_fd)
        os.close(rej_fd)
    elapsed = time.time() - t0
    n = counts['accepted'] + counts['rejected']
    print(f"accepted {counts['accepted']} articles ({counts['pairs']} pairs), rejected {counts['rejected']} "
          f"{reasons}, skipped {len(done)} already done and {len(kept)} rejected before; {elapsed:.1f}s, "
          f"articles/s={n / max(elapsed, 1e-9):.2f}")
    print(f"pairs in {output}, rejects in {rejects}")
    if stop:
        sys.exit(f"error: {stop[0]}. Stopped early: finished articles are saved, none of the rest is marked "
                 f"rejected; rerun to go on.")


if __name__ == '__main__':
    exec(open(os.path.join(ROOT, 'configurator.py'), encoding='utf-8').read())
    main()

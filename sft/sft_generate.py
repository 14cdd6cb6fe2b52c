"""
Question/answer pairs for SFT, made from the pretraining articles (DESIGN.md §3).

    python sft/sft_generate.py --backend=rules --input_dir=data/people_daily          # offline, no model
    python sft/sft_generate.py --backend=rules --input_dir=data/people_daily --limit=200
    OPENAI_API_KEY=... python sft/sft_generate.py --input_dir=data/people_daily \\
        --base_url=http://localhost:1234/v1 --model=qwen2-7b-instruct --concurrency=8

Output: one {"question", "answer", "id"} per line in --output, id = the article's index from
data_utils.iter_articles (so rerun on the same --input_dir). An article's lines are appended in one write once all its pairs are accepted,
so a rerun skips the ids already there; a torn last line (the run was killed mid-write) is dropped with
the article it belongs to, which is then made again. Articles that fail every attempt go to --rejects
with the reason and the model's last reply; they are tried again on a rerun.

openai backend: any OpenAI-compatible chat endpoint; the key is read from the environment variable named
by --api_key_env (never a flag, never printed). Replies are parsed leniently (code fences, prose around
the objects, a JSON array, one object per line, full-width quotes) and checked strictly: 3-6 pairs, no
empty or over-long field, no control or U+FFFD characters, no repeated question, no pronoun in the
question, every answer grounded in the article. Grounded means: after NFKC and dropping spaces and
punctuation, the answer occurs in the article, or at least 80% of its characters occur there in order
and it shares a run of min(8, half its length) consecutive characters with the article.

rules backend: deterministic and offline. Questions come from the article's own sentences, and every
answer is a verbatim span of the cleaned article: the rest of an explicit "X是Y / X位于Y / X成立于Y"
clause ("X是什么？" -> Y), or the sentence that follows a short sentence. Pairs pass the same checks as
an LLM's; an article with at least one pair (not --min_pairs: rules cannot invent more) is accepted.
"""
import json
import os
import re
import sys
import time
import unicodedata
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from difflib import SequenceMatcher
from itertools import takewhile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data_utils import clean_article, find_jsonl, iter_articles  # noqa: E402

# -----------------------------------------------------------------------------
input_dir = 'data/people_daily'  # folder walked recursively for *.jsonl (as data/prepare.py)
output = 'sft/sft_saves.jsonl'  # accepted pairs, appended
rejects = 'sft/sft_rejects.jsonl'  # articles that failed every attempt, with reason and raw reply
backend = 'openai'  # 'openai' (any OpenAI-compatible chat endpoint) or 'rules' (offline)
base_url = 'http://localhost:1234/v1'  # LM Studio's default; vLLM/Ollama/OpenAI work the same
model = 'qwen2-7b-instruct'
api_key_env = 'OPENAI_API_KEY'  # name of the environment variable holding the key
temperature = 0.45  # the seed's
timeout = 120.0  # seconds per request
max_attempts = 4  # requests per article before it goes to the rejects file
backoff = 1.0  # seconds before the second attempt, doubling after each failure
concurrency = 4  # requests in flight
limit = 0  # only articles with id < limit (0: all); a rerun with the same limit resumes the same set
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
# a question must make sense without the article; 其他/应该/因此 are ordinary words, not references
_PRONOUN = re.compile(r'(?<!其)[他她它]|这|(?<![应活])该|(?<![因如彼])此|本文|文中|原文|文章|上文')
_KEYS = {'question': 'question', '问题': 'question', 'answer': 'answer', '答案': 'answer'}


def parse_pairs(reply):
    """Every {"question", "answer"} object in an LLM reply, wherever and however it was written, in order."""
    found, decoder, i, rest = [], json.JSONDecoder(), 0, list(reply)
    while (m := _OPEN.search(reply, i)):
        try:
            value, i = decoder.raw_decode(reply, m.start())
        except json.JSONDecodeError:
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


def pair_problem(pair, article_norm):
    """(reason, detail) for the first thing wrong with one pair, or None."""
    for field, most in (('question', max_question_chars), ('answer', max_answer_chars)):
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


def check_pairs(pairs, article_norm, least=None):
    """(reason, detail) if this set of pairs cannot be accepted for the article, else None."""
    least = min_pairs if least is None else least
    if not pairs:
        return 'no_pairs', 'no {"question": ..., "answer": ...} object in the reply'
    if not least <= len(pairs) <= max_pairs:
        return 'count', f'{len(pairs)} pairs, expected {least} to {max_pairs}'
    seen = set()
    for pair in pairs:
        problem = pair_problem(pair, article_norm)
        if problem:
            return problem
        key = normalize(pair['question'])
        if key in seen:
            return 'repeat', f'question asked twice: {pair["question"]}'
        seen.add(key)
    return None


# ----------------------------------------------------------------------------- rules backend

_SENTENCE = re.compile(r'[^。！？]+[。！？]+[”’」』）]*')  # a closing quote after 。 belongs to its sentence
_CLAUSE = re.compile(r'[^，；：,;:。！？]+')
_STATEMENT = re.compile(r'(?P<x>[\u4e00-\u9fffA-Za-z0-9·《》]{2,12}?)'
                        r'(?P<v>位于|被誉为|被称为|简称|成立于|始建于|建于|创建于|出生于|是)(?P<y>.{2,40})')
_X_BAD_START = tuple('这那此该其他她它本我你您但而并且因据是会想看要让使把被对从向为以当在有就还也都又才却') + (
    '所以', '如果', '虽然', '同时', '另外', '目前', '今年', '去年', '明年', '当时', '现在', '如今')
# an adverb before 是 (也是, 就是, 不再是), or a particle inside X (地, 了): X is a clause, not a subject
_X_BAD_END = set('不也都就还才又更却仍亦皆均已曾将会能可应竟而则便乃即正总只要或算像真倒硬凡于但若实确并仅的各至过管况再既然终经来此样')
_X_VERBISH = re.compile('[地得了着]|目前|已经|仍然|始终|一直|历来|可以说|既然|将要|求是')
_X_VAGUE = {'特别', '尤其', '主要', '关键', '重要', '问题', '原因', '结果', '目的', '重点', '核心', '原则', '前提', '基础',
            '根本', '首先', '其次', '再次', '最后', '同样', '可见', '显然', '事实', '实际', '真正', '恰恰', '原来', '无论',
            '不论', '毕竟', '究竟', '本质', '标志', '任务', '目标', '方向', '意义', '办法', '途径', '要求', '出路', '根源',
            '事实上', '实际上', '一方面', '另一方面', '总之', '当务之急', '第一', '第二', '第三', '第四', '多数', '少数',
            '大多数', '何况', '尽管', '不过', '只不过', '甚至', '至少', '其实', '确实'}  # need context
_Y_BAD_START = tuple('否非的地得不在件个种位名次') + ('因为', '由于', '为了', '那样', '这样', '一样', '怎样')
_ASKING = re.compile(r'[？?]|怎|什么|哪|谁|吗|呢|为何|如何|多少|几')  # a question is no answer
_TIME = re.compile(r'\d|年|月|日|世纪|时期|朝|代')


def _balanced(text):
    return all(text.count(a) == text.count(b) for a, b in ('《》', '“”', '（）', '()'))


def rules_candidates(text):
    """Pairs from the text itself, in reading order: statements first, then next-sentence questions."""
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    for sentence in sentences:
        for clause in _CLAUSE.findall(sentence):
            m = _STATEMENT.fullmatch(clause.strip())
            if not m:
                continue
            x, verb, y = m['x'], m['v'], m['y']
            if x.startswith(_X_BAD_START) or x[-1] in _X_BAD_END or x in _X_VAGUE or _X_VERBISH.search(x) \
                    or y.startswith(_Y_BAD_START) or y.endswith('的') or '是' in y or _ASKING.search(sentence) \
                    or not (_balanced(x) and _balanced(y)):
                continue
            if verb == '是':
                question = f'{x}是什么？'
            elif verb in ('位于', '被誉为', '被称为', '简称'):
                question = f'{x}{verb}{"哪里" if verb == "位于" else "什么"}？'
            else:
                question = f'{x}{verb}{"什么时候" if _TIME.search(y) else "哪里"}？'
            yield {'question': question, 'answer': y}
    for first, following in zip(sentences, sentences[1:]):
        if _balanced(first) and _balanced(following):
            yield {'question': f'“{first.rstrip("。！？")}”的下一句是什么？', 'answer': following}


def rules_pairs(text):
    """Up to max_pairs valid candidates (the same checks as an LLM's pairs), first come first kept."""
    article_norm, pairs, seen = normalize(text), [], set()
    for pair in rules_candidates(text):
        key = normalize(pair['question'])
        if key not in seen and pair['answer'] in text and not pair_problem(pair, article_norm):
            seen.add(key)
            pairs.append(pair)
            if len(pairs) == max_pairs:
                break
    return pairs


# ----------------------------------------------------------------------------- work per article

def make_pairs(ask, article):
    """(pairs, None) once accepted, or (None, reject record) after max_attempts; ask(text, hint) -> reply."""
    article_id, path, line_no, text = article
    if not text:
        return None, {'id': article_id, 'source': f'{path}:{line_no}', 'reason': 'empty_article',
                      'detail': 'nothing left after cleaning', 'attempts': 0, 'reply': ''}
    article_norm, hint, reply, why = normalize(text), '', '', None
    attempts = 1 if ask is None else max_attempts  # the rules never change their mind
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        if ask is None:
            pairs = rules_pairs(text)
            reply = json.dumps(pairs, ensure_ascii=False)
        else:
            try:
                reply = ask(text, hint)
            except ConnectionError as e:  # raised by ask() for HTTP errors, timeouts, refused connections
                why, reply = ('http', str(e)), getattr(e, 'body', '')
                continue
            pairs = parse_pairs(reply)
        # --min_pairs keeps an LLM from stopping early; the rules cannot invent more than the text holds
        why = check_pairs(pairs, article_norm, least=None if ask else 1)
        if why is None:
            return pairs, None
        hint = RETRY_HINT.format(why[1])
    return None, {'id': article_id, 'source': f'{path}:{line_no}', 'reason': why[0], 'detail': why[1],
                  'attempts': attempts, 'reply': reply}


def openai_asker():
    """ask(text, hint) -> reply text, through the official client; transient failures become ConnectionError."""
    import openai
    key = os.environ.get(api_key_env)
    if not key:  # local servers (LM Studio, Ollama, vLLM) accept any key; the client insists on one
        print(f"note: ${api_key_env} is not set; sending a placeholder key", file=sys.stderr)
    client = openai.OpenAI(base_url=base_url, api_key=key or 'not-set', timeout=timeout, max_retries=0)

    def ask(text, hint):
        prompt = PROMPT.format(lo=min_pairs, hi=max_pairs, max_q=max_question_chars, max_a=max_answer_chars,
                               hint=hint, article=text[:max_article_chars])
        try:
            r = client.chat.completions.create(model=model, temperature=temperature, messages=[
                {'role': 'system', 'content': SYSTEM}, {'role': 'user', 'content': prompt}])
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
            raise SystemExit(f"error: {base_url} refused the request (HTTP {e.status_code}); check --base_url, "
                             f"--model and ${api_key_env}")
        except openai.APITimeoutError:
            raise ConnectionError(f'no reply within {timeout}s')
        except openai.APIStatusError as e:
            error = ConnectionError(f'HTTP {e.status_code}')
            error.body = e.response.text[:2000]
            raise error
        except openai.APIConnectionError as e:
            raise ConnectionError(f'connection failed: {e}')
        return (r.choices[0].message.content or '') if r.choices else ''
    return ask


# ----------------------------------------------------------------------------- output files

def repair_tail(path, group_key=None):
    """
    Drops a torn last line (a run killed mid-write) and, with group_key, the complete lines before it
    that share its article, so that article is made again. A bad line elsewhere is an error: the file
    is someone's data. Returns the parsed records that remain.
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
            assert isinstance(record, dict) and (group_key is None or isinstance(record.get(group_key), int))
        except (ValueError, AssertionError):
            if line_no < len(lines):
                wanted = f" with an integer {group_key!r}" if group_key else ''
                sys.exit(f"error: {path}:{line_no}: not a JSON object{wanted}; fix or remove the line")
            torn, lines = True, lines[:-1]  # a final line that does not parse counts as torn too
            break
        records.append(record)
    if torn:
        keep = len(lines)
        while group_key and keep and records[keep - 1][group_key] == records[-1][group_key]:
            keep -= 1
        dropped = '' if keep == len(records) else \
            f" and the {len(records) - keep} lines of article {records[-1][group_key]}"
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
    if not os.path.isdir(input_dir) or not find_jsonl(input_dir):
        sys.exit(f"error: --input_dir={input_dir}: no such folder, or no *.jsonl files in it or below it")
    for path in (output, rejects):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    done = {r['id'] for r in repair_tail(output, 'id')}
    repair_tail(rejects)
    ask = openai_asker() if backend == 'openai' else None
    articles = takewhile(lambda a: limit <= 0 or a[0] < limit, iter_articles(input_dir))
    todo = ((i, path, line_no, clean_article(text)) for i, path, line_no, text in articles if i not in done)
    counts = {'accepted': 0, 'rejected': 0, 'pairs': 0}
    reasons = {}
    out_fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rej_fd = os.open(rejects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pool = ThreadPoolExecutor(max(1, concurrency))
    bar = tqdm(total=limit or None, initial=len(done), unit='art', desc='articles', dynamic_ncols=True)
    t0 = time.time()

    def record(article_id, pairs, reject):  # only the main thread writes, so articles never interleave
        if pairs:
            append_lines(out_fd, [dict(p, id=article_id) for p in pairs])
            counts['accepted'] += 1
            counts['pairs'] += len(pairs)
        else:
            append_lines(rej_fd, [reject])
            counts['rejected'] += 1
            reasons[reject['reason']] = reasons.get(reject['reason'], 0) + 1
        bar.update(1)
        bar.set_postfix(counts, refresh=False)

    def record_finished(futures):
        for future in sorted(futures, key=lambda f: f.article_id):
            record(future.article_id, *future.result())

    try:
        pending = set()
        for article in todo:
            if ask is None:  # the rules are quick and in order: the output is the same bytes every run
                record(article[0], *make_pairs(None, article))
                continue
            future = pool.submit(make_pairs, ask, article)
            future.article_id = article[0]
            pending.add(future)
            if len(pending) >= 2 * max(1, concurrency):  # a bounded window: the corpus is streamed
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                record_finished(finished)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            record_finished(finished)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        os.close(out_fd)
        os.close(rej_fd)
    elapsed = time.time() - t0
    n = counts['accepted'] + counts['rejected']
    print(f"accepted {counts['accepted']} articles ({counts['pairs']} pairs), rejected {counts['rejected']} "
          f"{reasons}, skipped {len(done)} already done; {elapsed:.1f}s, articles/s={n / max(elapsed, 1e-9):.2f}")
    print(f"pairs in {output}, rejects in {rejects}")


if __name__ == '__main__':
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
    main()

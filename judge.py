"""
An automatic judge for the arena: an LLM on any OpenAI-compatible server (LM Studio, Ollama, llama.cpp, vLLM)
compares two contestants' answers to a question and votes, in the arena's votes store, beside people's votes
and marked as the judge's. Every run also measures how far this judge can be trusted, and says so.

    OPENAI_API_KEY=lm-studio python judge.py --questions=data/sft_heldout.jsonl --base_url=http://localhost:1234/v1 \\
        --model=qwen2.5-7b-instruct                       # the contestants of peers.json (or out/sft, out/pretrain)
    python judge.py --questions=examples.csv --checkpoints=out/pretrain_25,out/pretrain_50,out/pretrain --pairs=0
    python judge.py --board_only=True                     # the leaderboards of the store: people, judge, both

Questions: a JSONL of {"question", "answer"?} (sft_generate's output; the answer is the reference the judge is
shown) or a CSV with a "prompt" column and an optional "reference" one (examples.csv; a prompt without a final
## is a text to continue). For each question, --pairs contestant pairs are drawn as the arena draws them (never
one model against itself); each answers, and the judge is asked twice, the answers shown in both orders. A win
counts only when both orders name the same winner; otherwise the vote is a tie. The vote goes into the store
(votes.py) with the arena's fields plus voter=<judge model>, voter_kind='judge:<model>' and the two raw
verdicts. Its battle id is made of the judge, the question and the pair, so a rerun skips what is judged.

Calibration, every run, printed and saved to <votes>.calibration.json: position consistency (battles whose two
orders agree), probes made from the reference answers (two identical answers should tie; the reference should
beat a truncated, a shuffled and another question's answer in both orders; the reference padded with its own
repetition should not beat it), and agreement with people (Cohen's kappa) on battles both judged, among them
the store's human battles the judge re-judges (--human_battles). A judge below a threshold is reported as
not trusted, with the reasons.

A reply is read leniently ("A", "[[B]]", "答案：B", "平局", "Assistant A is better", ...). A failed request or an
unreadable reply is retried with backoff; a battle still without a verdict is written to <votes>.rejects.jsonl
and tried again on a rerun. A server that refuses the key or model, or fails --max_down battles in a row (or a
calibration probe), stops the run with one line: what is judged is saved.
"""
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from datetime import datetime, timezone

import contestants
import ratings
import votes as store
from data_utils import jsonl_objects
from sft.sft_generate import RequestFailed, ask_chat

# -----------------------------------------------------------------------------
questions = 'sft/sft_saves.jsonl'  # JSONL of {"question", "answer"?}, or a CSV with prompt[,reference] (examples.csv)
limit = 50  # the first this many questions (0: all)
peers = ''  # contestants file (peers.example.json's format); empty: --checkpoints, else out/sft and out/pretrain
checkpoints = ''  # comma-separated checkpoint folders (one training run's): each is a contestant named by its folder
pairs = 1  # contestant pairs judged per question, drawn with the arena's odds (0: every pair)
votes = 'out/arena.db'  # the votes store the arena writes; calibration and rejects are written beside it
base_url = 'http://localhost:1234/v1'  # the judge: any OpenAI-compatible server (LM Studio's default address)
model = 'qwen2-7b-instruct'  # the judge model, as its server names it
api_key_env = 'OPENAI_API_KEY'  # name of the environment variable holding the judge server's key
temperature = 0.0  # the judge's: greedy, so the same pair gets the same verdict
timeout = 120.0  # seconds per judge request
max_attempts = 3  # requests per verdict before the battle is set aside (a rerun tries it again)
backoff = 1.0  # seconds before the second attempt, doubling after each failure
max_down = 3  # this many battles in a row without any answer from the judge: it is down, stop
human_battles = 50  # the store's first this many human-voted battles are also judged (agreement with people)
probes = 4  # questions with a reference answer used for the calibration probes
min_consistency = 0.6  # share of pairs judged the same in both orders below which the judge is not trusted
min_probe = 0.75  # share of each probe kind passed below which the judge is not trusted
min_kappa = 0.4  # Cohen's kappa with people below which a warning is printed
min_overlap = 10  # battles judged by people and the judge from which a low kappa also makes the judge not trusted
max_new_tokens = 100  # the contestants' answers: the arena's defaults, greedy
answer_temperature = 0.0
top_k = 20
presence_penalty = 1.0
frequency_penalty = 1.0
answer_timeout = 30.0  # seconds a peer may stay silent while answering
device = 'cpu'  # for local checkpoints
seed = 0  # the pair draw: the same questions always get the same pairs
board_only = False  # only print the leaderboards of the store (no judging)
bootstrap_rounds = 200  # the leaderboards' intervals, as ratings.py
min_battles = 10  # as ratings.py: fewer counted battles give no interval and no rank
# -----------------------------------------------------------------------------

SYSTEM = '你是公正、严格的评审，只根据内容质量判断。'
INTRO = {'question': ('下面是一个问题和两个模型的回答。', '问题'), 'continuation': ('下面是一段文字的开头和两个模型的续写。', '开头')}
PROMPT = """{intro}请判断哪个更好：内容正确、切题、通顺者胜；不要因为更长就判它更好{ref_note}。
【{label}】
{question}
{reference}【回答A】
{a}
【回答B】
{b}

只输出一个词：A、B 或 平局。"""
REFERENCE = '【参考答案】\n{}\n'
RETRY_HINT = '\n\n（上一次的输出无法识别。只输出 A、B 或 平局，不要解释。）'

OTHER = {'A': 'B', 'B': 'A', 'tie': 'tie'}  # a verdict seen from the other order
# the contestants' sampling when a caller gives none (the defaults above, before any --key=value)
PARAMS = {'max_new_tokens': max_new_tokens, 'temperature': answer_temperature, 'top_k': top_k, 'top_p': 1.0,
          'presence_penalty': presence_penalty, 'frequency_penalty': frequency_penalty}


class JudgeFailed(Exception):
    """No verdict: kind 'refused' (401/403/404), 'server' (no request got a reply) or 'unreadable' (replies, none a verdict)."""
    def __init__(self, kind, detail, reply=''):
        super().__init__(detail)
        self.kind, self.reply = kind, reply


class JudgeDown(Exception):
    """The judge server cannot be used: the run stops (main prints this one line)."""


# ----------------------------------------------------------------------------- the question set
def load_questions(path, limit=0):
    """
    [{'prompt', 'question', 'reference', 'task'}]: prompt as a contestant gets it (a question ends in ##),
    question as the judge reads it, reference or None, task 'question' or 'continuation'. Repeats are dropped.
    ValueError names the file and line of anything wrong.
    """
    if not os.path.exists(path):
        raise ValueError(f'{path}: no such question file')
    found, seen = [], set()

    def add(where, prompt, reference):
        if not isinstance(prompt, str) or not prompt.strip().removesuffix('##').strip():
            raise ValueError(f'{where}: the question must be a non-empty string, got {prompt!r:.60}')
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f'{where}: the reference answer must be a string, got {reference!r:.60}')
        stripped = prompt.strip()
        task = 'question' if stripped.endswith('##') else 'continuation'
        question = stripped[:-2].strip() if task == 'question' else stripped
        if question and question not in seen:
            seen.add(question)
            found.append({'prompt': prompt, 'question': question, 'reference': (reference or '').strip() or None,
                          'task': task})

    if path.lower().endswith('.csv'):
        import csv
        try:
            with open(path, encoding='utf-8-sig', newline='') as f:
                rows = list(csv.reader(f))
        except UnicodeDecodeError as e:
            raise ValueError(f'{path}: not UTF-8 ({e.reason} at byte {e.start})')
        if not rows or 'prompt' not in rows[0]:
            raise ValueError(f'{path}:1: expected a header with a "prompt" column (and optionally "reference")')
        head = rows[0]
        for line_no, row in enumerate(rows[1:], 2):
            if not any(row):
                continue
            if len(row) != len(head):
                raise ValueError(f'{path}:{line_no}: {len(row)} fields, the header has {len(head)}')
            row = dict(zip(head, row))
            add(f'{path}:{line_no}', row['prompt'], row.get('reference'))
    else:
        for line_no, record, problem in jsonl_objects(path):
            if problem:
                raise ValueError(f'{path}:{line_no}: {problem[1]}')
            question = record.get('question')
            if isinstance(question, str) and question.strip().removesuffix('##').strip():
                question = question.strip().removesuffix('##').strip() + '##'  # a question, whether it ends in ## or not
            add(f'{path}:{line_no} "question"', question, record.get('answer'))
    if not found:
        raise ValueError(f'{path}: no questions in it')
    return found[:limit] if limit > 0 else found


# ----------------------------------------------------------------------------- asking the judge
_THINK = re.compile(r'<think>.*?(</think>|$)', re.S)  # reasoning models think aloud first
_BRACKETS = re.compile(r'\[\[\s*(A|B|C|TIE|平局)\s*\]\]', re.I)  # MT-Bench's format, [[C]] a tie
_TIE = re.compile(r'平局|平手|打平|持平|不相上下|难分高下|难分伯仲|一样好|同样好|都很好|都好|都不好|都差|都错|'
                  r'\btie\b|\bdraw\b|\bequal(ly)?\b|\bneither\b', re.I)
_LETTER = r'(?<![A-Za-z0-9])((?-i:[AB]))(?![A-Za-z0-9])'  # a capital A or B standing alone (not English's "a")
_LABELED = re.compile(r'(?:结论|答案|判断|裁决|结果|胜者|获胜|选择|verdict|answer|winner|result|output|final|choice)'
                      r'[^A-Za-z0-9\u4e00-\u9fff]{0,6}(?:是|为|选|the)?\s*[^A-Za-z0-9\u4e00-\u9fff]{0,4}'
                      r'((?-i:[AB])(?![A-Za-z0-9])|平局|tie\b|draw\b)', re.I)
_WORSE = re.compile(r'(?:助手|模型|回答|assistant|model|answer|response)?\s*' + _LETTER +
                    r'\s*(?:的回答|的续写)?\s*(?:更差|较差|不如|更糟|is worse|worse)', re.I)
_BETTER = re.compile(r'(?:助手|模型|回答|assistant|model|answer|response)?\s*' + _LETTER +
                     r'\s*(?:的回答|的续写)?\s*(?:更好|较好|更佳|更优|胜出|获胜|赢|is better|is the better|wins|better)', re.I)


def parse_verdict(reply):
    """'A', 'B' or 'tie' from a judge's reply however it is worded (Chinese or English), or None when it names none."""
    text = unicodedata.normalize('NFKC', _THINK.sub('', reply or '')).strip()
    if not text:
        return None
    m = _BRACKETS.search(text)
    if m:
        return {'A': 'A', 'B': 'B'}.get(m[1].upper(), 'tie')
    bare = re.sub(r'[\s*_`"\'“”‘’「」『』()\[\]（）【】.。,，:：!！]+', '', text)
    if bare in ('A', 'B'):
        return bare
    if bare.lower() in ('tie', 'draw', '平局', '平', 'c', '平手'):
        return 'tie'
    for pattern, pick in ((_LABELED, lambda x: x), (_WORSE, lambda x: OTHER[x]), (_BETTER, lambda x: x)):
        m = pattern.search(text)
        if m:
            word = m[1]
            return pick(word) if word in ('A', 'B') else 'tie'
    if _TIE.search(text):
        return 'tie'
    letters = set(re.findall(_LETTER, text))
    return letters.pop() if len(letters) == 1 else None


def judge_messages(item, answer_a, answer_b):
    intro, label = INTRO[item['task']]
    reference = REFERENCE.format(item['reference']) if item.get('reference') else ''
    prompt = PROMPT.format(intro=intro, label=label, question=item['question'], reference=reference,
                           ref_note='，参考答案给出了正确内容' if reference else '', a=answer_a, b=answer_b)
    return [{'role': 'system', 'content': SYSTEM}, {'role': 'user', 'content': prompt}]


def one_verdict(ask, messages, max_attempts=3, backoff=1.0):
    """
    (verdict, reply) from ask(messages) -> reply text or RequestFailed. A failed request or an unreadable
    reply is retried with backoff (an unreadable one with a reminder of the format); then JudgeFailed.
    """
    failure, answered = None, False
    for attempt in range(max_attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            reply = ask(messages)
        except RequestFailed as e:
            if e.kind == 'refused':
                raise JudgeFailed('refused', str(e), e.body)
            failure = (str(e), e.body)
            continue
        answered = True
        verdict = parse_verdict(reply)
        if verdict:
            return verdict, reply
        failure = ('no verdict (A, B or tie) in the reply', reply)
        if not messages[-1]['content'].endswith(RETRY_HINT):
            messages = messages[:-1] + [{'role': 'user', 'content': messages[-1]['content'] + RETRY_HINT}]
    raise JudgeFailed('unreadable' if answered else 'server', *failure)


def both_orders(ask, item, answer_a, answer_b, max_attempts=3, backoff=1.0):
    """
    (vote, [verdict with answer_a shown first, verdict with answer_b shown first], [replies]): the vote is the
    winner both orders name, else a tie. The second verdict is in its own letters (its A is answer_b).
    """
    v1, r1 = one_verdict(ask, judge_messages(item, answer_a, answer_b), max_attempts, backoff)
    v2, r2 = one_verdict(ask, judge_messages(item, answer_b, answer_a), max_attempts, backoff)
    return (v1 if v1 == OTHER[v2] else 'tie'), [v1, v2], [r1, r2]


# ----------------------------------------------------------------------------- contestants
def answer(entry, model, question, params=PARAMS, timeout=30.0):
    """One contestant's whole answer to a prompt: the only place the judge calls contestants.py's streaming."""
    pieces = []
    try:
        for piece in contestants.stream_answer(entry, model, question, params, timeout,
                                               params['max_new_tokens'] * 8 + 100):
            pieces.append(piece)
    except contestants.TooLong:
        pass  # the peer sent more than asked: judged on the cut text, as the arena shows it
    return ''.join(pieces)


class LazyModels(dict):
    """Local checkpoints loaded when first asked for: a run with everything judged loads none."""
    def __init__(self, entries, device):
        super().__init__()
        self.entries, self.device = {e['name']: e for e in entries if 'checkpoint' in e}, device

    def get(self, name, default=None):
        if name in self.entries and name not in self:
            self.update(contestants.load_models([self.entries[name]], self.device))
        return super().get(name, default)


def contestant_entries(peers_path, checkpoint_dirs):
    """The contestants: the peers file's entries, then one per checkpoint folder (named by the folder)."""
    entries = contestants.load_peers(peers_path) if peers_path else []
    for path in checkpoint_dirs:
        entries.append({'name': path, 'checkpoint': path})
    names = [e['name'] for e in entries]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f'the contestant {name!r} is named twice (--peers and --checkpoints)')
    return entries or contestants.default_peers()


def draw_pairs(entries, count, rng):
    """`count` different pairs of contestants that are not one model (count 0: every such pair), as the arena draws them."""
    groups = contestants.same_model_groups(entries)
    weights = {e['name']: e.get('weight', 1) for e in entries}
    names = list(weights)
    every = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if groups[a] != groups[b] and weights[a] * weights[b] > 0]  # weight 0: never in battles
    if count <= 0:
        return every
    drawn = []
    for _ in range(20 * count):  # a few draws more than needed: the same pair may come twice
        pair = contestants.draw_pair(weights, groups, rng)
        if pair is None or len(drawn) == count:
            break
        if set(pair) not in [set(p) for p in drawn]:
            drawn.append(tuple(pair))
    return drawn


def battle_key(judge_kind, *parts):
    """A battle id from the judge and what was judged: a rerun finds the id in the store and skips the battle."""
    return 'judge-' + hashlib.sha1(json.dumps([judge_kind, *parts], ensure_ascii=False).encode()).hexdigest()[:24]


def question_battles(items, entries, models, judge_kind, count, seed, done, params=PARAMS, answer_timeout=30.0,
                     tally=None, log=print):
    """The battles still to judge, answers included: for each question its drawn pairs (either order is the same battle)."""
    by_name, cache, tally = {e['name']: e for e in entries}, {}, Counter() if tally is None else tally
    for item in items:
        for a, b in draw_pairs(entries, count, random.Random(f"{seed}:{item['prompt']}")):
            battle_id = battle_key(judge_kind, item['prompt'], sorted([a, b]))
            if battle_id in done:
                tally['already judged'] += 1
                continue
            try:
                for name in (a, b):
                    if (name, item['prompt']) not in cache:
                        cache[name, item['prompt']] = answer(by_name[name], models.get(name), item['prompt'], params,
                                                             answer_timeout)
            except Exception as err:  # a contestant that fails takes no vote, as in the arena; a rerun asks again
                log(contestants.describe_error(name, by_name[name], err, answer_timeout))
                tally['contestant failed'] += 1
                continue
            yield dict(item, battle_id=battle_id, model_a=a, model_b=b, answer_a=cache[a, item['prompt']],
                       answer_b=cache[b, item['prompt']], params=params)


def human_battles_to_judge(records, judge_kind, count, references, done, tally=None):
    """The first `count` battles people voted on (not leaked), to be judged on their own answers."""
    tally = Counter() if tally is None else tally
    people = [r for r in records if r.get('voter_kind', 'human') == 'human' and not r.get('leaked')
              and isinstance(r.get('answer_a'), str) and isinstance(r.get('answer_b'), str)
              and isinstance(r.get('prompt'), str) and r.get('model_a') != r.get('model_b')]
    for r in people[:count]:
        battle_id = battle_key(judge_kind, 'battle', r['battle_id'])
        if battle_id in done:
            tally['already judged'] += 1
            continue
        stripped = r['prompt'].strip()
        task = 'question' if stripped.endswith('##') else 'continuation'
        question = stripped[:-2].strip() if task == 'question' else stripped
        yield {'battle_id': battle_id, 'prompt': r['prompt'], 'question': question, 'task': task,
               'reference': references.get(question), 'model_a': r['model_a'], 'model_b': r['model_b'],
               'answer_a': r['answer_a'], 'answer_b': r['answer_b'], 'judged_battle': r['battle_id']}


def judge_battles(db, ask, battles, judge_kind, max_attempts=3, backoff=1.0, max_down=3, rejects='', tally=None,
                  log=print):
    """
    Judges each battle in both orders and stores its vote at once (a kill loses at most the battle in hand).
    A battle without a verdict goes to `rejects` (a JSONL) and is retried on a rerun. JudgeDown when the server
    refuses the request or `max_down` battles in a row got no reply at all.
    """
    tally, down = Counter() if tally is None else tally, 0
    for battle in battles:
        try:
            vote, verdicts, replies = both_orders(ask, battle, battle['answer_a'], battle['answer_b'], max_attempts,
                                                  backoff)
        except JudgeFailed as e:
            if e.kind == 'refused':
                raise JudgeDown(f'refused the request ({e})')
            down = down + 1 if e.kind == 'server' else 0
            if down >= max_down:
                raise JudgeDown(f'did not answer {down} battles in a row, {max_attempts} tries each ({e})')
            tally['no verdict'] += 1
            if rejects and e.kind == 'unreadable':
                with open(rejects, 'a', encoding='utf-8') as f:
                    f.write(json.dumps({'battle_id': battle['battle_id'], 'judge': judge_kind, 'prompt': battle['prompt'],
                                        'model_a': battle['model_a'], 'model_b': battle['model_b'],
                                        'reason': str(e), 'reply': e.reply}, ensure_ascii=False) + '\n')
            continue
        down = 0
        record = {'battle_id': battle['battle_id'], 'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
                  'prompt': battle['prompt'], 'model_a': battle['model_a'], 'model_b': battle['model_b'],
                  'answer_a': battle['answer_a'], 'answer_b': battle['answer_b'], 'vote': vote, 'leaked': False,
                  'voter': judge_kind.split(':', 1)[1], 'voter_kind': judge_kind, 'verdicts': verdicts,
                  'replies': replies, 'reference': battle.get('reference')}
        record.update({k: battle[k] for k in ('params', 'judged_battle') if k in battle})
        if store.add_vote(db, record):
            tally['judged'] += 1
            log(f"{battle['model_a']} vs {battle['model_b']}: {vote} ({verdicts[0]}, {verdicts[1]} swapped) "
                f"{battle['question'][:30]}")
    return tally


# ----------------------------------------------------------------------------- calibration
def corruptions(reference, other, rng):
    """(kind, corrupted copy) of a reference answer: truncated, characters shuffled, another question's answer."""
    found = []
    if len(reference) >= 2:
        found.append(('truncated', reference[:len(reference) // 2]))
        chars = list(reference)
        for _ in range(10):
            rng.shuffle(chars)
            if ''.join(chars) != reference:
                found.append(('shuffled', ''.join(chars)))
                break
    if other and other != reference:
        found.append(('other answer', other))
    return found


def probe_down(e):
    return JudgeDown(f"{'refused' if e.kind == 'refused' else 'did not answer'} a calibration probe ({e})")


def run_probes(ask, items, count=4, max_attempts=3, backoff=1.0, seed=0):
    """
    The probes on the first `count` questions with a reference: [{'probe', 'question', 'verdicts', 'passed'}].
    A probe without a verdict fails; a server that does not answer one is JudgeDown (nothing else would work).
    """
    with_ref = [x for x in items if x['reference']][:count]
    rng, results = random.Random(seed), []

    def ask_both(item, a, b):
        try:
            return both_orders(ask, item, a, b, max_attempts, backoff)
        except JudgeFailed as e:
            if e.kind != 'unreadable':
                raise probe_down(e)
            return None, [None, None], []

    for i, item in enumerate(with_ref):
        ref = item['reference']
        try:
            same, _ = one_verdict(ask, judge_messages(item, ref, ref), max_attempts, backoff)
        except JudgeFailed as e:
            if e.kind != 'unreadable':
                raise probe_down(e)
            same = None
        results.append({'probe': 'identical', 'question': item['question'], 'verdicts': [same], 'passed': same == 'tie'})
        other = with_ref[(i + 1) % len(with_ref)]['reference'] if len(with_ref) > 1 else None
        for kind, bad in corruptions(ref, other, rng):
            _, verdicts, _ = ask_both(item, ref, bad)  # the reference is A first, then B: it should win both
            results.append({'probe': kind, 'question': item['question'], 'verdicts': verdicts,
                            'passed': verdicts == ['A', 'B']})
        padded = '。'.join([ref.rstrip('。')] * 4) + '。'
        vote, verdicts, _ = ask_both(item, ref, padded)
        results.append({'probe': 'length', 'question': item['question'], 'verdicts': verdicts,
                        'passed': vote is not None and vote != 'B'})
    return results


def outcome(record):
    """A vote as 'first', 'second' (the pair's model first in name order won) or 'tie', whichever side it sat on."""
    if record['vote'] in ('tie', 'both_bad'):
        return 'tie'
    winner = record['model_a'] if record['vote'] == 'A' else record['model_b']
    return 'first' if winner == min(record['model_a'], record['model_b']) else 'second'


def cohen_kappa(pairs):
    """Cohen's kappa of two raters' labels on the same items: agreement beyond chance; None when undefined."""
    n = len(pairs)
    if not n:
        return None
    agreed = sum(a == b for a, b in pairs) / n
    labels = {x for pair in pairs for x in pair}
    chance = sum(sum(a == x for a, _ in pairs) / n * sum(b == x for _, b in pairs) / n for x in labels)
    return None if chance >= 1 else (agreed - chance) / (1 - chance)


def share(hits, total):
    return hits / total if total else None


def calibration(records, judge_kind, probe_results, min_consistency=0.6, min_probe=0.75, min_kappa=0.4, min_overlap=10):
    """The judge's calibration report from the store's records and this run's probes, with its verdict and reasons."""
    mine = [r for r in records if r.get('voter_kind') == judge_kind and len(r.get('verdicts') or []) == 2]
    battles = [r['verdicts'][0] == OTHER.get(r['verdicts'][1]) for r in mine]
    two_way = [p['verdicts'] for p in probe_results if p['probe'] != 'identical' and None not in p['verdicts']]
    probes_agree = [v[0] == OTHER[v[1]] for v in two_way]
    agree = battles + probes_agree
    kinds = {'identical': ['identical'], 'corrupted': ['truncated', 'shuffled', 'other answer'], 'length': ['length']}
    probe = {}
    for name, members in kinds.items():
        got = [p for p in probe_results if p['probe'] in members]
        probe[name] = {'asked': len(got), 'passed': sum(p['passed'] for p in got),
                       'share': share(sum(p['passed'] for p in got), len(got)),
                       'by_kind': {k: [sum(p['passed'] for p in got if p['probe'] == k),
                                       sum(1 for p in got if p['probe'] == k)] for k in members}}
    # people and the judge on the same battle: the judge's vote on that very battle, else on the same prompt and pair
    def key(r):
        return r['prompt'].strip().removesuffix('##').strip(), frozenset((r['model_a'], r['model_b']))
    by_battle, by_key = {}, {}
    for r in mine:
        if r.get('judged_battle'):
            by_battle.setdefault(r['judged_battle'], r)
        by_key.setdefault(key(r), r)
    labels = []
    for r in records:
        if r.get('voter_kind', 'human') != 'human' or r.get('leaked') or r.get('vote') not in ratings.OUTCOME:
            continue
        theirs = by_battle.get(r.get('battle_id')) or by_key.get(key(r)) if isinstance(r.get('prompt'), str) else None
        if theirs:
            labels.append((outcome(r), outcome(theirs)))
    decided = [(h, j) for h, j in labels if 'tie' not in (h, j)]
    kappa = cohen_kappa(labels)
    report = {'judge': judge_kind, 'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
              'consistency': {'pairs': len(agree), 'agreed': sum(agree), 'share': share(sum(agree), len(agree)),
                              'battles': [sum(battles), len(battles)], 'probes': [sum(probes_agree), len(probes_agree)]},
              'probes': probe, 'probe_results': probe_results,
              'people': {'battles': len(labels), 'agreed': sum(h == j for h, j in labels),
                         'share': share(sum(h == j for h, j in labels), len(labels)),
                         'without_ties': {'battles': len(decided), 'agreed': sum(h == j for h, j in decided),
                                          'share': share(sum(h == j for h, j in decided), len(decided))},
                         'kappa': None if kappa is None else round(kappa, 4)}}
    reasons, warnings = [], []
    c = report['consistency']['share']
    if c is None:
        reasons.append('no pair was judged in both orders: nothing to calibrate on')
    elif c < min_consistency:
        reasons.append(f'position consistency {c:.0%} < {min_consistency:.0%}: swapping the answers changes its verdict')
    what = {'identical': 'identical answers judged a tie', 'corrupted': 'the reference picked over a corrupted copy',
            'length': 'the reference padded with repetition kept from winning'}
    if not probe['identical']['asked']:
        reasons.append('no probes: the question set has no reference answers')
    for name, p in probe.items():
        if p['asked'] and p['share'] < min_probe:
            reasons.append(f"{name} probe: {what[name]} {p['passed']}/{p['asked']} ({p['share']:.0%} < {min_probe:.0%})"
                           + (': it prefers longer answers' if name == 'length' else ''))
    if kappa is not None and kappa < min_kappa:
        line = f'agreement with people: kappa {kappa:.2f} < {min_kappa} on {len(labels)} battles'
        enough = len(labels) >= min_overlap
        warnings.append(line + ('' if enough else f' (fewer than {min_overlap}: not yet a reason to distrust it)'))
        if enough:
            reasons.append(line)
    elif len(labels) < min_overlap:
        warnings.append(f'only {len(labels)} battles judged by both people and the judge: agreement not checked '
                        f'(needs {min_overlap})')
    report.update(trusted=not reasons, reasons=reasons, warnings=warnings)
    return report


def save_calibration(path, report):
    """Keeps the latest report of each judge in one JSON file beside the votes (written whole, then renamed)."""
    saved = {}
    try:
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
        saved = saved if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        pass
    saved[report['judge']] = report
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(saved, f, ensure_ascii=False, indent=1)
    os.replace(path + '.tmp', path)


def calibration_text(report):
    """The report as the lines a run prints, ending with the verdict line."""
    def pct(x):
        return '—' if x is None else f'{x:.0%}'
    c, p, h = report['consistency'], report['probes'], report['people']
    corrupted = ', '.join(f'{k} {a}/{n}' for k, (a, n) in p['corrupted']['by_kind'].items() if n)
    lines = [f"calibration of {report['judge']}:",
             f"  position consistency    {c['agreed']}/{c['pairs']} pairs judged the same in both orders ({pct(c['share'])}; "
             f"battles {c['battles'][0]}/{c['battles'][1]}, probes {c['probes'][0]}/{c['probes'][1]})",
             f"  identical answers       {p['identical']['passed']}/{p['identical']['asked']} judged a tie ({pct(p['identical']['share'])})",
             f"  reference vs corrupted  {p['corrupted']['passed']}/{p['corrupted']['asked']} picked the reference in both orders "
             f"({pct(p['corrupted']['share'])}{': ' + corrupted if corrupted else ''})",
             f"  length probe            {p['length']['passed']}/{p['length']['asked']} times the padded copy did not win "
             f"({pct(p['length']['share'])})",
             f"  agreement with people   {h['battles']} battles: {pct(h['share'])} with ties, {pct(h['without_ties']['share'])} "
             f"without ({h['without_ties']['battles']}), Cohen's kappa {'—' if h['kappa'] is None else format(h['kappa'], '.2f')}"]
    lines += [f'warning: {w}' for w in report['warnings']]
    lines.append(f"verdict: {report['judge']} is TRUSTED" if report['trusted'] else
                 f"verdict: {report['judge']} is NOT TRUSTED: " + '; '.join(report['reasons']))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- the leaderboards
def boards_by_voter(db, judge_kind=None, **options):
    """
    {'human': board, 'judge': board, 'combined': board}: ratings.leaderboard's board (see ratings.py) of the
    store's human votes, of the judge's (judge_kind, e.g. 'judge:qwen2.5-7b-instruct'; None: every judge's) and
    of both together. db: a votes.connect() connection or a store's path; options go to ratings.leaderboard
    (names, anchor, rounds, min_battles, include_leaked, seed).
    """
    db = store.connect(db) if isinstance(db, str) else db
    groups = {'human': [], 'judge': [], 'combined': []}
    for r in store.records(db):
        kind = r.get('voter_kind', 'human')
        if kind == 'human':
            groups['human'].append(r)
        elif kind == judge_kind or judge_kind is None and kind.startswith('judge:'):
            groups['judge'].append(r)
        else:
            continue
        groups['combined'].append(r)
    boards = {}
    with tempfile.TemporaryDirectory() as folder:  # ratings reads a votes file: each group is written as one
        for name, records in groups.items():
            path = os.path.join(folder, f'{name}.jsonl')
            with open(path, 'w', encoding='utf-8') as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in records)
            boards[name] = ratings.leaderboard(path, **options)
    return boards


def side_by_side(boards, judge_kind=None):
    """The three rankings as one Markdown table: a row per place, each cell model, BT, 95% interval and battles."""
    titles = {'human': '人工投票', 'judge': judge_kind or '裁判', 'combined': '合计'}
    columns = [[f"{r['model']} {r['bt']:.0f}" + (f" [{r['bt_low']:.0f}, {r['bt_high']:.0f}]" if r['bt_low'] is not None else '')
                + f" ({r['battles']})" for r in boards[k]['rows'] if r['battles']] for k in titles]
    lines = ['| # | ' + ' | '.join(f"{t}（{boards[k]['counted']} 票）" for k, t in titles.items()) + ' |',
             '|---|---|---|---|']
    for i in range(max(map(len, columns), default=0)):
        lines.append(f'| {i + 1} | ' + ' | '.join(c[i] if i < len(c) else '' for c in columns) + ' |')
    return '\n'.join(lines)


def checkpoint_summary(board, names):
    """Checkpoints of one run (in training order) as the judge ranks them, and each one against the one before it."""
    ranked = [r for r in board['rows'] if r['model'] in names and r['bt'] is not None]
    lines = ['checkpoints by the judge: ' + ' > '.join(f"{r['model']} ({r['bt']:.0f})" for r in ranked)]
    index = {n: i for i, n in enumerate(board['names'])}
    for before, after in zip(names, names[1:]):
        if before in index and after in index and board['games'][index[after], index[before]]:
            won, games = board['wins'][index[after], index[before]], int(board['games'][index[after], index[before]])
            lines.append(f'{after} against {before}: {won:g} of {games} (a tie is half; {won / games:.0%})')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- the run
def run(db, ask, judge_kind, items, entries, models, pairs=1, seed=0, params=PARAMS, answer_timeout=30.0,
        max_attempts=3, backoff=1.0, max_down=3, probes=4, human_battles=50, thresholds=None, rejects='', log=print):
    """
    Probes first (a dead judge is found before any contestant answers), then the store's human battles and the
    question set's battles; returns (calibration report, tally). JudgeDown stops it, with every vote kept.
    """
    probe_results = run_probes(ask, items, probes, max_attempts, backoff, seed)
    done = {r['battle_id'] for r in store.records(db)}
    tally = Counter()
    references = {x['question']: x['reference'] for x in items if x['reference']}
    judge_battles(db, ask, human_battles_to_judge(store.records(db), judge_kind, human_battles, references, done, tally),
                  judge_kind, max_attempts, backoff, max_down, rejects, tally, log)
    judge_battles(db, ask, question_battles(items, entries, models, judge_kind, pairs, seed, done, params,
                                            answer_timeout, tally, log),
                  judge_kind, max_attempts, backoff, max_down, rejects, tally, log)
    return calibration(store.records(db), judge_kind, probe_results, **(thresholds or {})), tally


def main():
    for name, value in (('max_attempts', max_attempts), ('max_down', max_down), ('timeout', timeout)):
        if value <= 0:
            sys.exit(f'error: --{name}={value}: must be above 0')
    for name, value in (('min_consistency', min_consistency), ('min_probe', min_probe)):
        if not 0 <= value <= 1:
            sys.exit(f'error: --{name}={value}: must be a share between 0 and 1')
    if pairs < 0 or probes < 0 or human_battles < 0:
        sys.exit('error: --pairs, --probes and --human_battles must be 0 or more')
    os.makedirs(os.path.dirname(os.path.abspath(votes)), exist_ok=True)
    db = store.connect(votes)
    judge_kind = f'judge:{model}'
    if not board_only:
        try:
            items = load_questions(questions, limit)
            entries = contestant_entries(peers, [p.strip() for p in checkpoints.split(',') if p.strip()])
        except ValueError as e:
            sys.exit(f'error: {e}')
        params = {'max_new_tokens': max_new_tokens, 'temperature': answer_temperature, 'top_k': top_k, 'top_p': 1.0,
                  'presence_penalty': presence_penalty, 'frequency_penalty': frequency_penalty}
        print(f"judge {model} at {base_url}; {len(items)} questions from {questions} "
              f"({sum(1 for x in items if x['reference'])} with a reference); contestants {[e['name'] for e in entries]}")
        if not os.environ.get(api_key_env):
            print(f'note: ${api_key_env} is not set; sending a placeholder key', file=sys.stderr)

        def ask(messages):
            return ask_chat(messages, base_url, model, api_key_env, timeout, temperature)
        try:
            report, tally = run(db, ask, judge_kind, items, entries, LazyModels(entries, device), pairs, seed, params,
                                answer_timeout, max_attempts, backoff, max_down, probes, human_battles,
                                dict(min_consistency=min_consistency, min_probe=min_probe, min_kappa=min_kappa,
                                     min_overlap=min_overlap), votes + '.rejects.jsonl')
        except JudgeDown as e:
            sys.exit(f'error: the judge {model} at {base_url} {e}; check --base_url, --model and ${api_key_env}. '
                     f'Votes so far are saved in {votes}; rerun to go on.')
        except KeyboardInterrupt:
            sys.exit(f'interrupted: votes so far are saved in {votes}; rerun to go on.')
        print(f"\n{tally['judged']} battles judged, {tally['already judged']} judged before, "
              f"{tally['no verdict']} without a verdict" + (f" (see {votes}.rejects.jsonl)" if tally['no verdict'] else '')
              + f", {tally['contestant failed']} where a contestant failed")
        save_calibration(votes + '.calibration.json', report)
        print(calibration_text(report) + f'\n(saved in {votes}.calibration.json)\n')
    boards = boards_by_voter(db, judge_kind, rounds=bootstrap_rounds, min_battles=min_battles, seed=seed)
    print(side_by_side(boards, judge_kind))
    if not board_only and checkpoints:
        print('\n' + checkpoint_summary(boards['judge'], [p.strip() for p in checkpoints.split(',') if p.strip()]))


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py'), encoding='utf-8').read())
    main()

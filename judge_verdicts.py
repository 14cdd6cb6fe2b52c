"""
The judge's verdict on two answers to one question: 'A', 'B' or 'tie'. A judge is a function
judge(item, answer_a, answer_b) -> (verdict, reply), item a question as judge.py loads it ({'question', 'task',
'reference'}); both_orders asks it with the answers shown both ways round. Two judges:

- llm_judge: an LLM on any OpenAI-compatible server reads a short Chinese prompt (the question, the reference
  answer when there is one, answers A and B) and names one; its reply is read leniently (parse_verdict), a failed
  request or an unreadable reply is asked again with backoff, then JudgeFailed.
- rules_judge: offline, no model. It prefers the answer whose character-level Rouge-L F against the reference (as
  evaluations-RougeL.py scores it) is higher by a margin, else a tie; without a reference it says tie. A floor,
  not a judge of quality: it rewards copying the reference's characters, whatever the answer means.
"""
import importlib.util
import os
import re
import time
import unicodedata

from sft.sft_generate import ChatError

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


class JudgeFailed(Exception):
    """
    No verdict after `tries` requests: kind 'refused' (401/403/404), 'server' (no request got a reply) or
    'unreadable' (replies, none a verdict).
    """
    def __init__(self, kind, detail, reply='', tries=1):
        super().__init__(detail)
        self.kind, self.reply, self.tries = kind, reply, tries


class JudgeDown(Exception):
    """The judge server cannot be used: the run stops (main prints this one line)."""


def both_orders(judge, item, answer_a, answer_b):
    """
    (vote, [verdict with answer_a shown first, verdict with answer_b shown first], [replies]): the vote is the
    winner both orders name, else a tie. The second verdict is in its own letters (its A is answer_b).
    """
    v1, r1 = judge(item, answer_a, answer_b)
    v2, r2 = judge(item, answer_b, answer_a)
    return (v1 if v1 == OTHER[v2] else 'tie'), [v1, v2], [r1, r2]


# ----------------------------------------------------------------------------- the LLM
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
    (verdict, reply) from ask(messages) -> reply text or ChatError. A failed request or an unreadable
    reply is retried with backoff (an unreadable one with a reminder of the format); then JudgeFailed.
    """
    failure, answered = None, False
    for attempt in range(max_attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            reply = ask(messages)
        except ChatError as e:
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
    raise JudgeFailed('unreadable' if answered else 'server', *failure, tries=max_attempts)


def llm_judge(ask, max_attempts=3, backoff=1.0):
    """The judge that asks an LLM: ask(messages) -> reply text, e.g. sft_generate.ask_chat with a server's settings."""
    def judge(item, answer_a, answer_b):
        return one_verdict(ask, judge_messages(item, answer_a, answer_b), max_attempts, backoff)
    return judge


# ----------------------------------------------------------------------------- the rules
def rouge_l_f():
    """evaluations-RougeL.py's character-level Rouge-L F as a function (reference, answer) -> F (its name has a '-')."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'evaluations-RougeL.py')
    spec = importlib.util.spec_from_file_location('evaluations_RougeL', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scorer = module.make_scorer()
    return lambda reference, answer: module.rouge_l(scorer, reference, answer)['f']


def rules_judge(margin=0.1):
    """The offline judge: the answer nearer the reference (Rouge-L F higher by more than `margin`) wins, else a tie."""
    score = rouge_l_f()

    def judge(item, answer_a, answer_b):
        if not item.get('reference'):
            return 'tie', 'no reference answer'
        fa, fb = score(item['reference'], answer_a), score(item['reference'], answer_b)
        verdict = 'A' if fa - fb > margin else 'B' if fb - fa > margin else 'tie'
        return verdict, f'Rouge-L F {fa:.2f} : {fb:.2f}'
    return judge

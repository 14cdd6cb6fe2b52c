"""sft/rules.py in-process: the time it takes on text without a sentence end, and the pairs of encyclopedia entries."""
import subprocess
import sys

import pytest

from conftest import PYTHON, ROOT

sys.path.insert(0, ROOT)
from sft import rules  # noqa: E402


@pytest.mark.slow
def test_text_without_a_sentence_end_takes_linear_time():
    # 100,000 characters without 。 after a sentence: a pattern retried from every position of the tail takes over a
    # minute, one pass over the sentence ends milliseconds. A regex holds the GIL, so the guard is a process
    code = (f'import sys, json; sys.path.insert(0, {ROOT!r}); from sft.rules import rules_candidates; '
            'tail = ("中国人民在党的领导下团结奋斗，" * 7000)[:100000]; '
            'print(json.dumps([list(rules_candidates(tail, next_sentence=True)), '
            'list(rules_candidates("长江是中国第一长河。" + tail))], ensure_ascii=False))')
    try:
        proc = subprocess.run([PYTHON, '-c', code], capture_output=True, text=True, timeout=30, check=True)
    except subprocess.TimeoutExpired:
        raise AssertionError('rules_candidates still running after 30 s on 100,000 characters: not linear')
    assert proc.stdout.strip() == ('[[], [{"question": "长江是什么？", "answer": "中国第一长河"}, '
                                   '{"question": "中国第一长河是什么？", "answer": "长江"}]]')


def test_sentences_keep_their_closing_quote_and_skip_bare_end_marks():
    assert rules.sentences('。。他说：“好。”！ 长江很长。没有句号') == ['他说：“好。”', '长江很长。']
    assert rules.sentences('') == [] and rules.sentences('？！') == [] and rules.sentences('没有句号，' * 9) == []

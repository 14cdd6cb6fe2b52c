"""sft/rules.py in-process: the time it takes on text without a sentence end, and the pairs of encyclopedia entries."""
import json
import os
import subprocess
import sys

import pytest

from conftest import PYTHON, ROOT, load_script

sys.path.insert(0, ROOT)
from corpus import clean_article  # noqa: E402
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


def entry_pairs(raw):
    return list(rules.entry_candidates(rules.entry_title(raw), clean_article(raw)))


def test_an_entry_is_asked_about_its_title_from_its_opening_sentence():
    wangjiaba = '王家坝是安徽省阜南县的一个行蓄洪区，位于淮河上游与中游的分界处。它被称为淮河防汛的“晴雨表”。'
    assert rules.entry_title('王家坝\n\n' + wangjiaba) == '王家坝'
    assert entry_pairs('王家坝\n\n' + wangjiaba) == [
        {'question': '王家坝是什么？', 'answer': '安徽省阜南县的一个行蓄洪区'},
        {'question': '王家坝位于哪里？', 'answer': '淮河上游与中游的分界处'}]
    # an alias in parentheses, a comma before 是, names and a full name that begins with the title
    assert entry_pairs('王家坝\n\n王家坝（Wangjiaba），是安徽省阜南县的一个行蓄洪区。')[0] == {
        'question': '王家坝是什么？', 'answer': '安徽省阜南县的一个行蓄洪区'}
    assert entry_pairs('李白\n\n李白（701年－762年），字太白，号青莲居士，是唐代伟大的浪漫主义诗人，被后人誉为“诗仙”。') == [
        {'question': '李白字什么？', 'answer': '太白'}, {'question': '李白号什么？', 'answer': '青莲居士'},
        {'question': '李白是谁？', 'answer': '唐代伟大的浪漫主义诗人'}, {'question': '李白被誉为什么？', 'answer': '诗仙'}]
    assert entry_pairs('北京\n\n北京市，简称“京”，是中华人民共和国的首都，是全国的政治中心。') == [
        {'question': '北京市简称什么？', 'answer': '京'}, {'question': '北京市是什么？', 'answer': '中华人民共和国的首都'}]
    assert entry_pairs('酵母\n\n酵母（英语：yeast（s）），指一类单细胞真菌。') == [
        {'question': '酵母是什么？', 'answer': '一类单细胞真菌'}]  # a parenthesis inside the alias, 指
    assert entry_pairs('孙中山\n\n孙中山（1866年－1925年），名文，号日新，又号逸仙，广东香山人，中国近代民主革命家。') == [
        {'question': '孙中山名什么？', 'answer': '文'}, {'question': '孙中山号什么？', 'answer': '日新'},
        {'question': '孙中山又号什么？', 'answer': '逸仙'}, {'question': '孙中山是谁？', 'answer': '中国近代民主革命家'}]
    assert entry_pairs('司马迁\n\n司马迁（前145年－？），字子长，西汉史学家、文学家。') == [  # a ？ in the alias ends nothing
        {'question': '司马迁字什么？', 'answer': '子长'}, {'question': '司马迁是谁？', 'answer': '西汉史学家、文学家'}]
    # a definition cut at a comma in mid-phrase runs on to where its noun phrase ends
    assert entry_pairs('光合作用\n\n光合作用是植物利用光能，将二氧化碳和水转化为有机物的过程。这一过程…。') == [
        {'question': '光合作用是什么？', 'answer': '植物利用光能，将二氧化碳和水转化为有机物的过程'}]
    # a note in the title, a date with its verb
    assert entry_pairs('淝水之战 (383年)\n\n淝水之战发生于383年，是东晋与前秦之间的一场战役。') == [
        {'question': '淝水之战发生于何时？', 'answer': '383年'}, {'question': '淝水之战是什么？', 'answer': '东晋与前秦之间的一场战役'}]
    # no title, or a body that does not open with it: nothing is guessed
    assert entry_pairs(wangjiaba) == [] and rules.entry_title(wangjiaba) == ''
    assert entry_pairs('王家坝闸\n\n2020年7月20日，王家坝闸开闸蓄洪。王家坝闸是淮河上的一座闸。') == []
    assert entry_pairs('李娜 (消歧义)\n\n李娜可以指：网球运动员李娜；歌手李娜。') == []
    assert rules.entry_title('他说。\n\n正文在这里。') == '' and rules.entry_title('一行\n两行\n\n正文。') == ''


def test_most_wiki_entries_give_a_trusted_pair_copied_from_the_text():
    """94 encyclopedia-shaped entries (people, places, organisations, concepts, events; 8 with no definition)."""
    g = load_script('sft/sft_generate.py')
    with open(os.path.join(ROOT, 'tests', 'fixtures', 'wiki_entries.jsonl'), encoding='utf-8') as f:
        raws = [json.loads(line)['text'] for line in f]
    asked, covered, answers = set(), 0, 0
    for raw in raws:
        text = clean_article(raw)
        pairs = g.rules_pairs(text, asked, g.Limits(3, 6, 40, 150), rules.entry_title(raw))
        covered += bool(pairs)
        for pair in pairs:
            assert pair['answer'] in text, pair  # verbatim
            assert len(pair['answer']) <= rules.ENTRY_ANSWER_CHARS and not g._PRONOUN.search(pair['question'])
            answers += 1
    assert len(raws) == 94 and covered >= 0.8 * len(raws), f'{covered} of {len(raws)} entries give a pair'
    assert answers >= 2 * covered  # the title's definition, and more from the same sentence

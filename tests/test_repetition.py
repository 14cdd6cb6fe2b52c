"""evaluations-RougeL.py's loop figures (repeated 4-grams, distinct-2), median F and stops at EOT, on hand-made answers."""
import json

import pytest

from conftest import GPT2, SENTENCES, load_script, run_script


rouge = load_script('evaluations-RougeL.py')

ANSWERS = [
    '北京是中国的首都。',  # no 4 characters twice; bigrams: 8, all new
    '经济经济经济经济',  # 经济经济 at 0, 2 and 4 (overlaps count): three times; bigrams: 7, of them 2 distinct
    '人民日报人民日报',  # 人民日报 twice; bigrams: 7, 4 distinct
    'a b c d a b c d',  # whitespace dropped: abcdabcd, abcd twice; bigrams: 7, 4 distinct
    '',  # nothing at all
]


def test_repetition_figures_on_hand_made_answers():
    assert rouge.repetition(ANSWERS) == {'repeat_4gram_share': 3 / 5, 'repeat_4gram_3x_share': 1 / 5,
                                         'distinct_2': 18 / 29}
    assert rouge.repetition(['北京北京北京']) == {'repeat_4gram_share': 1.0, 'repeat_4gram_3x_share': 0.0,
                                               'distinct_2': 2 / 5}  # 北京北京 at 0 and 2 only
    assert rouge.repetition(['天', '']) == {'repeat_4gram_share': 0.0, 'repeat_4gram_3x_share': 0.0, 'distinct_2': 0.0}
    # distinct-2 pools all answers: a bigram in two answers is one distinct bigram of two
    assert rouge.repetition(['北京', '北京'])['distinct_2'] == 1 / 2


def test_summary_median_f_and_stops_at_eot():
    results = [{'prediction': a, 'precision': f, 'recall': f, 'f': f, 'stopped_at_eot': s}
               for a, f, s in zip(ANSWERS, [1.0, 0.2, 0.5, 0.0, 0.3], [True, False, True, True, False])]
    summary = rouge.summarize(results)
    assert summary['f'] == pytest.approx(0.4) and summary['median_f'] == 0.3 and summary['n'] == 5
    assert summary['stopped_at_eot_share'] == 3 / 5
    assert summary['repeat_4gram_share'] == 3 / 5 and summary['repeat_4gram_3x_share'] == 1 / 5


def test_script_reports_the_figures(tiny_checkpoint, tmp_path):
    items = tmp_path / 'items.jsonl'
    with open(items, 'w', encoding='utf-8') as f:
        for s in SENTENCES[:2]:
            f.write(json.dumps({'prompt': s[:2], 'reference': s[2:]}, ensure_ascii=False) + '\n')

    def run(max_new_tokens):
        prefix = tmp_path / f'rouge{max_new_tokens}'
        proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', f'--input={items}', '--device=cpu',
                           f'--max_new_tokens={max_new_tokens}', f'--output_prefix={prefix}'], env={'OMP_NUM_THREADS': '1'})
        with open(f'{prefix}.json', encoding='utf-8') as f:
            return json.load(f), proc.stdout
    report, out = run(100)  # the tiny model has memorised both sentences and stops after each
    s = report['summary']
    assert [i['prediction'] for i in report['items']] == [SENTENCES[0][2:], SENTENCES[1][2:]]
    assert [i['tokens'] for i in report['items']] == [len(GPT2.encode(SENTENCES[i])) - len(GPT2.encode(SENTENCES[i][:2]))
                                                      for i in range(2)]
    assert s['f'] == s['median_f'] == 1.0 and s['stopped_at_eot_share'] == 1.0
    assert {k: s[k] for k in ('repeat_4gram_share', 'repeat_4gram_3x_share', 'distinct_2')} == \
        rouge.repetition([SENTENCES[0][2:], SENTENCES[1][2:]])
    assert 'median F 1.0000' in out and '100.0% stopped at end-of-text' in out
    report, out = run(3)  # cut by max_new_tokens: none stopped
    assert report['summary']['stopped_at_eot_share'] == 0.0 and [i['tokens'] for i in report['items']] == [3, 3]
    assert [i['stopped_at_eot'] for i in report['items']] == [False, False]

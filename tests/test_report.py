"""report.py on a fake run folder: every section shows the figures of its files, and follows them when they change."""
import csv
import json
import os
import platform
import subprocess

import torch

import votes
from conftest import ROOT, load_script, run_script

report = load_script('report.py')

ROUGE_ROWS = [  # (question, answer, prediction, f): seven rows so that five examples skip two of them
    ('羊侃的字是什么？ ##', '祖忻', '祖忻', 1.0),
    ('长江是什么？ ##', '中国最长的河流', '中国最长的河', 0.9231),
    ('北京是什么？ ##', '中国的首都', '中国首都', 0.8889),
    ('熊猫喜欢吃什么？ ##', '竹子', '竹', 0.6667),
    ('春节吃什么？ ##', '饺子', '饺|子\n汤', 0.5),
    ('黄河流入哪里？ ##', '渤海', '海', 0.3333),
    ('新华社成立于什么时候？ ##', '1931年', '经济经济', 0.0),
]


# judge.py's calibration of the rules judge, as <votes>.calibration.json keeps it
CALIBRATION = {
    'judge': 'judge:rules', 'time': '2026-12-05T12:29:32+00:00',
    'consistency': {'pairs': 14, 'agreed': 14, 'share': 1.0, 'battles': [6, 6], 'probes': [8, 8]},
    'probes': {'identical': {'asked': 2, 'passed': 2, 'share': 1.0, 'by_kind': {'identical': [2, 2]}},
               'corrupted': {'asked': 6, 'passed': 5, 'share': 0.8333,
                             'by_kind': {'truncated': [2, 2], 'shuffled': [1, 2], 'other answer': [2, 2]}},
               'length': {'asked': 2, 'passed': 2, 'share': 1.0, 'by_kind': {'length': [2, 2]}}},
    'people': {'battles': 0, 'agreed': 0, 'share': None, 'without_ties': {'battles': 0, 'agreed': 0, 'share': None},
               'kappa': None},
    'trusted': True, 'reasons': [],
    'warnings': ['only 0 battles judged by both people and the judge: agreement not checked (needs 10)']}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, ensure_ascii=False)


def write_lines(path, objs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(o, ensure_ascii=False) + '\n' for o in objs)


def write_checkpoint(folder, iter_num, lr):
    """A checkpoint as train.py saves it, with a few tiny tensors: wte and lm_head are one tied tensor."""
    wte = torch.zeros(10, 4)
    model = {'transformer.wte.weight': wte, 'lm_head.weight': wte, 'transformer.ln_f.weight': torch.ones(3)}
    os.makedirs(folder, exist_ok=True)
    torch.save({'model_args': {'n_layer': 2, 'n_head': 2, 'n_embd': 4, 'block_size': 128, 'vocab_size': 64},
                'model': model, 'iter_num': iter_num, 'best_val_loss': 3.21, 'tokens_seen': 45678, 'elapsed': 400.0,
                'config': {'learning_rate': lr, 'batch_size': 16, 'seed': 1337, 'device': 'cpu'},
                'tokenizer': {'name': 'people8k', 'n_vocab': 8192}}, os.path.join(folder, 'ckpt.pt'))


def make_run(work):
    """A work folder holding every file the main command leaves, with figures the tests look for."""
    w = lambda *p: os.path.join(work, *p)  # noqa: E731
    write_lines(w('data', 'people_daily', '199801.jsonl'), [{'text': '北京是中国的首都。'}, {'text': '长江很长。'}, {}])
    write_lines(w('data', 'people_daily', 'more', 'b.jsonl'), [{'text': '熊猫。'}])
    write_json(w('data', 'sample', 'meta.json'), {
        'kind': 'pretrain', 'block_size': 128, 'rows': {'train': 8717, 'val': 96},
        'tokens': {'train': 752319, 'val': 7578}, 'chars': {'train': 1700001, 'val': 90370},
        'fill_ratio': 0.673629, 'skipped': {'no_period': 10671}, 'encoding': 'people8k'})
    write_json(w('data', 'sft', 'meta.json'), {'kind': 'sft', 'block_size': 128, 'pairs': 7732,
                                               'rows': {'train': 3331, 'val': 171}, 'skipped': {'too_long': 4212}})
    write_json(w('data', 'tokenizer', 'tokenizer.json'), {
        'name': 'people8k', 'pattern': 'gpt2', 'n_vocab': 8192, 'eot_token': 8190, 'a_token': 8191,
        'ranks_sha256': 'ab' * 32, 'trained_on': {'articles': 19484, 'chars': 1841657},
        'compression': {'measured_on': 'val', 'block_size': 256,
                        'gpt2': {'tokens_per_char': 2.1912, 'bytes_per_token': 1.3689},
                        'trained': {'tokens_per_char': 0.6843, 'bytes_per_token': 4.3827}}})
    for stage, lr, (first, last) in (('pretrain', 0.002, (9.1234, 4.5678)), ('sft', 0.001, (3.6123, 1.2345))):
        write_checkpoint(w('out', stage), 500 if stage == 'pretrain' else 313, lr)
        write_lines(w('out', stage, 'log.jsonl'), [
            {'iter': 0, 'split': 'val', 'loss': first + 0.1, 'lr': 0.0, 'tokens': 0, 'elapsed': 1.0},
            {'iter': 10, 'split': 'train', 'loss': first, 'lr': lr, 'tokens': 20320, 'elapsed': 8.0},
            {'iter': 20, 'split': 'train', 'loss': last, 'lr': lr, 'tokens': 40640, 'elapsed': 16.0},
            {'iter': 20, 'split': 'val', 'loss': last + 0.1, 'lr': lr, 'tokens': 40640, 'elapsed': 17.5}])
        with open(w('out', stage, 'samples.txt'), 'w', encoding='utf-8') as f:
            f.write(f'{stage}说：中国人民站起来了。\n---------------\n')
    write_json(w('out', 'pretrain', 'perplexity_val.json'), {
        'ppl': 22.13, 'unigram_ppl': 129.4, 'bits_per_char': 5.8312, 'unigram_bits_per_char': 9.5321,
        'bits_per_byte': 2.0101, 'loss': 3.097, 'tokens': 7578, 'iter_num': 500})
    write_json(w('out', 'sft', 'perplexity_val.json'), {'ppl': 21.07, 'unigram_ppl': 173.2, 'iter_num': 313})
    write_json(w('out', 'sft', 'rougeL.json'), {'summary': {
        'n': 50, 'f': 0.8123, 'median_f': 0.9001, 'precision': 0.81, 'recall': 0.82, 'repeat_4gram_share': 0.04,
        'distinct_2': 0.8765, 'source': 'sft/sft_saves.jsonl'}, 'items': []})
    with open(w('out', 'sft', 'rougeL.csv'), 'w', encoding='utf-8', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['id', 'prompt', 'reference', 'prediction', 'precision', 'recall', 'f'])
        writer.writerows([i, q, a, p, f, f, f] for i, (q, a, p, f) in enumerate(ROUGE_ROWS))
    write_json(w('out', 'sft', 'rougeL_val.json'), {'summary': {
        'n': 25, 'f': 0.1298, 'median_f': 0.0, 'stopped_at_eot_share': 0.96, 'repeat_4gram_3x_share': 0.0},
        'items': []})
    write_json(w('out', 'pretrain', 'examples.json'), {'summary': {
        'n': 20, 'repeat_4gram_share': 0.25, 'repeat_4gram_3x_share': 0.05, 'distinct_2': 0.5731,
        'presence_penalty': 1.0, 'frequency_penalty': 0.5}, 'items': [
            {'prompt': '春节前夕，', 'reference': '', 'prediction': '北京市人民政府负责管理'}]})
    write_lines(w('out', 'timings.jsonl'), [{'stage': 'prepare', 'seconds': 5}, {'stage': 'pretrain', 'seconds': 400},
                                            {'stage': 'finetune', 'seconds': 260}])
    with open(w('out', 'loss.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
    db = votes.connect(w('out', 'arena.db'))
    for k, vote in enumerate(['A', 'A', 'A', 'tie']):
        votes.add_vote(db, {'battle_id': f'j{k}', 'time': '2026-01-01T09:00:00+00:00', 'model_a': '微调模型',
                            'model_b': '预训练模型', 'vote': vote, 'voter': 'rules', 'voter_kind': 'judge:rules'})
    votes.add_vote(db, {'battle_id': 'h0', 'time': '2026-01-01T09:00:00+00:00', 'model_a': '微调模型',
                        'model_b': '预训练模型', 'vote': 'B', 'voter': '张三'})  # a person's: not on the judge's board
    db.close()
    write_json(w('out', 'arena.db.calibration.json'), {'judge:rules': CALIBRATION})
    return str(work)


def section(text, title):
    """The text of one '## title' section of the report."""
    assert f'\n## {title}\n' in text, f'no section {title!r} in:\n{text}'
    return text.split(f'\n## {title}\n', 1)[1].split('\n## ', 1)[0]


def test_every_section_holds_its_files_figures_and_follows_a_change(tmp_path):
    work = make_run(tmp_path / 'run')
    proc = run_script(['report.py', f'--work={work}'])
    path = os.path.join(work, 'out', 'report.md')
    assert proc.stdout.strip().endswith(f'wrote {path}')
    text = open(path, encoding='utf-8').read()
    assert 'Not run' not in text and 'Could not be read' not in text

    assert '| 2 | 3 | 17 |' in section(text, 'Corpus')  # two files, three articles, 9 + 5 + 3 characters
    tok = section(text, 'Tokenizer')
    assert '| name | people8k |' in tok and '| eot_token | 8190 |' in tok and '| trained_on | articles 19484' in tok
    assert 'Compression on the val split: block_size 256' in tok
    assert '| tokens_per_char | 2.191 | 0.6843 |' in tok and '| bytes_per_token | 1.369 | 4.383 |' in tok
    data = section(text, 'Prepared data')
    assert '| rows (train / val) | 8,717 / 96 |' in data and '| chars (train / val) | 1,700,001 / 90,370 |' in data
    assert '| fill_ratio | 0.6736 |' in data and '| skipped | no_period 10,671 |' in data
    assert '| pairs | 7,732 |' in data and '| skipped | too_long 4,212 |' in data
    models = section(text, 'Models and configs')
    assert '| parameters | 43 | 43 |' in models  # 10x4 tied embedding counted once, plus 3
    assert '| iter_num | 500 | 313 |' in models and '| training time | 6.7 min | 6.7 min |' in models
    assert '| learning_rate | 0.002 | 0.001 |' in models and '| seed | 1337 | 1337 |' in models
    training = section(text, 'Training')
    assert '![loss curves](loss.png)' in training
    assert '| pretrain | 9.1234 → 4.5678 | 9.2234 → 4.6678 | 4.6678 at 20 | 2 | 20 | 40,640 | 18 s |' in training
    assert '| sft | 3.6123 → 1.2345 |' in training
    ppl = section(text, 'Perplexity and bits per character (val split)')
    assert '| bits_per_char | 5.831 |  |' in ppl and '| unigram_bits_per_char | 9.532 |  |' in ppl
    assert '| ppl | 22.13 | 21.07 |' in ppl and '| unigram_ppl | 129.4 | 173.2 |' in ppl
    rouge = section(text, 'Rouge-L of the fine-tuned model')
    assert '| n | 50 |' in rouge and '| f | 0.8123 |' in rouge and '| median_f | 0.9001 |' in rouge
    assert '| repeat_4gram_share | 0.04 |' in rouge and '| distinct_2 | 0.8765 |' in rouge
    examples = rouge.split('| Question | Answer | Prediction | Rouge-L F |', 1)[1]
    shown = [q for q, *_ in ROUGE_ROWS if q in examples]
    assert shown == [ROUGE_ROWS[i][0] for i in (0, 2, 3, 4, 6)]  # best to worst, evenly spread
    assert '| 春节吃什么？ ## | 饺子 | 饺\\|子 ⏎ 汤 | 0.5 |' in examples  # a pipe or newline keeps the table
    judged = section(text, 'The automatic judge')
    assert '  reference vs corrupted  5/6 picked the reference in both orders (83%: truncated 2/2, shuffled 1/2, ' \
           'other answer 2/2)' in judged
    assert 'verdict: judge:rules is TRUSTED' in judged and 'agreement not checked (needs 10)' in judged
    assert '| 微调模型 | ' in judged and ' | 4 | 3 / 1 / 0 |' in judged and ' | 4 | 0 / 1 / 3 |' in judged
    generations = section(text, 'Held-out questions, examples.csv and loops')
    assert f'| sft: held-out questions (`{work}/out/sft/rougeL_val.json`) | 25 | 0 | 0.1298 | 0.96 |  | 0 |' in generations
    assert (f'| pretrain: examples.csv continuations (`{work}/out/pretrain/examples.json`) | 20 |  |  |  | 0.25 | 0.05 '
            '| 0.5731 | presence 1, frequency 0.5 |') in generations
    assert '| 春节前夕， |  | 北京市人民政府负责管理 |' in generations
    samples = section(text, 'Samples')
    assert 'pretrain说：中国人民站起来了。' in samples and 'sft说：中国人民站起来了。' in samples
    times = section(text, 'Time per stage')
    assert '| pretrain | 6.7 min | 60% |' in times and '| all | 11.1 min | 100% |' in times
    summary = section(text, 'Summary')
    assert '- pretrain: 5.831 bits per character on val (unigram 9.532)' in summary
    assert '- sft: 21.07 perplexity on val (unigram 173.2)' in summary  # no bits/char in its file: perplexity
    assert '- sft: Rouge-L F mean 0.8123, median 0.9001 on 50 questions' in summary
    assert '- sft: Rouge-L F median 0, mean 0.1298 on 25 held-out questions' in summary
    assert ('- pretrain: 5% of 20 examples.csv continuations repeat 4 characters three times (greedy, presence 1, '
            'frequency 0.5)') in summary
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    machine = section(text, 'Code and machine')
    assert commit and commit in machine and f'{os.cpu_count()} cores' in machine
    assert torch.__version__ in machine and platform.platform() in machine

    # the run changes: a new log line, a new evaluation, a new timing; the report follows the files
    with open(os.path.join(work, 'out', 'pretrain', 'log.jsonl'), 'a', encoding='utf-8') as f:
        f.write(json.dumps({'iter': 30, 'split': 'val', 'loss': 3.9876, 'tokens': 60960, 'elapsed': 25.0}) + '\n')
    ppl_path = os.path.join(work, 'out', 'pretrain', 'perplexity_val.json')
    write_json(ppl_path, {**json.load(open(ppl_path, encoding='utf-8')), 'bits_per_char': 4.4321})
    write_lines(os.path.join(work, 'out', 'timings.jsonl'), [{'stage': 'pretrain', 'seconds': 77}])
    run_script(['report.py', f'--work={work}'])
    text = open(path, encoding='utf-8').read()
    assert '| pretrain | 9.1234 → 4.5678 | 9.2234 → 3.9876 | 3.9876 at 30 | 3 | 30 | 60,960 | 25 s |' in text
    assert '| bits_per_char | 4.432 |  |' in text and '5.831' not in text
    assert '| pretrain | 77 s | 100% |' in section(text, 'Time per stage') and '11.1 min' not in text


def test_missing_files_say_what_was_not_run(tmp_path):
    empty = tmp_path / 'nothing'
    out = tmp_path / 'elsewhere' / 'r.md'
    proc = run_script(['report.py', f'--work={empty}', f'--output={out}'])
    assert proc.stdout.strip().endswith(f'wrote {out}')
    text = out.read_text(encoding='utf-8')
    for missing in ('data/people_daily/*.jsonl', 'data/tokenizer/tokenizer.json', 'data/sample/meta.json',
                    'data/sft/meta.json', 'out/pretrain/ckpt.pt', 'out/sft/ckpt.pt', 'out/loss.png',
                    'out/pretrain/log.jsonl', 'out/sft/perplexity_val.json', 'out/sft/rougeL.json',
                    'out/sft/samples.txt', 'out/timings.jsonl', 'out/sft/rougeL_val.json',
                    'out/arena.db.calibration.json'):
        assert f'_Not run: `{empty}/{missing}` is missing' in text, missing
    assert '_Nothing evaluated yet' in section(text, 'Summary') and 'Could not be read' not in text

    # one file gone, one torn: only their own lines change, the rest of the report stands
    work = make_run(tmp_path / 'run')
    os.remove(os.path.join(work, 'out', 'sft', 'rougeL.csv'))
    with open(os.path.join(work, 'out', 'pretrain', 'perplexity_val.json'), 'w', encoding='utf-8') as f:
        f.write('{"ppl": 22.')
    run_script(['report.py', f'--work={work}', f'--output={out}'])
    text = out.read_text(encoding='utf-8')
    assert f'_Not run: `{work}/out/sft/rougeL.csv` is missing' in text and '| f | 0.8123 |' in text
    assert 'Could not be read: JSONDecodeError' in section(text, 'Perplexity and bits per character (val split)')
    assert '![loss curves](../run/out/loss.png)' in text  # linked relative to where the report is


def test_a_linked_corpus_file_counts_once(tmp_path):
    """The corpus figures are those of the files data/prepare.py reads: each real file once, links or not."""
    corpus = tmp_path / 'run' / 'data' / 'people_daily'
    write_lines(str(corpus / 'real' / 'a.jsonl'), [{'text': '北京是中国的首都。'}, {'text': '长江很长。'}])
    for i in range(19):
        os.symlink(corpus / 'real' / 'a.jsonl', corpus / f'link{i}.jsonl')
    os.symlink(corpus / 'real', corpus / 'again')  # a linked folder holding the same file
    text = report.make_report(report.Settings(str(tmp_path / 'run'), '', 'data/people_daily', 'data/sample',
                                              'data/sft', 'data/tokenizer', 'out/pretrain', 'out/sft', 'out/arena.db',
                                              5, 12, 800))
    assert f'| {corpus} | 1 | 2 | 14 |' in section(text, 'Corpus')


def test_examples_spread_over_the_ranking_and_numbers_read_well():
    rows = [{'f': str(f)} for f in (0.2, 1.0, 0.0, 0.5, 0.7)]
    assert [r['f'] for r in report.pick_examples(rows, 3)] == ['1.0', '0.5', '0.0']
    assert [r['f'] for r in report.pick_examples(rows, 9)] == ['1.0', '0.7', '0.5', '0.2', '0.0']
    assert report.pick_examples(rows, 0) == []
    assert [report.fmt(v) for v in (1841657, 0.673629, 3.0, 1234567.8, None, {'a': 1, 'b': 0.5})] == \
        ['1,841,657', '0.6736', '3', '1,234,568', '', 'a 1, b 0.5']
    assert report.flatten({'x': 1, 'g': {'t': 2.5, 's': 'no'}, 'flag': True}) == {'x': 1, 'g.t': 2.5}
    assert report.seconds(0) == '< 1 s' and report.seconds(59) == '59 s' and report.seconds(785) == '13.1 min'

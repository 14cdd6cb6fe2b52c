"""evaluations-perplexity.py and evaluations-RougeL.py on tiny datasets and tiny checkpoints written here."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import A_TOKEN, EOT_TOKEN, GPT2, PAD_TOKEN, SENTENCES, load_script, run_script
from data_utils import write_prepared

BLOCK = 64  # the tiny checkpoints' block_size


ppl_script = load_script('evaluations-perplexity.py')
rouge_script = load_script('evaluations-RougeL.py')

QA = [('北京是哪个国家的首都', '北京是中国的首都。'),
      ('熊猫喜欢吃什么', '熊猫喜欢吃竹子。'),
      ('长江是中国最长的什么', '长江是中国最长的河流。')]


def pad(ids, block=BLOCK):
    assert len(ids) <= block
    return ids + [PAD_TOKEN] * (block - len(ids))


def write_dataset(folder, kind, splits, block=BLOCK, tokenizer=None):
    """A prepared dataset as the prepare scripts write it (README: Formats): {split}.bin of uint16 rows, meta.json."""
    def write_rows(files):
        for split, rows in splits.items():
            files[split].write(np.asarray(rows, dtype=np.uint16).tobytes())
        return {'kind': kind, 'tokenizer': dict(GPT2.facts(), path=None, **(tokenizer or {})), 'block_size': block,
                'dtype': 'uint16', 'rows': {s: len(r) for s, r in splits.items()}}
    write_prepared(str(folder), write_rows, splits=tuple(splits))
    return str(folder)


def pretrain_rows(texts):
    """Each text, EOT, PAD; and the targets the loss counts: every text token after the first."""
    rows, targets = [], []
    for t in texts:
        ids = GPT2.encode(t)
        rows.append(pad(ids + [EOT_TOKEN]))
        targets.append(list(range(1, len(ids))))  # row positions whose token is a counted target
    return rows, targets


def sft_rows(pairs):
    """question ## answer EOT PAD; counted targets: the answer tokens and the EOT after them."""
    rows, targets = [], []
    for q, a in pairs:
        q_ids, a_ids = GPT2.encode(q), GPT2.encode(a)
        row = q_ids + [A_TOKEN] + a_ids + [EOT_TOKEN]
        rows.append(pad(row))
        first = len(q_ids) + 1
        targets.append(list(range(first, first + len(a_ids) + 1)))
    return rows, targets


def hand_loss(model, rows, targets):
    """Mean NLL of the counted targets, one row and one position at a time through log_softmax."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row, positions in zip(rows, targets):
            idx = torch.tensor([row[:-1]])
            logits, _ = model(idx, torch.tensor([row[1:]]))  # with targets: logits at every position
            log_probs = torch.log_softmax(logits[0].double(), dim=-1)
            for p in positions:  # row[p] is predicted from row[:p], i.e. by logits at position p-1
                total -= log_probs[p - 1, row[p]].item()
                count += 1
    return total / count, count


# ----------------------------------------------------------------------------- perplexity

def test_perplexity_pretrain_equals_exp_of_hand_loss(tiny_checkpoint, tmp_path):
    from checkpoint import load_checkpoint
    train, _ = pretrain_rows(SENTENCES)
    texts = ['北京是中国的首都。熊猫喜欢吃竹子。', '长江是中国最长的河流。']
    val, targets = pretrain_rows(texts)
    data = write_dataset(tmp_path / 'data', 'pretrain', {'train': train, 'val': val})
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    expected_loss, n = hand_loss(model, val, targets)

    report = ppl_script.evaluate(tiny_checkpoint, data, 'val', batch_size=1, device='cpu')
    assert report['tokens'] == n
    assert report['rows'] == 2
    assert report['loss'] == pytest.approx(expected_loss, rel=1e-5)
    assert report['ppl'] == pytest.approx(math.exp(expected_loss), rel=1e-4)
    # bits per character by hand: the first token of a row is never a target; GPT-2 spends two tokens on
    # 北 (bytes e5 8c | 97) and on 长 (e9 | 95 bf), so the targets hold every character but the first,
    # and every byte but the first token's 2 and 1
    assert [GPT2.token_bytes(GPT2.encode(t)[0]) for t in texts] == [b'\xe5\x8c', b'\xe9']
    chars, n_bytes = len(texts[0]) - 1 + len(texts[1]) - 1, sum(len(t.encode()) for t in texts) - 3
    assert (report['chars'], report['bytes']) == (chars, n_bytes)
    assert report['bits_per_char'] == pytest.approx(expected_loss * n / math.log(2) / chars, rel=1e-5)
    assert report['bits_per_byte'] == pytest.approx(expected_loss * n / math.log(2) / n_bytes, rel=1e-5)

    # the script end to end: printed, and the JSON written where asked
    out = tmp_path / 'ppl.json'
    proc = run_script(['evaluations-perplexity.py', f'--out_dir={tiny_checkpoint}', f'--data_dir={data}',
                       '--split=val', '--batch_size=2', '--device=cpu', f'--output={out}'])
    written = json.loads(out.read_text(encoding='utf-8'))
    assert written['ppl'] == pytest.approx(math.exp(expected_loss), rel=1e-4)
    assert written['tokens'] == n and written['kind'] == 'pretrain'
    assert written['data'] == os.path.join(data, 'val.bin')
    assert f"{written['ppl']:.2f}" in proc.stdout and 'unigram baseline' in proc.stdout


def test_perplexity_sft_counts_answers_only(tiny_checkpoint, tmp_path):
    from checkpoint import load_checkpoint
    rows, targets = sft_rows(QA)
    data = write_dataset(tmp_path / 'sft', 'sft', {'train': rows, 'val': rows})
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    expected_loss, n = hand_loss(model, rows, targets)
    report = ppl_script.evaluate(tiny_checkpoint, data, 'val', batch_size=2, device='cpu')
    assert report['tokens'] == n == sum(len(t) for t in targets)
    assert report['loss'] == pytest.approx(expected_loss, rel=1e-5)
    assert report['ppl'] == pytest.approx(math.exp(expected_loss), rel=1e-4)
    # answers are encoded on their own, so their targets hold exactly their characters; the EOT holds none
    answer_chars = sum(len(a) for _, a in QA)
    assert report['chars'] == answer_chars
    assert report['bits_per_char'] == pytest.approx(expected_loss * n / math.log(2) / answer_chars, rel=1e-5)
    assert report['unigram_bits_per_char'] == pytest.approx(report['unigram_loss'] * n / math.log(2) / answer_chars)
    # the same rows read as pretrain rows count the question and ## too: more tokens, another loss
    pre = write_dataset(tmp_path / 'as_pretrain', 'pretrain', {'train': rows, 'val': rows})
    as_pretrain = ppl_script.evaluate(tiny_checkpoint, pre, 'val', device='cpu')
    assert as_pretrain['tokens'] == n - len(QA) + sum(len(GPT2.encode(q)) for q, _ in QA)
    assert as_pretrain['loss'] != pytest.approx(report['loss'])


def test_unigram_baseline_and_max_batches(tiny_checkpoint, tmp_path):
    train, train_targets = pretrain_rows(SENTENCES)
    val, val_targets = pretrain_rows(['熊猫是中国的国宝。', '北京有很多名胜古迹。', '人们在春节吃饺子。'])
    data = write_dataset(tmp_path / 'data', 'pretrain', {'train': train, 'val': val})
    counts = {}
    for row, positions in zip(train, train_targets):
        for p in positions:
            counts[row[p]] = counts.get(row[p], 0) + 1
    total = sum(counts.values())
    scored = list(zip(val, val_targets))[:2]  # max_batches=2 of batch_size=1: the first two rows only
    nll = [-math.log((counts.get(row[p], 0) + 1) / (total + 50257)) for row, ps in scored for p in ps]
    report = ppl_script.evaluate(tiny_checkpoint, data, 'val', batch_size=1, max_batches=2, device='cpu')
    assert report['rows'] == 2 and report['tokens'] == len(nll)
    assert report['unigram_ppl'] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-9)
    # the memorised model knows these sentences far better than word counts do
    assert report['ppl'] < report['unigram_ppl'] / 10


def test_perplexity_refuses_mismatched_data(tiny_checkpoint, tmp_path):
    rows, _ = pretrain_rows(SENTENCES)
    short = [r[:32] for r in rows]
    data = write_dataset(tmp_path / 'b32', 'pretrain', {'train': short, 'val': short}, block=32)
    proc = run_script(['evaluations-perplexity.py', f'--out_dir={tiny_checkpoint}', f'--data_dir={data}',
                       '--device=cpu'], check=False)
    assert proc.returncode != 0
    assert 'block_size=32' in proc.stderr and 'block_size=64' in proc.stderr and 'meta.json' in proc.stderr
    assert not os.path.exists(os.path.join(tiny_checkpoint, 'perplexity_val.json'))

    other = write_dataset(tmp_path / 'tok', 'pretrain', {'train': rows, 'val': rows},
                          tokenizer={'kind': 'trained', 'name': 'wiki-8192', 'ranks_sha256': 'ab' * 32})
    with pytest.raises(ValueError, match=r"tokenizer mismatch: .*meta.json was made with trained 'wiki-8192' "
                                         r"\(sha256 abababababab.*ckpt.pt with gpt2 'gpt2'"):
        ppl_script.evaluate(tiny_checkpoint, other, 'val', device='cpu')
    other = write_dataset(tmp_path / 'eot', 'pretrain', {'train': rows, 'val': rows}, tokenizer={'eot_token': 100257})
    with pytest.raises(ValueError, match=r"differ in eot_token"):
        ppl_script.evaluate(tiny_checkpoint, other, 'val', device='cpu')


# ----------------------------------------------------------------------------- Rouge-L scoring

def test_rouge_l_on_characters():
    scorer = rouge_script.make_scorer()
    seed_example = rouge_script.rouge_l(scorer, '羊侃的字是祖忻。', '羊侃的字是公祖。')
    assert seed_example == {'precision': 0.875, 'recall': 0.875, 'f': 0.875}  # LCS 7 of 8 characters
    assert rouge_script.rouge_l(scorer, '熊猫喜欢吃竹子。', '熊猫喜欢吃竹子。')['f'] == 1.0
    assert rouge_script.rouge_l(scorer, '熊猫喜欢吃竹子。', '长江流经许多省份')['f'] == 0.0
    # whitespace is not a character that counts; precision and recall differ with lengths
    assert rouge_script.rouge_l(scorer, '北京 是 首都', '北京是首都')['f'] == 1.0
    assert rouge_script.rouge_l(scorer, '北京是中国的首都', '北京') == pytest.approx(
        {'precision': 1.0, 'recall': 0.25, 'f': 0.4})
    # why the default tokenizer cannot be used: it scores the seed example 0
    from rouge_score import rouge_scorer
    assert rouge_scorer.RougeScorer(['rougeL']).score('羊侃的字是祖忻。', '羊侃的字是公祖。')['rougeL'].fmeasure == 0


def test_read_items_formats_and_errors(tmp_path):
    path = tmp_path / 'items.jsonl'
    path.write_text('{"prompt": "北京是", "reference": "中国的首都。"}\n\n'
                    '{"question": "熊猫喜欢吃什么", "answer": "竹子。", "id": 7}\n', encoding='utf-8')
    items = rouge_script.read_items(str(path))
    assert items == [{'id': 0, 'prompt': '北京是', 'reference': '中国的首都。'},
                     {'id': 7, 'prompt': '熊猫喜欢吃什么 ##', 'reference': '竹子。'}]
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"question": "a", "answer": "b"}\n{"question": "熊猫"}\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: no 'answer'"):
        rouge_script.read_items(str(bad))
    bad.write_text('{"prompt": "a", "reference": "b"}\nnot json\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not JSON"):
        rouge_script.read_items(str(bad))


def test_items_from_rows_cut_prompts(tmp_path):
    rows, _ = sft_rows(QA)
    sft = write_dataset(tmp_path / 'sft', 'sft', {'train': rows[1:], 'val': rows})
    assert rouge_script.items_from_rows(sft, 1, split='train')[0]['reference'] == QA[1][1]  # the train split's rows
    items = rouge_script.items_from_rows(sft, 2)
    assert [(i['prompt'], i['reference']) for i in items] == [(q + ' ##', a) for q, a in QA[:2]]
    rows, _ = pretrain_rows(['北京是中国的首都。'])
    pre = write_dataset(tmp_path / 'pre', 'pretrain', {'train': rows, 'val': rows})
    assert rouge_script.items_from_rows(pre, 5, 0.5) == [{'id': 0, 'prompt': '北京是中', 'reference': '国的首都。'}]


# ----------------------------------------------------------------------------- Rouge-L end to end

def test_rouge_script_on_sft_pairs(tiny_checkpoint, tmp_path):
    from engine import encode_prompt
    pairs = tmp_path / 'sft_saves.jsonl'
    with open(pairs, 'w', encoding='utf-8') as f:
        for i, (q, a) in enumerate(QA):
            f.write(json.dumps({'question': q, 'answer': a, 'id': 10 + i}, ensure_ascii=False) + '\n')
    prefix = tmp_path / 'report' / 'rougeL'
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', f'--input={pairs}',
                       '--max_new_tokens=20', '--limit=2', '--device=cpu', f'--output_prefix={prefix}'])
    with open(f'{prefix}.csv', encoding='utf-8') as f:
        table = list(csv.DictReader(f))
    report = json.loads(open(f'{prefix}.json', encoding='utf-8').read())
    assert len(table) == 2 and report['summary']['n'] == 2  # --limit
    assert [r['id'] for r in table] == ['10', '11']
    assert [r['reference'] for r in table] == [QA[0][1], QA[1][1]]
    # asked as questions: the engine encodes `question ##` as the SFT rows do, question + [A_TOKEN]
    assert [r['prompt'] for r in table] == [QA[0][0] + ' ##', QA[1][0] + ' ##']
    assert encode_prompt(GPT2, table[0]['prompt']) == GPT2.encode(QA[0][0]) + [A_TOKEN]
    scorer = rouge_script.make_scorer()
    for row, item in zip(table, report['items']):
        assert row['prediction'] == item['prediction']
        assert float(row['f']) == pytest.approx(rouge_script.rouge_l(scorer, row['reference'], row['prediction'])['f'])
    assert report['summary']['f'] == pytest.approx((float(table[0]['f']) + float(table[1]['f'])) / 2)
    assert report['summary']['temperature'] == 0.0
    assert f"Question:   {QA[0][0]} ##\nAnswer:     {QA[0][1]}\nPrediction: " in proc.stdout
    assert f"F {report['summary']['f']:.4f}" in proc.stdout


def test_rouge_script_from_rows_scores_each_item(tiny_checkpoint, tmp_path):
    texts = ['北京是中国的首都。北京有很多名胜古迹。', '熊猫是中国的国宝。熊猫喜欢吃竹子。']
    rows, _ = pretrain_rows(texts)
    data = write_dataset(tmp_path / 'data', 'pretrain', {'train': rows, 'val': rows})
    prefix = tmp_path / 'r'
    run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', '--from_rows=5', f'--data_dir={data}',
                '--max_new_tokens=30', '--device=cpu', f'--output_prefix={prefix}'])
    report = json.loads(open(f'{prefix}.json', encoding='utf-8').read())
    assert [item['prompt'] + item['reference'] for item in report['items']] == texts
    # the model memorised these articles: greedy decoding finishes each one exactly, then stops at EOT
    assert [item['prediction'] for item in report['items']] == [item['reference'] for item in report['items']]
    assert [item['f'] for item in report['items']] == [1.0, 1.0] and report['summary']['f'] == 1.0


def test_rouge_script_needs_one_source(tiny_checkpoint, tmp_path):
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}'], check=False)
    assert proc.returncode != 0 and '--input' in proc.stderr and '--from_rows' in proc.stderr
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', '--from_rows=3'], check=False)
    assert proc.returncode != 0 and '--data_dir' in proc.stderr


def test_rouge_script_on_a_csv_of_prompts_scores_only_what_has_a_reference(tiny_checkpoint, tmp_path):
    table = tmp_path / 'examples.csv'
    table.write_text('prompt,reference,kind\n北京是中国的,首都。,continuation\n熊猫喜欢吃,,continuation\n'
                     '熊猫喜欢吃什么##,竹子。,trained\n', encoding='utf-8')
    prefix = tmp_path / 'ex'
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', f'--input={table}', '--prompts=continuations',
                       '--max_new_tokens=20', '--device=cpu', f'--output_prefix={prefix}'])
    report = json.loads(open(f'{prefix}.json', encoding='utf-8').read())
    assert [i['prompt'] for i in report['items']] == ['北京是中国的', '熊猫喜欢吃']  # the question is left out
    assert report['summary']['n'] == 2 and report['summary']['n_scored'] == 1
    assert report['items'][1]['f'] is None and report['summary']['f'] == report['items'][0]['f']
    assert report['items'][0]['prediction'].startswith('首都。北京有')  # the tiny model memorised SENTENCES[0]
    assert 'Rouge-L over 1 items' in proc.stdout
    bad = tmp_path / 'bad.csv'
    bad.write_text('question\nx\n', encoding='utf-8')
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', f'--input={bad}'], check=False)
    assert proc.returncode != 0 and "no 'prompt' column" in proc.stderr
    # a row that lost its empty reference field would read its kind as the reference: refused with its line
    bad.write_text('prompt,reference,kind\n北京是中国的,首都。,continuation\n春节前夕，,continuation\n', encoding='utf-8')
    proc = run_script(['evaluations-RougeL.py', f'--out_dir={tiny_checkpoint}', f'--input={bad}'], check=False)
    assert proc.returncode != 0 and f'{bad}:3: 2 fields, the header has 3 (prompt,reference,kind)' in proc.stderr

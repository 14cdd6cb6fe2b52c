"""The README's main command in quick mode, end to end: every stage runs for real, in order, on the sample corpus."""
import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import ROOT, free_port, run_script


def test_quick_main_command(tmp_path):
    work = tmp_path / 'work'
    env = dict(os.environ, MINIGPT_WORK=str(work), MINIGPT_API_PORT=str(free_port()),
               MINIGPT_ARENA_PORT=str(free_port()))
    proc = subprocess.run(['bash', 'run.sh', '--quick'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout[-4000:] + '\n' + proc.stderr[-4000:]
    assert proc.returncode == 0, log

    # the tokenizer trained on the corpus, and the rows made with it
    tok = json.loads((work / 'data' / 'tokenizer' / 'tokenizer.json').read_text(encoding='utf-8'))
    assert tok['kind'] == 'trained' and tok['n_vocab'] == 2048
    compression = tok['compression']  # even 2,048 ids (the quick mode's) use under half GPT-2's tokens
    assert compression['trained']['tokens_per_char'] < compression['gpt2']['tokens_per_char'] / 2
    meta = json.loads((work / 'data' / 'sample' / 'meta.json').read_text(encoding='utf-8'))
    assert meta['kind'] == 'pretrain' and meta['block_size'] == 128 and meta['rows']['train'] > 10000
    assert meta['tokenizer']['ranks_sha256'] == tok['ranks_sha256']
    assert (work / 'data' / 'sample' / 'train.bin').stat().st_size == meta['rows']['train'] * 128 * 2
    rows = np.fromfile(work / 'data' / 'sample' / 'train.bin', dtype=np.uint16).reshape(-1, 128)
    assert (rows == tok['eot_token']).sum(axis=1).min() == 1  # exactly one EOT per pretrain row
    assert rows.max() == tok['pad_token'] == 2048

    for stage in ('pretrain', 'sft'):
        out = work / 'out' / stage
        assert (out / 'ckpt.pt').exists()
        logged = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
        assert logged and {'iter', 'split', 'loss', 'lr', 'tokens', 'elapsed'} <= set(logged[0])
        ppl = json.loads((out / 'perplexity_val.json').read_text())
        assert ppl['ppl'] > 1 and ppl['bits_per_char'] > 0 and ppl['tokenizer']['name'] == tok['name']
    pairs = [json.loads(line) for line in (work / 'sft' / 'sft_saves.jsonl').read_text(encoding='utf-8').splitlines()]
    assert len(pairs) > 20 and all({'question', 'answer', 'id'} <= set(p) for p in pairs)
    sft_meta = json.loads((work / 'data' / 'sft' / 'meta.json').read_text(encoding='utf-8'))
    for name, split in (('rougeL', 'train'), ('rougeL_val', 'val')):
        summary = json.loads((work / 'out' / 'sft' / f'{name}.json').read_text(encoding='utf-8'))['summary']
        assert summary['n'] == min(5, sft_meta['rows'][split]) and summary['source'].endswith(f'{split}.bin')
        assert {'median_f', 'repeat_4gram_3x_share', 'stopped_at_eot_share'} <= set(summary)
    examples = json.loads((work / 'out' / 'pretrain' / 'examples.json').read_text(encoding='utf-8'))
    with open(os.path.join(ROOT, 'examples.csv'), encoding='utf-8', newline='') as f:
        continuations = [r['prompt'] for r in csv.DictReader(f) if r['kind'] == 'continuation']
    assert [i['prompt'] for i in examples['items']] == continuations  # every one, and no question among them
    assert (work / 'out' / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    samples = (work / 'out' / 'pretrain' / 'samples.txt').read_text(encoding='utf-8')
    assert '中国人民' in samples and '\ufffd' not in samples

    # the run's report, made from the run's own files
    report = (work / 'out' / 'report.md').read_text(encoding='utf-8')
    assert 'Not run' not in report and 'Could not be read' not in report, report
    assert f"{ppl['bits_per_char']:.3g}" in report or f"{ppl['bits_per_char']:.2f}" in report
    timings = [json.loads(line) for line in (work / 'out' / 'timings.jsonl').read_text().splitlines()]
    assert [t['stage'] for t in timings] == ['fetch', 'tokenizer', 'prepare', 'pretrain', 'sample', 'sft_data',
                                            'finetune', 'evaluate', 'judge', 'plot', 'export', 'serve']
    # the judge voted in the arena's store, marked as the judge's, and its calibration is in the report
    import votes
    judged = votes.records(votes.connect(str(work / 'out' / 'arena.db')))
    assert len(judged) == 4 and {r['voter_kind'] for r in judged} == {'judge:rules'}
    assert {frozenset((r['model_a'], r['model_b'])) for r in judged} == {frozenset(('微调模型 (本地)', '预训练模型 (本地)'))}
    calibration = json.loads((work / 'out' / 'arena.db.calibration.json').read_text(encoding='utf-8'))
    assert calibration['judge:rules']['consistency']['share'] == 1.0
    assert 'verdict: judge:rules is TRUSTED' in report
    # the exports exist (test_export proves they load)
    assert (work / 'export' / 'minigpt-sft' / 'model.safetensors').exists()
    assert (work / 'export' / 'minigpt-sft.gguf').read_bytes()[:4] == b'GGUF'

    assert '"status": "ok"' in proc.stdout or '"status":"ok"' in proc.stdout  # the API answered /health
    assert 'arena answered' in proc.stdout


def test_examples_csv_questions_are_trained_or_held_out(tmp_path):
    """examples.csv's 'trained' questions are pairs of the SFT train split with its answer, its 'unseen' ones of val."""
    sys.path.insert(0, os.path.join(ROOT, 'data'))
    from prepare_sft import in_val, val_fraction
    run_script(['data/fetch_sample.py', f'--out_dir={tmp_path / "corpus"}'])  # the main command's corpus (cached)
    run_script(['sft/sft_generate.py', '--backend=rules', f'--input_dir={tmp_path / "corpus"}',
                f'--output={tmp_path / "pairs.jsonl"}', f'--rejects={tmp_path / "rejects.jsonl"}'])
    pairs = {}
    for line in (tmp_path / 'pairs.jsonl').read_text(encoding='utf-8').splitlines():
        pair = json.loads(line)
        pairs.setdefault(pair['question'], []).append((pair['answer'], in_val(pair['id'], val_fraction)))
    with open(os.path.join(ROOT, 'examples.csv'), encoding='utf-8', newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['kind'] != 'continuation']
    assert {r['kind'] for r in rows} == {'trained', 'unseen'} and all(r['prompt'].endswith('##') for r in rows)
    for r in rows:
        question = r['prompt'].removesuffix('##').strip()
        assert (r['reference'], r['kind'] == 'unseen') in pairs.get(question, []), (r, pairs.get(question))


def test_a_taken_port_stops_the_main_command_before_any_stage(tmp_path):
    """An earlier run still serving holds the arena's port: said at once, not after the training."""
    work = tmp_path / 'work'
    with socket.socket() as held:
        held.bind(('127.0.0.1', 0))
        held.listen()
        port = held.getsockname()[1]
        env = dict(os.environ, MINIGPT_WORK=str(work), MINIGPT_API_PORT=str(free_port()), MINIGPT_ARENA_PORT=str(port))
        proc = subprocess.run(['bash', 'run.sh', '--quick'], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert f'error: port {port} is taken (Address already in use): is an earlier bash run.sh still serving?' in proc.stderr
    assert not (work / 'out' / 'timings.jsonl').exists() and '== 1/12' not in proc.stdout

"""The README's main command in quick mode, end to end: every stage runs for real, in order, on the sample corpus."""
import json
import os
import subprocess

import numpy as np

from conftest import ROOT, free_port


def test_quick_main_command(tmp_path):
    work = tmp_path / 'work'
    env = dict(os.environ, MINIGPT_WORK=str(work), MINIGPT_API_PORT=str(free_port()),
               MINIGPT_ARENA_PORT=str(free_port()))
    proc = subprocess.run(['bash', 'run.sh', '--quick'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=480)
    log = proc.stdout[-4000:] + '\n' + proc.stderr[-4000:]
    assert proc.returncode == 0, log

    meta = json.loads((work / 'data' / 'sample' / 'meta.json').read_text(encoding='utf-8'))
    assert meta['kind'] == 'pretrain' and meta['block_size'] == 128 and meta['rows']['train'] > 1000
    assert (work / 'data' / 'sample' / 'train.bin').stat().st_size == meta['rows']['train'] * 128 * 2
    rows = np.fromfile(work / 'data' / 'sample' / 'train.bin', dtype=np.uint16).reshape(-1, 128)
    assert (rows == 50256).sum(axis=1).min() == 1  # exactly one EOT per pretrain row

    for stage in ('pretrain', 'sft'):
        out = work / 'out' / stage
        assert (out / 'ckpt.pt').exists()
        logged = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
        assert logged and {'iter', 'split', 'loss', 'lr', 'tokens', 'elapsed'} <= set(logged[0])
        ppl = json.loads((out / 'perplexity_val.json').read_text())
        assert ppl['ppl'] > 1
    pairs = [json.loads(line) for line in (work / 'sft' / 'sft_saves.jsonl').read_text(encoding='utf-8').splitlines()]
    assert len(pairs) > 20 and all({'question', 'answer', 'id'} <= set(p) for p in pairs)
    assert (work / 'out' / 'sft' / 'rougeL.csv').exists()
    assert (work / 'out' / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    samples = (work / 'out' / 'pretrain' / 'samples.txt').read_text(encoding='utf-8')
    assert '中国人民' in samples and '\ufffd' not in samples
    assert '"status": "ok"' in proc.stdout or '"status":"ok"' in proc.stdout  # the API answered /health
    assert 'arena answered' in proc.stdout

"""sample.py as a user runs it, on the tiny checkpoint that memorised conftest.SENTENCES."""
import torch

from conftest import SENTENCES, run_script as _run_script
from engine import generate_text
from checkpoint import load_checkpoint

ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # one-token steps gain nothing from threads; spinning ones slow a busy machine


def run_script(args, **kwargs):
    return _run_script(args, env=ONE_THREAD, **kwargs)

SEP = '\n---------------\n'


def test_sample_greedy_reproduces_sentence_stops_at_eot_and_prints_once(tiny_checkpoint):
    proc = run_script(['sample.py', f'--out_dir={tiny_checkpoint}', '--start=熊猫', '--num_samples=2',
                       '--max_new_tokens=200', '--temperature=0', '--device=cpu'], timeout=120)
    # without the stop at EOT, 200 tokens would run far past the sentence; greedy: one answer, not two equal ones
    assert proc.stdout == SENTENCES[2] + SEP
    assert 'greedy: one sample' in proc.stderr
    assert '\ufffd' not in proc.stdout


def test_sample_from_file_seeded_and_question_form(tiny_checkpoint, tmp_path):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('长江', encoding='utf-8')
    args = ['sample.py', f'--out_dir={tiny_checkpoint}', f'--start=FILE:{prompt}', '--num_samples=1',
            '--temperature=1.0', '--top_k=5', '--seed=3', '--max_new_tokens=40']
    first = run_script(args, timeout=120).stdout
    assert first.startswith('长江') and first.endswith(SEP) and '\ufffd' not in first
    # a question: the answer alone comes back, never the question
    answer = run_script(['sample.py', f'--out_dir={tiny_checkpoint}', '--start=长江 ##', '--num_samples=1',
                         '--temperature=0', '--max_new_tokens=20'], timeout=120).stdout
    assert answer.endswith(SEP) and not answer.startswith('长江') and '##' not in answer and '\ufffd' not in answer


def test_sample_passes_top_p_and_penalties_to_the_engine(tiny_checkpoint):
    settings = dict(temperature=1.5, top_p=0.9, presence_penalty=0.5, frequency_penalty=1.5)
    proc = run_script(['sample.py', f'--out_dir={tiny_checkpoint}', '--start=熊猫', '--num_samples=2', '--top_k=0',
                       '--seed=5', '--max_new_tokens=30', '--device=cpu', *[f'--{k}={v}' for k, v in settings.items()]],
                      timeout=120)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script ran: the same float sums, so the same draws
    try:
        model, tok, _ = load_checkpoint(tiny_checkpoint)
        want = [generate_text(model, tok, '熊猫', max_new_tokens=30, top_k=None, seed=5 + i, **settings) for i in range(2)]
        plain = generate_text(model, tok, '熊猫', max_new_tokens=30, top_k=None, seed=5, temperature=1.5)
    finally:
        torch.set_num_threads(n)
    assert proc.stdout == ''.join('熊猫' + w + SEP for w in want)
    assert want[0] != plain  # the settings changed the sample, so the comparison above means something


def test_sample_errors_are_clear(tmp_path, tiny_checkpoint):
    proc = run_script(['sample.py', f'--out_dir={tmp_path}'], check=False, timeout=60)
    assert proc.returncode != 0 and 'no checkpoint' in proc.stderr
    for arg, name in [('--top_p=1.5', 'top_p'), ('--presence_penalty=2.5', 'presence_penalty'),
                      ('--frequency_penalty=-3', 'frequency_penalty'), ('--temperature=-1', 'temperature')]:
        proc = run_script(['sample.py', f'--out_dir={tiny_checkpoint}', arg], check=False, timeout=60)
        assert proc.returncode != 0 and f'"{name}"' in proc.stderr and 'Traceback' not in proc.stderr, arg
    help_text = run_script(['sample.py', '--help'], timeout=60).stdout
    assert '--start=' in help_text and '--top_k=' in help_text and '--top_p=' in help_text
    assert '--presence_penalty=' in help_text and '--frequency_penalty=' in help_text

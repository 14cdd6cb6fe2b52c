"""sample.py as a user runs it, on the tiny checkpoint that memorised conftest.SENTENCES."""
from conftest import SENTENCES, run_script as _run_script

ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # one-token steps gain nothing from threads; spinning ones slow a busy machine


def run_script(args, **kwargs):
    return _run_script(args, env=ONE_THREAD, **kwargs)

SEP = '\n---------------\n'


def test_sample_greedy_reproduces_sentence_and_stops_at_eot(tiny_checkpoint):
    proc = run_script(['sample.py', f'--out_dir={tiny_checkpoint}', '--start=熊猫', '--num_samples=2',
                       '--max_new_tokens=200', '--temperature=0', '--device=cpu'], timeout=120)
    # without the stop at EOT, 200 tokens would run far past the sentence
    assert proc.stdout == (SENTENCES[2] + SEP) * 2
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


def test_sample_errors_are_clear(tmp_path):
    proc = run_script(['sample.py', f'--out_dir={tmp_path}'], check=False, timeout=60)
    assert proc.returncode != 0 and 'no checkpoint' in proc.stderr
    help_text = run_script(['sample.py', '--help'], timeout=60).stdout
    assert '--start=' in help_text and '--top_k=' in help_text

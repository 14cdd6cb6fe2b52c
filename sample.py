"""
Samples text from a trained checkpoint, printed as it is generated (whole characters only).

    python sample.py --out_dir=out/pretrain --start="中国人民" --num_samples=2 --max_new_tokens=60
    python sample.py --out_dir=out/sft --start="中国的首都是哪里？##" --temperature=0   # a question: answer only
    python sample.py --out_dir=out/pretrain --start=FILE:prompt.txt --seed=7 --device=cpu
    python sample.py --out_dir=out/pretrain --start="中国人民" --presence_penalty=1.0 --frequency_penalty=1.0   # no loops

A --start ending in ## is a question: the model sees encode(question) + [the answer separator] and only the
answer is printed. Otherwise the start text is printed followed by its continuation. Generation
stops at the end-of-text token or after max_new_tokens. Each sample uses seed + its index.
Sampling (engine.py, in this order): the presence/frequency penalties, OpenAI's, over the tokens generated
so far; then temperature, top_k, top_p. A temperature of 0 (or below engine.GREEDY_BELOW) is greedy and
gives one answer whatever --num_samples says, since every sample would be the same.
"""
import os
import sys

from engine import GREEDY_BELOW, check_sampling, encode_prompt, stream_text
from checkpoint import load_checkpoint
from model import pick_device

out_dir = 'out/pretrain'  # checkpoint folder (holds ckpt.pt)
start = '中国'  # prompt text, or FILE:path to read it from a file; ending in ## makes it a question
num_samples = 3  # samples to draw (one when greedy)
max_new_tokens = 225  # tokens generated per sample at most
temperature = 0.8  # 0 = greedy; higher = more random
top_k = 20  # sample among the k most likely tokens; 0 = all of them
top_p = 1.0  # then among the fewest most likely tokens whose probability reaches top_p; 1.0 = off
presence_penalty = 0.0  # -2..2: subtracted once from the logit of every token already generated; 0 = off
frequency_penalty = 0.0  # -2..2: subtracted per time a token was already generated; 0 = off
seed = 1337  # sample i uses seed + i
device = 'auto'  # cpu, cuda, mps, or auto
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())

if __name__ == '__main__':
    sys.stdout.reconfigure(encoding='utf-8')
    if start.startswith('FILE:'):
        try:
            with open(start[5:], encoding='utf-8') as f:
                start = f.read()
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f'error: --start={start}: {e}')
    try:
        if top_k < 0 or max_new_tokens < 1 or num_samples < 1:
            raise ValueError(f'need top_k >= 0, max_new_tokens >= 1 and num_samples >= 1 '
                             f'(got {top_k}, {max_new_tokens}, {num_samples})')
        check_sampling(temperature, top_k or None, top_p, presence_penalty, frequency_penalty)
        model, tok, _ = load_checkpoint(out_dir, pick_device(device))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    prompt_ids = encode_prompt(tok, start)
    if not prompt_ids:
        sys.exit('error: --start is empty; give some text to continue')
    question = start.rstrip().endswith('##')  # encode_prompt made it encode(question) + [the answer separator]
    if temperature < GREEDY_BELOW and num_samples > 1:
        print(f'temperature {temperature} is greedy: one sample, the other {num_samples - 1} would be the same',
              file=sys.stderr)
        num_samples = 1
    for i in range(num_samples):
        if not question:
            print(start, end='', flush=True)
        for piece in stream_text(model, tok, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k or None, top_p=top_p, presence_penalty=presence_penalty,
                                 frequency_penalty=frequency_penalty, seed=seed + i):
            print(piece, end='', flush=True)
        print('\n---------------', flush=True)

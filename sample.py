"""
Samples text from a trained checkpoint, printed as it is generated (whole characters only).

    python sample.py --out_dir=out/pretrain --start="中国人民" --num_samples=2 --max_new_tokens=60
    python sample.py --out_dir=out/sft --start="中国的首都是哪里？##" --temperature=0   # a question: answer only
    python sample.py --out_dir=out/pretrain --start=FILE:prompt.txt --seed=7 --device=cpu

A --start ending in ## is a question: the model sees encode(question) + [A_TOKEN] and only the
answer is printed. Otherwise the start text is printed followed by its continuation. Generation
stops at the end-of-text token or after max_new_tokens. Each sample uses seed + its index.
"""
import os
import sys

from engine import encode_prompt, stream_text
from model import load_checkpoint, pick_device

out_dir = 'out/pretrain'  # checkpoint folder (holds ckpt.pt)
start = '中国'  # prompt text, or FILE:path to read it from a file; ending in ## makes it a question
num_samples = 3  # samples to draw
max_new_tokens = 225  # tokens generated per sample at most
temperature = 0.8  # 0 = greedy; higher = more random
top_k = 20  # sample among the k most likely tokens; 0 = all of them
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
    if temperature < 0 or top_k < 0 or max_new_tokens < 1:
        sys.exit(f'error: need temperature >= 0, top_k >= 0 and max_new_tokens >= 1 '
                 f'(got {temperature}, {top_k}, {max_new_tokens})')
    model, _ = load_checkpoint(out_dir, pick_device(device))
    prompt_ids = encode_prompt(start)
    if not prompt_ids:
        sys.exit('error: --start is empty; give some text to continue')
    question = start.rstrip().endswith('##')  # encode_prompt made it encode(question) + [A_TOKEN]
    for i in range(num_samples):
        if not question:
            print(start, end='', flush=True)
        for piece in stream_text(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k or None, seed=seed + i):
            print(piece, end='', flush=True)
        print('\n---------------', flush=True)

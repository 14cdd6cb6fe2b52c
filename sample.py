"""
Samples text from a trained checkpoint, printed as it is generated (whole characters only).

    python sample.py --out_dir=out/pretrain --start="中国人民" --num_samples=2 --max_new_tokens=60
    python sample.py --out_dir=out/sft --start="中国的首都是哪里？##" --temperature=0   # a question: answer only
    python sample.py --out_dir=out/pretrain --start=FILE:prompt.txt --seed=7 --device=cpu
    python sample.py --out_dir=out/pretrain --start="中国人民" --presence_penalty=0 --frequency_penalty=0   # penalties off

A --start ending in ## is a question: the model sees encode(question) + [the answer separator] and only the
answer is printed. Otherwise the start text is printed followed by its continuation. Generation
stops at the end-of-text token or after max_new_tokens. Each sample uses seed + its index. The sampling
defaults are engine.Sampling()'s, the demo's, as on the server's /generate and in the arena.
Sampling (engine.py, in this order): the presence/frequency penalties, OpenAI's, over the tokens generated
so far; then temperature, top_k, top_p. A temperature of 0 (or below engine.GREEDY_BELOW) is greedy and
gives one answer whatever --num_samples says, since every sample would be the same.
"""
import os
import sys

from engine import GREEDY_BELOW, Sampling, encode_prompt, stream_text

DEMO = Sampling()  # the demo's defaults, shared with /generate and the arena
out_dir = 'out/pretrain'  # checkpoint folder (holds ckpt.pt)
start = '中国'  # prompt text, or FILE:path to read it from a file; ending in ## makes it a question
num_samples = 3  # samples to draw (one when greedy)
max_new_tokens = DEMO.max_new_tokens  # tokens generated per sample at most
temperature = DEMO.temperature  # 0 = greedy; higher = more random
top_k = DEMO.top_k  # sample among the k most likely tokens; 0 = all of them
top_p = DEMO.top_p  # then among the fewest most likely tokens whose probability reaches top_p; 1.0 = off
presence_penalty = DEMO.presence_penalty  # -2..2: subtracted once from the logit of every token already generated; 0 = off
frequency_penalty = DEMO.frequency_penalty  # -2..2: subtracted per time a token was already generated; 0 = off
seed = 1337  # sample i uses seed + i
device = 'auto'  # cpu, cuda, mps, or auto


def read_start(text):
    """The prompt text: --start itself, or the file it names after FILE:. OSError/UnicodeDecodeError name the file."""
    if not text.startswith('FILE:'):
        return text
    with open(text[5:], encoding='utf-8') as f:
        return f.read()


def sampling_of(num_samples, max_new_tokens, temperature, top_k, top_p, presence_penalty, frequency_penalty, seed):
    """The Sampling of sample 0 (sample i adds i to the seed); ValueError names the bad setting."""
    if top_k < 0 or num_samples < 1:
        raise ValueError(f'need top_k >= 0 and num_samples >= 1 (got {top_k}, {num_samples})')
    return Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                    presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, seed=seed)


def main():
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read(), globals())
    sys.stdout.reconfigure(encoding='utf-8')
    from checkpoint import load_checkpoint
    from model import pick_device
    try:
        text = read_start(start)
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f'error: --start={start}: {e}')
    try:
        sampling = sampling_of(num_samples, max_new_tokens, temperature, top_k, top_p, presence_penalty,
                               frequency_penalty, seed)
        model, tok, _ = load_checkpoint(out_dir, pick_device(device))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    prompt_ids = encode_prompt(tok, text)
    if not prompt_ids:
        sys.exit('error: --start is empty; give some text to continue')
    question = text.rstrip().endswith('##')  # encode_prompt made it encode(question) + [the answer separator]
    samples = num_samples
    if sampling.temperature < GREEDY_BELOW and samples > 1:
        print(f'temperature {sampling.temperature:g} is greedy: one sample, the other {samples - 1} would be the same',
              file=sys.stderr)
        samples = 1
    for i in range(samples):
        if not question:
            print(text, end='', flush=True)
        for piece in stream_text(model, tok, prompt_ids, sampling.but(seed=seed + i)):
            print(piece, end='', flush=True)
        print('\n---------------', flush=True)


if __name__ == '__main__':
    main()

"""
GPT-2's byte-level BPE against a BPE trained on the corpus itself, on the sample corpus.

    python data/fetch_sample.py
    python tests/bench/bench_tokenizer.py                        # ~10 min on 2 cores (2 x 240 s of training)
    python tests/bench/bench_tokenizer.py --budget_s=60 --vocab_size=4096

For each tokenizer: tokens per character on the val split, the share of the corpus's characters that
prepare.py keeps in rows of --block_size, and encode throughput (encode_ordinary_batch over every cleaned
article, best of 3, the two sides alternated). Then the CPU config's model shape is trained on each one's rows
for the same wall-clock budget: steps alternate between the two models, each side's own step time is what it
spends, so a busy machine slows both alike. Last, validation bits per character of each (evaluations-perplexity).
Goals: <= 0.8 tokens per character; >= 3x the characters kept; lower bits per character than GPT-2.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'data'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
import torch  # noqa: E402

import prepare  # noqa: E402
from data_utils import RowOrder, get_batch, init_data  # noqa: E402
from corpus import clean_article, iter_articles  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from conftest import load_script  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402
from train_tokenizer import train_tokenizer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument('--input_dir', default=os.path.join(ROOT, 'data', 'people_daily'))
parser.add_argument('--vocab_size', type=int, default=8192)
parser.add_argument('--block_size', type=int, default=128)
parser.add_argument('--budget_s', type=float, default=240, help='training seconds per tokenizer')
parser.add_argument('--threads', type=int, default=1, help='torch threads while training')
parser.add_argument('--shape', default='2,4,128', help='n_layer,n_head,n_embd')
parser.add_argument('--batch_size', type=int, default=16)
parser.add_argument('--sample_prompt', default='新华社北京１月１日电', help='each model continues it, greedy')
parser.add_argument('--sample_chars', type=int, default=80, help='characters of each continuation shown')
parser.add_argument('--learning_rate', type=float, default=2e-3)
args = parser.parse_args()
os.environ.setdefault('TQDM_DISABLE', '1')


def encode_seconds(tok, texts):
    t0 = time.perf_counter()
    tok.enc.encode_ordinary_batch(texts, num_threads=2)
    return time.perf_counter() - t0


def train_alternating(datasets, budget_s):
    """One model per dataset, trained step by step in turn until each has spent budget_s of its own step time."""
    n_layer, n_head, n_embd = map(int, args.shape.split(','))
    sides = []
    for data in datasets:
        torch.manual_seed(1337)
        config = GPTConfig(block_size=args.block_size, vocab_size=data['tokenizer'].vocab_size, n_layer=n_layer,
                           n_head=n_head, n_embd=n_embd, dropout=0.0, bias=False)
        model = GPT(config)
        sides.append({'data': data, 'model': model, 'config': config, 'spent': 0.0, 'steps': 0,
                      'order': RowOrder(len(data['train'])),
                      'opt': model.configure_optimizers(0.1, args.learning_rate, (0.9, 0.95), 'cpu')})
    while any(s['spent'] < budget_s for s in sides):
        for s in sides:
            if s['spent'] >= budget_s:
                continue
            t0 = time.perf_counter()
            for group in s['opt'].param_groups:  # 30 warmup steps, then constant: both sides alike, whatever their count
                group['lr'] = args.learning_rate * min(1.0, (s['steps'] + 1) / 30)
            x, y, mask = get_batch(s['data'], 'train', args.batch_size, order=s['order'])
            _, loss = s['model'](x, y, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(s['model'].parameters(), 1.0)
            s['opt'].step()
            s['opt'].zero_grad(set_to_none=True)
            s['spent'] += time.perf_counter() - t0
            s['steps'] += 1
    return sides


def main():
    torch.set_num_threads(args.threads)
    texts = [t for t in (clean_article(raw) for _, _, _, raw in iter_articles(args.input_dir)) if t]
    corpus_chars = sum(map(len, texts))
    ppl = load_script('evaluations-perplexity.py')
    with tempfile.TemporaryDirectory() as tmp:
        print(f"training a {args.vocab_size}-id tokenizer on {args.input_dir} ...")
        config = train_tokenizer(args.input_dir, os.path.join(tmp, 'tok'), args.vocab_size, block_size=args.block_size)
        report = config['compression']
        names = ('gpt2', 'trained')
        toks = {'gpt2': get_tokenizer('gpt2'), 'trained': get_tokenizer(os.path.join(tmp, 'tok'))}
        metas = {n: prepare.prepare(args.input_dir, os.path.join(tmp, n), args.block_size, 0.01, 2, False,
                                    'gpt2' if n == 'gpt2' else os.path.join(tmp, 'tok')) for n in names}
        times = {n: [] for n in names}
        for _ in range(3):
            for n in names:
                times[n].append(encode_seconds(toks[n], texts))
        kept = {n: (metas[n]['chars']['train'] + metas[n]['chars']['val']) / corpus_chars for n in names}
        print(f"\n{'':34}{'GPT-2':>12}{'trained':>12}   ratio   goal")
        print(f"{'tokens per character (val)':34}{report['gpt2']['tokens_per_char']:>12.3f}"
              f"{report['trained']['tokens_per_char']:>12.3f}   {report['trained']['tokens_per_char'] / report['gpt2']['tokens_per_char']:.2f}x"
              f"   <= 0.8 tokens/char")
        print(f"{'characters kept at block ' + str(args.block_size):34}{kept['gpt2']:>12.1%}{kept['trained']:>12.1%}"
              f"   {kept['trained'] / kept['gpt2']:.2f}x   >= 3x")
        print(f"{'rows (train + val)':34}{sum(metas['gpt2']['rows'].values()):>12,}{sum(metas['trained']['rows'].values()):>12,}")
        speed = {n: corpus_chars / min(times[n]) / 1e6 for n in names}
        print(f"{'encode, M characters/s':34}{speed['gpt2']:>12.2f}{speed['trained']:>12.2f}   {speed['trained'] / speed['gpt2']:.2f}x")

        print(f"\ntraining {args.shape} (layers, heads, width), batch {args.batch_size}, lr {args.learning_rate}, "
              f"{args.threads} thread(s), {args.budget_s:.0f} s each, steps alternated ...")
        datasets = [init_data(os.path.join(tmp, n), args.block_size, 'pretrain') for n in names]
        sides = train_alternating(datasets, args.budget_s)
        bpc = {}
        for n, side in zip(names, sides):
            out = os.path.join(tmp, f'out_{n}')
            save_checkpoint(out, {'model_args': vars(side['config']), 'model': side['model'].state_dict(),
                                  'tokenizer': side['data']['tokenizer'].for_checkpoint(), 'iter_num': side['steps']})
            result = ppl.evaluate(out, os.path.join(tmp, n), 'val', batch_size=16, device='cpu')
            bpc[n] = result
            print(f"{n:8} {side['steps']:5} steps ({side['spent'] / side['steps']:.3f} s/step), "
                  f"{sum(p.numel() for p in side['model'].parameters()) / 1e6:.2f}M parameters: "
                  f"val {result['bits_per_char']:.3f} bits/char (unigram {result['unigram_bits_per_char']:.3f}), "
                  f"ppl {result['ppl']:.1f}")
        print(f"bits per character, trained / GPT-2: {bpc['trained']['bits_per_char'] / bpc['gpt2']['bits_per_char']:.2f}x "
              f"(goal < 1)")
        from engine import generate_text
        for n, side in zip(names, sides):  # what each says, greedy with the main command's repeat penalties
            side['model'].eval()
            text = generate_text(side['model'], side['data']['tokenizer'], args.sample_prompt, max_new_tokens=args.sample_chars * 3, temperature=0,
                                 presence_penalty=1.0, frequency_penalty=1.0)
            print(f"{n:8} {args.sample_prompt}{text[:args.sample_chars]}")


if __name__ == '__main__':
    main()

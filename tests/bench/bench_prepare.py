"""
How fast is data/prepare.py, and does its memory stay flat?

    python data/fetch_sample.py
    python tests/bench/bench_prepare.py --workers=2            # ~1 min on 2 cores, GPT-2's tokenizer
    python tests/bench/bench_prepare.py --tokenizer=data/tokenizer   # a trained one

Speed: input tokens per second (tokens of the cleaned articles, whole) for
  - the baseline: enc.encode_ordinary_batch over the same cleaned texts, num_threads=workers, texts already in RAM;
  - prepare() called in-process (reads the JSONL, cleans, tokenizes, writes the rows);
  - prepare.py as a subprocess (the above plus interpreter start and imports).
Goal: prepare >= 0.8x the baseline. Memory: peak RSS (ru_maxrss of the prepare process and its workers,
whichever is largest) on the corpus once and on 10 copies of it. Goal: flat.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'data'))
from corpus import clean_article, find_jsonl, iter_articles  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402
import prepare  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument('--input_dir', default=os.path.join(ROOT, 'data', 'people_daily'))
parser.add_argument('--workers', type=int, default=2)
parser.add_argument('--tokenizer', default='gpt2', help="'gpt2' or a folder from data/train_tokenizer.py")
parser.add_argument('--block_size', type=int, default=128)
parser.add_argument('--copies', type=int, default=10)
parser.add_argument('--repeats', type=int, default=3, help='best of n for the timings')
args = parser.parse_args()
os.environ.setdefault('TQDM_DISABLE', '1')  # the in-process runs would draw progress bars


def best_time(fn, repeats):
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# Linux counts the memory a process had before exec in its ru_maxrss, so the child is started from a
# small wrapper process rather than from this one, which holds the whole corpus.
_WRAPPER = """import resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(code, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"""


def run_prepare(input_dir, out_dir):
    """prepare.py as a child process; returns (wall seconds, peak RSS in MiB of it or any of its workers)."""
    cmd = [sys.executable, os.path.join(ROOT, 'data', 'prepare.py'), f'--input_dir={input_dir}',
           f'--out_dir={out_dir}', f'--block_size={args.block_size}', f'--workers={args.workers}',
           f'--tokenizer={args.tokenizer}']
    report = subprocess.run([sys.executable, '-c', _WRAPPER, *cmd], capture_output=True, text=True).stdout.split()
    if not report or report[0] != '0':
        sys.exit(f"prepare.py failed ({report}): {' '.join(cmd)}")
    return float(report[1]), int(report[2]) / 1024


def main():
    enc = get_tokenizer(args.tokenizer).enc
    texts = [clean_article(raw) for _, _, _, raw in iter_articles(args.input_dir)]
    n_tokens = sum(len(ids) for ids in enc.encode_ordinary_batch(texts, num_threads=args.workers))
    print(f"corpus: {args.input_dir}, {len(texts):,} articles, {sum(map(len, texts)):,} chars, "
          f"{n_tokens:,} tokens cleaned; workers={args.workers}, block_size={args.block_size}")

    t_base = best_time(lambda: enc.encode_ordinary_batch(texts, num_threads=args.workers), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'out')
        t_prep = best_time(lambda: prepare.prepare(args.input_dir, out, args.block_size, 0.01, args.workers,
                                                   False, args.tokenizer), args.repeats)
        t_proc = min(run_prepare(args.input_dir, out)[0] for _ in range(args.repeats))
        base = n_tokens / t_base
        print(f"baseline encode_ordinary_batch: {t_base:.2f}s, {base / 1e6:.2f}M tokens/s")
        print(f"prepare() in-process:           {t_prep:.2f}s, {n_tokens / t_prep / 1e6:.2f}M tokens/s, "
              f"ratio {n_tokens / t_prep / base:.2f}x (goal >= 0.8x)")
        print(f"prepare.py subprocess:          {t_proc:.2f}s, {n_tokens / t_proc / 1e6:.2f}M tokens/s, "
              f"ratio {n_tokens / t_proc / base:.2f}x")

        # the same files copied args.copies times into one folder
        big = os.path.join(tmp, 'big')
        os.makedirs(big)
        for i in range(args.copies):
            for path in find_jsonl(args.input_dir):
                shutil.copy(path, os.path.join(big, f'copy{i:02d}_{os.path.basename(path)}'))
        wall_1, rss_1 = run_prepare(args.input_dir, out)
        wall_n, rss_n = run_prepare(big, out)
        print(f"peak RSS 1x: {rss_1:.0f} MiB ({wall_1:.1f}s); {args.copies}x: {rss_n:.0f} MiB ({wall_n:.1f}s, "
              f"{args.copies * n_tokens / wall_n / 1e6:.2f}M tokens/s, ratio {args.copies * n_tokens / wall_n / base:.2f}x); "
              f"RSS ratio {rss_n / rss_1:.2f} (goal: ~1.0)")


if __name__ == '__main__':
    main()

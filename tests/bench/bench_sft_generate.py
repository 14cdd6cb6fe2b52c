"""
Articles per second of sft/sft_generate.py's openai backend at --concurrency=1 and --concurrency=8, against
the tests' chat-completions server answering every request after a fixed delay (requests served
concurrently, as a real inference server batches them). Goal: a ratio of at least 6x.

    .venv/bin/python tests/bench/bench_sft_generate.py
    .venv/bin/python tests/bench/bench_sft_generate.py --articles=96 --delay=0.1
"""
import argparse
import os
import re
import sys
import tempfile

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)
from conftest import ROOT, ChatServer, lines, run_script, station, write_jsonl  # noqa: E402


def articles_per_second(server, corpus, work, concurrency):
    out = os.path.join(work, f'pairs_{concurrency}.jsonl')
    proc = run_script([os.path.join(ROOT, 'sft', 'sft_generate.py'), f'--input_dir={corpus}', f'--output={out}',
                       f'--rejects={out}.rejects', f'--base_url={server.url}', f'--concurrency={concurrency}'],
                      timeout=600)
    accepted = re.search(r'accepted (\d+) articles', proc.stdout)
    return float(re.search(r'articles/s=([\d.]+)', proc.stdout).group(1)), int(accepted.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument("--articles", type=int, default=96)
    parser.add_argument('--delay', type=float, default=0.2, help='seconds the server takes per request')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = os.path.join(work, 'corpus')
        write_jsonl(os.path.join(corpus, 'a.jsonl'), [station(i)[0] for i in range(args.articles)])

        def reply(article, attempt):
            return 200, lines(station(int(re.match(r'第(\d+)号', article).group(1)))[1]), args.delay

        with ChatServer(reply) as server:
            rates = {}
            for concurrency in (1, 8):
                rates[concurrency], accepted = articles_per_second(server, corpus, work, concurrency)
                assert accepted == args.articles, f'only {accepted} of {args.articles} articles accepted'
                print(f"--concurrency={concurrency}: {rates[concurrency]:.2f} articles/s "
                      f"({args.articles} articles, {args.delay}s per request)")
    ratio = rates[8] / rates[1]
    print(f"ratio 8 vs 1: {ratio:.1f}x (goal >= 6x)")


if __name__ == '__main__':
    main()

"""
Rouge-L of a checkpoint's answers against references, at the character level.

    python evaluations-RougeL.py --out_dir=out/sft --input=sft/sft_saves.jsonl --limit=50
    python evaluations-RougeL.py --out_dir=out/sft --from_val=50 --data_dir=data/sft
    python evaluations-RougeL.py --out_dir=out/pretrain --from_val=20 --data_dir=data/sample

Where the items come from:
- --input: a JSONL file, one {"prompt": ..., "reference": ...} per line, or SFT pairs
  {"question": ..., "answer": ...} (as sft/sft_generate.py writes them), asked as `question ##`.
- --from_val=N: the first N rows of the val split of a prepared dataset (--data_dir). An SFT row
  gives its question and answer; a pretrain row gives the first --prompt_fraction of the article
  as the prompt and the rest as the reference.
Each prompt is answered by the shared engine (greedy by default), then scored with rouge-score's
Rouge-L: the longest common subsequence of characters, as precision, recall and F. The per-item
scores go to <output_prefix>.csv, the summary and items to <output_prefix>.json.
"""
import csv
import json
import os
import sys

from tqdm import tqdm

from config.train_config import A_TOKEN, EOT_TOKEN
from data_utils import jsonl_objects

# -----------------------------------------------------------------------------
out_dir = 'out/sft'  # checkpoint folder (ckpt.pt)
input = ''  # JSONL of {"prompt", "reference"} or {"question", "answer"} lines
from_val = 0  # instead of --input: score the first N rows of <data_dir>/val.bin
data_dir = ''  # prepared dataset for --from_val
prompt_fraction = 0.5  # --from_val on pretrain rows: share of the article's characters given as the prompt
max_new_tokens = 128  # longest answer generated
temperature = 0.0  # 0 is greedy, so a rerun gives the same scores
top_k = 20  # used only when temperature > 0
seed = 1337  # sampling seed when temperature > 0
limit = 0  # score at most this many items; 0 is all
show = 3  # examples printed after scoring
device = 'auto'  # auto | cpu | cuda | mps
output_prefix = ''  # '' means <out_dir>/rougeL -> rougeL.csv and rougeL.json
# -----------------------------------------------------------------------------


class CharTokenizer:
    """
    One token per character, whitespace dropped. rouge-score's default tokenizer keeps only [a-z0-9]
    runs (it replaces every other character with a space), so a Chinese sentence becomes no tokens at
    all and every score is 0. Characters are the natural unit for Chinese, which has no spaces.
    """
    def tokenize(self, text):
        return [c for c in text if not c.isspace()]


def make_scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(['rougeL'], tokenizer=CharTokenizer())


def rouge_l(scorer, reference, prediction):
    s = scorer.score(reference, prediction)['rougeL']
    return {'precision': s.precision, 'recall': s.recall, 'f': s.fmeasure}


def read_items(path):
    """[{id, prompt, reference}] from a JSONL file; a bad line stops with path:line and what is wrong."""
    items = []
    for line_no, record, problem in jsonl_objects(path):
        where = f"{path}:{line_no}"
        if problem:
            raise ValueError(f"{where}: {problem[1]}")
        if 'prompt' in record or 'reference' in record:
            fields = ('prompt', 'reference')
        else:
            fields = ('question', 'answer')
        for field in fields:
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise ValueError(f"{where}: no {field!r} string (each line needs prompt/reference "
                                 f"or question/answer)")
        if fields[0] == 'prompt':
            prompt, reference = record['prompt'], record['reference']
        else:  # the seed's convention: a prompt ending in ## is a question, the answer follows
            prompt, reference = record['question'].strip() + ' ##', record['answer']
        items.append({'id': record.get('id', len(items)), 'prompt': prompt, 'reference': reference})
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def items_from_val(data_dir, n, fraction=0.5):
    """Prompts and references cut from the first n val rows of a prepared dataset."""
    from data_utils import get_encoding, load_rows, read_meta
    meta, enc = read_meta(data_dir), get_encoding()
    rows = load_rows(data_dir, 'val', block_size=meta['block_size'])
    items = []
    for i, row in enumerate(rows[:n]):
        ids = row.tolist()
        ids = ids[:ids.index(EOT_TOKEN)] if EOT_TOKEN in ids else ids
        if meta['kind'] == 'sft':
            if A_TOKEN not in ids:
                raise ValueError(f"{data_dir}/val.bin row {i}: an SFT row without the ## token {A_TOKEN}")
            a = ids.index(A_TOKEN)
            prompt, reference = enc.decode(ids[:a]).strip() + ' ##', enc.decode(ids[a + 1:])
        else:  # cut on characters, not tokens, so neither side starts with half a character
            text = enc.decode(ids)
            cut = max(1, int(len(text) * fraction))
            prompt, reference = text[:cut], text[cut:]
        if reference.strip():
            items.append({'id': i, 'prompt': prompt, 'reference': reference})
    if not items:
        raise ValueError(f"{data_dir}/val.bin: no rows with a reference to score")
    return items


def evaluate(model, items, scorer, **gen):
    """Generates an answer for every item and scores it; returns the items with prediction and scores."""
    from engine import generate_text
    results = []
    for item in tqdm(items, desc='Rouge-L'):
        prediction = generate_text(model, item['prompt'], **gen)
        results.append({**item, 'prediction': prediction, **rouge_l(scorer, item['reference'], prediction)})
    return results


def summarize(results):
    n = len(results)
    return {key: sum(r[key] for r in results) / n for key in ('precision', 'recall', 'f')} | {'n': n}


def write_reports(prefix, results, summary):
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + '.csv', 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['id', 'prompt', 'reference', 'prediction', 'precision', 'recall', 'f'])
        writer.writeheader()
        writer.writerows(results)
    with open(prefix + '.json', 'w', encoding='utf-8') as f:
        json.dump({'summary': summary, 'items': results}, f, ensure_ascii=False, indent=2)


def main():
    if bool(input) == bool(from_val):
        sys.exit("error: give one of --input=FILE.jsonl or --from_val=N (with --data_dir)")
    if from_val and not data_dir:
        sys.exit("error: --from_val needs --data_dir, the prepared dataset to take val rows from")
    from model import load_checkpoint, pick_device  # after the checks: importing torch takes seconds
    try:
        items = read_items(input) if input else items_from_val(data_dir, from_val, prompt_fraction)
        model, checkpoint = load_checkpoint(out_dir, pick_device(device))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    items = items[:limit] if limit else items
    try:
        results = evaluate(model, items, make_scorer(), max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, seed=seed)
    except ValueError as e:  # the engine refuses a negative temperature or top_k < 1
        sys.exit(f"error: {e}")
    summary = summarize(results) | {'checkpoint': os.path.join(out_dir, 'ckpt.pt'),
                                    'iter_num': checkpoint.get('iter_num'), 'source': input or f'{data_dir}/val.bin',
                                    'max_new_tokens': max_new_tokens, 'temperature': temperature, 'top_k': top_k}
    prefix = output_prefix or os.path.join(out_dir, 'rougeL')
    write_reports(prefix, results, summary)
    for r in results[:show]:
        print(f"Question:   {r['prompt']}\nAnswer:     {r['reference']}\nPrediction: {r['prediction']}\n"
              f"Rouge-L:    {r['f']:.4f}\n")
    print(f"Rouge-L over {summary['n']} items (characters): precision {summary['precision']:.4f}  "
          f"recall {summary['recall']:.4f}  F {summary['f']:.4f}")
    print(f"wrote {prefix}.csv and {prefix}.json")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

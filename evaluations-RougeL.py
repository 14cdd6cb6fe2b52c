"""
Rouge-L of a checkpoint's answers against references, at the character level.

    python evaluations-RougeL.py --out_dir=out/sft --from_rows=50 --split=train --data_dir=data/sft   # questions it was taught
    python evaluations-RougeL.py --out_dir=out/sft --from_rows=50 --data_dir=data/sft                 # held-out ones (val)
    python evaluations-RougeL.py --out_dir=out/sft --input=sft/sft_saves.jsonl --limit=50
    python evaluations-RougeL.py --out_dir=out/pretrain --from_rows=20 --data_dir=data/sample
    python evaluations-RougeL.py --out_dir=out/pretrain --input=examples.csv --prompts=continuations  # loops only

Where the items come from:
- --input: a JSONL file, one {"prompt": ..., "reference": ...} per line, or SFT pairs
  {"question": ..., "answer": ...} (as sft/sft_generate.py writes them), asked as `question ##`;
  or a CSV with a "prompt" column and an optional "reference" column (examples.csv): a row without a
  reference is generated and counted in the repetition figures, not scored.
- --from_rows=N: the first N rows of --split (val, or train: the questions a fine-tuned model was taught)
  of a prepared dataset (--data_dir). An SFT row gives its question and answer; a pretrain row gives
  the first --prompt_fraction of the article as the prompt and the rest as the reference.
--prompts=questions (or continuations) keeps only the prompts that end in ## (or do not).
Each prompt is answered by the shared engine, --batch_size answers stepped together, with the demo's
sampling (engine.Sampling(): top-k 20, presence and frequency penalties 1.0) made greedy, so a rerun gives
the same scores; a row's answer is the one it gets alone. Then it is scored with rouge-score's
Rouge-L: the longest common subsequence of characters, as precision, recall and F (mean and median).
Beside it, what a small model's first complaint is about, loops (on characters, whitespace dropped):
- repeat_4gram_share: share of answers in which some 4 characters occur at least twice (overlaps count);
- repeat_4gram_3x_share: the same, three times or more (the main command's goal: at most 5%);
- distinct_2: distinct character bigrams / all character bigrams, over all answers together;
- stopped_at_eot_share: share of answers that ended with the model's end-of-text, not cut by max_new_tokens.
The per-item scores go to <output_prefix>.csv, the summary and items to <output_prefix>.json.
"""
import csv
import json
import os
import statistics
import sys
from collections import Counter

from tqdm import tqdm

from corpus import jsonl_objects

# -----------------------------------------------------------------------------
out_dir = 'out/sft'  # checkpoint folder (ckpt.pt)
input = ''  # JSONL of {"prompt", "reference"} or {"question", "answer"} lines
from_rows = 0  # instead of --input: score the first N rows of <data_dir>/<split>.bin
split = 'val'  # --from_rows: 'val' (held out) or 'train' (what the model was trained on)
data_dir = ''  # prepared dataset for --from_rows
prompt_fraction = 0.5  # --from_rows on pretrain rows: share of the article's characters given as the prompt
prompts = 'all'  # 'questions' (ending in ##), 'continuations' (the others) or 'all
max_new_tokens = 128  # longest answer generated
# the demo's sampling (engine.Sampling(): top-k 20, penalties 1.0), greedy so that a rerun gives the same scores
temperature = 0.0  # 0 is greedy
top_k = 20  # used only when temperature > 0; 0 = all ids
top_p = 1.0  # nucleus sampling when temperature > 0; 1.0 = off
presence_penalty = 1.0  # OpenAI's penalties over the tokens generated so far (engine.py); 0 = off
frequency_penalty = 1.0
seed = 1337  # sampling seed when temperature > 0
batch_size = 16  # answers generated together, one forward per token for all of them
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


def read_csv_items(path):
    """[{id, prompt, reference}] from a CSV with a prompt column (reference may be empty: not scored)."""
    with open(path, encoding='utf-8', newline='') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if 'prompt' not in (header or []):
            raise ValueError(f"{path}: no 'prompt' column (found {header})")
        items = []
        for values in reader:
            if not values:
                continue  # a blank line
            if len(values) != len(header):  # a field too many or too few would shift the columns silently
                raise ValueError(f"{path}:{reader.line_num}: {len(values)} fields, the header has {len(header)} "
                                 f"({','.join(header)})")
            row = dict(zip(header, values))
            if row['prompt'].strip():
                items.append({'id': len(items), 'prompt': row['prompt'], 'reference': row.get('reference', '').strip()})
    if not items:
        raise ValueError(f"{path}: no prompts")
    return items


def read_items(path):
    """[{id, prompt, reference}] from a JSONL file (or a CSV); a bad line stops with path:line and what is wrong."""
    if path.endswith('.csv'):
        return read_csv_items(path)
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
        else:  # a prompt ending in ## is a question, the answer follows
            prompt, reference = record['question'].strip() + ' ##', record['answer']
        items.append({'id': record.get('id', len(items)), 'prompt': prompt, 'reference': reference})
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def items_from_rows(data_dir, n, fraction=0.5, split='val'):
    """Prompts and references cut from the first n rows of a split of a prepared dataset."""
    from data_utils import data_tokenizer, load_rows, read_meta
    meta = read_meta(data_dir)
    tok = data_tokenizer(meta, data_dir)
    rows = load_rows(data_dir, split, block_size=meta['block_size'])
    items = []
    for i, row in enumerate(rows[:n]):
        ids = row.tolist()
        ids = ids[:ids.index(tok.eot)] if tok.eot in ids else ids
        if meta['kind'] == 'sft':
            if tok.a_token not in ids:
                raise ValueError(f"{data_dir}/{split}.bin row {i}: an SFT row without the answer separator {tok.a_token}")
            a = ids.index(tok.a_token)
            prompt, reference = tok.decode(ids[:a]).strip() + ' ##', tok.decode(ids[a + 1:])
        else:  # cut on characters, not tokens, so neither side starts with half a character
            text = tok.decode(ids)
            cut = max(1, int(len(text) * fraction))
            prompt, reference = text[:cut], text[cut:]
        if reference.strip():
            items.append({'id': i, 'prompt': prompt, 'reference': reference})
    if not items:
        raise ValueError(f"{data_dir}/{split}.bin: no rows with a reference to score")
    return items


def char_ngrams(text, n):
    chars = CharTokenizer().tokenize(text)
    return [''.join(chars[i:i + n]) for i in range(len(chars) - n + 1)]


def repetition(predictions):
    """The loop figures of a list of texts (see the docstring)."""
    most = [max(Counter(char_ngrams(p, 4)).values(), default=0) for p in predictions]
    bigrams = [g for p in predictions for g in char_ngrams(p, 2)]
    return {'repeat_4gram_share': sum(m >= 2 for m in most) / len(predictions),
            'repeat_4gram_3x_share': sum(m >= 3 for m in most) / len(predictions),
            'distinct_2': len(set(bigrams)) / len(bigrams) if bigrams else 0.0}


def evaluate(model, tok, items, scorer, sampling, batch_size=16):
    """Generates an answer for every item (batch_size at a time) and scores it; returns the items with prediction and scores."""
    from engine import encode_prompt, generate_many
    answers = []
    for i in tqdm(range(0, len(items), batch_size * 4), desc='Rouge-L'):  # the bar moves every few batches
        chunk = items[i:i + batch_size * 4]
        answers += generate_many(model, tok, [encode_prompt(tok, item['prompt']) for item in chunk], sampling, batch_size)
    results = []
    for item, ids in zip(items, answers):
        prediction = tok.decode(ids)  # what stream_text's pieces add up to
        scores = rouge_l(scorer, item['reference'], prediction) if item['reference'] else dict.fromkeys(ROUGE_KEYS)
        results.append({**item, 'prediction': prediction, **scores, 'tokens': len(ids),
                        'stopped_at_eot': len(ids) < sampling.max_new_tokens})  # the engine stops before EOT
    return results


ROUGE_KEYS = ('precision', 'recall', 'f')


def summarize(results):
    """Rouge-L over the items with a reference (n_scored; None without any), the rest over every item (n)."""
    n, scored = len(results), [r for r in results if r['f'] is not None]
    rouge = {key: sum(r[key] for r in scored) / len(scored) if scored else None for key in ROUGE_KEYS}
    return (rouge | {'median_f': statistics.median(r['f'] for r in scored) if scored else None, 'n': n,
                     'n_scored': len(scored), 'stopped_at_eot_share': sum(r['stopped_at_eot'] for r in results) / n}
            | repetition([r['prediction'] for r in results]))


def write_reports(prefix, results, summary):
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + '.csv', 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['id', 'prompt', 'reference', 'prediction', 'precision', 'recall', 'f',
                                               'tokens', 'stopped_at_eot'])
        writer.writeheader()
        writer.writerows(results)
    with open(prefix + '.json', 'w', encoding='utf-8') as f:
        json.dump({'summary': summary, 'items': results}, f, ensure_ascii=False, indent=2)


def main():
    if bool(input) == bool(from_rows):
        sys.exit("error: give one of --input=FILE.jsonl (or .csv) or --from_rows=N (with --data_dir)")
    if from_rows and not data_dir:
        sys.exit("error: --from_rows needs --data_dir, the prepared dataset to take rows from")
    if prompts not in ('all', 'questions', 'continuations'):
        sys.exit(f"error: --prompts={prompts!r}: expected 'all', 'questions' or 'continuations'")
    from checkpoint import load_checkpoint  # after the checks: importing torch takes seconds
    from model import pick_device
    try:
        items = read_items(input) if input else items_from_rows(data_dir, from_rows, prompt_fraction, split)
        model, tok, checkpoint = load_checkpoint(out_dir, pick_device(device))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if prompts != 'all':  # a question is a prompt that ends in ##, as the engine reads it
        items = [i for i in items if i['prompt'].rstrip().endswith('##') == (prompts == 'questions')]
        if not items:
            sys.exit(f"error: no {prompts} among the prompts of {input or data_dir}")
    items = items[:limit] if limit else items
    from engine import Sampling
    try:  # the engine refuses a negative temperature, top_k < 0, top_p outside [0, 1], ...
        if top_k < 0 or batch_size < 1:
            raise ValueError(f'need top_k >= 0 and batch_size >= 1 (got {top_k}, {batch_size})')
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, seed=seed)
    except ValueError as e:
        sys.exit(f"error: {e}")
    results = evaluate(model, tok, items, make_scorer(), sampling, batch_size)
    summary = summarize(results) | {'checkpoint': os.path.join(out_dir, 'ckpt.pt'),
                                    'iter_num': checkpoint.get('iter_num'), 'source': input or f'{data_dir}/{split}.bin',
                                    'prompts': prompts, 'max_new_tokens': max_new_tokens, 'temperature': temperature,
                                    'top_k': top_k, 'top_p': top_p, 'presence_penalty': presence_penalty,
                                    'frequency_penalty': frequency_penalty}
    prefix = output_prefix or os.path.join(out_dir, 'rougeL')
    write_reports(prefix, results, summary)
    for r in results[:show]:
        print(f"Question:   {r['prompt']}\nAnswer:     {r['reference']}\nPrediction: {r['prediction']}\n"
              + (f"Rouge-L:    {r['f']:.4f}\n" if r['f'] is not None else ''))
    if summary['n_scored']:
        print(f"Rouge-L over {summary['n_scored']} items (characters): precision {summary['precision']:.4f}  "
              f"recall {summary['recall']:.4f}  F {summary['f']:.4f}  median F {summary['median_f']:.4f}")
    print(f"repetition: {summary['repeat_4gram_share']:.1%} of answers repeat a 4-gram, "
          f"{summary['repeat_4gram_3x_share']:.1%} three times or more; distinct-2 {summary['distinct_2']:.4f}; "
          f"{summary['stopped_at_eot_share']:.1%} stopped at end-of-text (the rest hit max_new_tokens={max_new_tokens})")
    print(f"wrote {prefix}.csv and {prefix}.json")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

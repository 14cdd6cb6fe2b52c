"""
The run's lab report as Markdown, made from the files the pipeline left in a work folder: corpus and
tokenizer figures, the prepared data, the configs, the loss curves, perplexity and bits per character with
their baselines, Rouge-L with Question / Answer / Prediction examples, repetition, samples from both
models, the automatic judge's calibration and board, the time each stage took, the git commit and the machine.

    python report.py --work=. --output=out/report.md      # after bash run.sh
    python report.py --work=runs/quick                    # after bash run.sh --quick: runs/quick/out/report.md
    python report.py --work=/path/to/my_run --sft=out/sft_long --examples=8

Every figure is read from a file under --work and the report names the file beside it; a missing file
gives a line saying what was not run, never an error. The folders below are relative to --work (or absolute).
"""
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
from collections import namedtuple

ROOT = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
work = '.'  # the run's folder: bash run.sh uses ., bash run.sh --quick uses runs/quick
output = ''  # Markdown path; '' means <work>/out/report.md
corpus = 'data/people_daily'  # the JSONL articles (*.jsonl, walked recursively)
pretrain_data = 'data/sample'  # prepared pretraining rows (meta.json)
sft_data = 'data/sft'  # prepared SFT rows (meta.json)
tokenizer = 'data/tokenizer'  # a trained tokenizer's folder (tokenizer.json); absent when the run used gpt2
pretrain = 'out/pretrain'  # pretrained checkpoint folder: ckpt.pt, log.jsonl, samples.txt, perplexity_val.json
sft = 'out/sft'  # the fine-tuned one's, with rougeL.json and rougeL.csv besides
votes = 'out/arena.db'  # the arena's votes store: judge.py's votes in it, its calibration in <votes>.calibration.json
examples = 5  # Question / Answer / Prediction rows, spread evenly from the best Rouge-L to the worst
listed = 12  # prompts listed from each examples.json (examples.csv's continuations, its questions)
sample_chars = 800  # longest stretch of each samples.txt quoted
# -----------------------------------------------------------------------------

# the settings above, as main() hands them to every section
Settings = namedtuple('Settings', 'work output corpus pretrain_data sft_data tokenizer pretrain sft votes examples '
                                  'listed sample_chars')

# perplexity_val.json keys shown first, in this order; any other number in the file follows them
PPL_KEYS = ('bits_per_char', 'unigram_bits_per_char', 'bits_per_byte', 'unigram_bits_per_byte', 'ppl',
            'unigram_ppl', 'loss', 'unigram_loss', 'tokens', 'chars', 'rows', 'iter_num')
REPETITION = ('repeat', 'distinct')  # Rouge-L summary keys holding these words are repetition figures
# (model, file in its folder, what was asked) of every evaluations-RougeL.py run the main command makes
GENERATIONS = (('sft', 'rougeL.json', 'trained questions'), ('sft', 'rougeL_val.json', 'held-out questions'),
               ('pretrain', 'examples.json', 'examples.csv continuations'),
               ('sft', 'examples.json', 'examples.csv questions'))


def path_of(cfg, *parts):
    """A path under the run's folder, cfg.work (an absolute part stays as it is)."""
    return os.path.join(os.path.expanduser(cfg.work), *parts)


def models(cfg):
    """(label, folder) of both models."""
    return (('pretrain', path_of(cfg, cfg.pretrain)), ('sft', path_of(cfg, cfg.sft)))


def not_run(path, what):
    return [f'_Not run: `{path}` is missing ({what})._', '']


def load(path):
    """A JSON file's object, or None when the file is not there."""
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def read_jsonl(path):
    """The JSON objects of a JSONL file; a torn or non-object line is skipped (a report never stops on one)."""
    from corpus import jsonl_objects
    return [record for _, record, problem in jsonl_objects(path) if not problem]


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v):
    """Numbers as a reader wants them: large counts with separators, floats to 4 significant digits."""
    if v is None:
        return ''
    if isinstance(v, int) and not isinstance(v, bool):
        return f'{v:,}'  # settings and token ids are passed as strings: a seed of 1,337 would read oddly
    if isinstance(v, float):
        return f'{v:,.0f}' if abs(v) >= 1e5 else f'{v:.4g}'
    if isinstance(v, dict):
        return ', '.join(f'{k} {fmt(x)}' for k, x in v.items())
    return str(v)


def table(header, rows):
    cell = lambda v: fmt(v).replace('|', '\\|').replace('\r', '').replace('\n', ' ⏎ ')  # noqa: E731
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
            *('| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows), '']


def seconds(s):
    if s < 1:
        return '< 1 s'  # run.sh counts whole seconds
    return f'{s:.0f} s' if s < 120 else f'{s / 60:.1f} min'


def flatten(obj, prefix=''):
    """{'a.b': number} for every number inside nested dicts: figures whose exact keys may still change."""
    out = {}
    for k, v in (obj.items() if isinstance(obj, dict) else ()):
        if is_number(v):
            out[prefix + str(k)] = v
        elif isinstance(v, dict):
            out.update(flatten(v, f'{prefix}{k}.'))
    return out


def stage_seconds(cfg):
    path = path_of(cfg, 'out', 'timings.jsonl')
    return path, ([r for r in read_jsonl(path) if is_number(r.get('seconds'))] if os.path.exists(path) else None)


# ----------------------------------------------------------------------------- sections

def section_summary(cfg):
    lines = []
    for label, folder in models(cfg):
        r = load(os.path.join(folder, 'perplexity_val.json')) or {}
        for key, what in (('bits_per_char', 'bits per character'), ('ppl', 'perplexity')):
            if is_number(r.get(key)):  # bits per character when the evaluation gives it: it compares tokenizers
                base = f" (unigram {fmt(r[f'unigram_{key}'])})" if is_number(r.get(f'unigram_{key}')) else ''
                lines.append(f'- {label}: {fmt(r[key])} {what} on val{base}')
                break
    summary = (load(os.path.join(path_of(cfg, cfg.sft), 'rougeL.json')) or {}).get('summary', {})
    if is_number(summary.get('f')):
        median = f", median {fmt(summary['median_f'])}" if is_number(summary.get('median_f')) else ''
        lines.append(f"- sft: Rouge-L F mean {fmt(summary['f'])}{median} on {fmt(summary.get('n'))} questions")
    for label, name, what, path, report in generations(cfg):
        summary = report.get('summary', {})
        if what == 'held-out questions' and is_number(summary.get('median_f')):
            lines.append(f"- {label}: Rouge-L F median {fmt(summary['median_f'])}, mean {fmt(summary.get('f'))} "
                         f"on {fmt(summary.get('n'))} {what}")
        elif 'continuations' in what and is_number(summary.get('repeat_4gram_3x_share')):
            lines.append(f"- {label}: {summary['repeat_4gram_3x_share']:.0%} of {fmt(summary.get('n'))} {what} repeat "
                         f"4 characters three times (greedy, {penalties(summary)})")
    _, stages = stage_seconds(cfg)
    if stages:
        lines.append(f"- all stages: {seconds(sum(r['seconds'] for r in stages))}")
    return (lines or ['_Nothing evaluated yet: no perplexity, Rouge-L or timings files._']) + ['']


def section_corpus(cfg):
    from corpus import find_jsonl
    folder = path_of(cfg, cfg.corpus)
    # the files data/prepare.py reads: each real file once, however many links lead to it
    files = find_jsonl(folder) if os.path.isdir(folder) else []
    if not files:
        return not_run(os.path.join(folder, '*.jsonl'), 'data/fetch_sample.py writes it')
    texts = [r['text'] for path in files for r in read_jsonl(path) if isinstance(r.get('text'), str)]
    return table(['folder', 'files', 'articles', 'characters'],
                 [(folder, len(files), len(texts), sum(len(t) for t in texts))])


def section_tokenizer(cfg):
    path = os.path.join(path_of(cfg, cfg.tokenizer), 'tokenizer.json')
    facts = load(path)
    if facts is None:
        meta = load(os.path.join(path_of(cfg, cfg.pretrain_data), 'meta.json')) or {}
        meta = meta.get('tokenizer') if isinstance(meta.get('tokenizer'), dict) else meta  # either layout
        name = meta.get('name') or meta.get('encoding')
        return not_run(path, 'no tokenizer was trained') + ([f'The prepared data uses `{name}`.', ''] if name else [])
    rows = [(k, str(v)) for k, v in facts.items() if not isinstance(v, (dict, list)) and len(str(v)) < 200]
    rows += [(k, ', '.join(f'{name} {i}' for name, i in v.items())) for k, v in facts.items()  # special ids, say
             if isinstance(v, dict) and k != 'compression' and all(is_number(x) for x in v.values())]
    lines = [f'From `{path}`.', '', *table(['', ''], rows)]
    compression = facts.get('compression') if isinstance(facts.get('compression'), dict) else {}
    figures = flatten(compression)
    if not figures:
        return lines + ['_No compression figures in tokenizer.json._', '']
    where = f" on the {compression['measured_on']} split" if isinstance(compression.get('measured_on'), str) else ''
    lines += [f'Compression{where}: ' + ', '.join(f'{k} {fmt(v)}' for k, v in figures.items() if k.count('.') != 1), '']
    pairs = [k.split('.') for k in figures if k.count('.') == 1]  # tokenizer.figure (or figure.tokenizer)
    outer, inner = list(dict.fromkeys(p[0] for p in pairs)), list(dict.fromkeys(p[1] for p in pairs))
    if not pairs:
        return lines
    if len(outer) <= len(inner):  # the shorter list becomes the columns: one row per figure reads best
        return lines + table([''] + outer, [[i] + [figures.get(f'{o}.{i}') for o in outer] for i in inner])
    return lines + table([''] + inner, [[o] + [figures.get(f'{o}.{i}') for i in inner] for o in outer])


def section_data(cfg):
    lines = []
    for label, folder in (('pretraining', cfg.pretrain_data), ('fine-tuning', cfg.sft_data)):
        path = os.path.join(path_of(cfg, folder), 'meta.json')
        meta = load(path)
        if meta is None:
            lines += [f'**{label}**', '', *not_run(path, 'data/prepare.py or data/prepare_sft.py writes it')]
            continue
        rows = [(k, meta[k]) for k in ('kind', 'block_size', 'articles', 'pairs', 'fill_ratio') if k in meta]
        rows += [(f'{k} (train / val)', f"{fmt(meta[k].get('train'))} / {fmt(meta[k].get('val'))}")
                 for k in ('rows', 'tokens', 'chars') if isinstance(meta.get(k), dict)]
        rows += [('skipped', fmt(meta['skipped']) or 'none')] if isinstance(meta.get('skipped'), dict) else []
        lines += [f'**{label}** (`{path}`)', '', *table(['', ''], rows)]
    return lines


def checkpoint_facts(path):
    """The checkpoint's shape, progress and config, memory-mapped: the weights themselves are never read."""
    import torch
    from checkpoint import read_checkpoint
    ckpt = read_checkpoint(path, mmap=True)
    storages = {t.untyped_storage().data_ptr(): t.numel() for t in (ckpt.get('model') or {}).values()
                if torch.is_tensor(t)}  # tied weights (wte and lm_head) share one storage: counted once
    elapsed = ckpt.get('elapsed')
    facts = {'parameters': sum(storages.values()), 'iter_num': ckpt.get('iter_num'),
             'best_val_loss': ckpt.get('best_val_loss'), 'tokens_seen': ckpt.get('tokens_seen'),
             'training time': seconds(elapsed) if is_number(elapsed) else None, **(ckpt.get('model_args') or {})}
    return facts, ckpt.get('config') or {}


def section_configs(cfg):
    lines, facts, configs, names = [], [], [], []
    for label, folder in models(cfg):
        path = os.path.join(folder, 'ckpt.pt')
        if not os.path.exists(path):
            lines += not_run(path, f'train.py writes the {label} checkpoint')
            continue
        f, c = checkpoint_facts(path)
        facts.append(f)
        configs.append({k: str(v) for k, v in c.items() if not isinstance(v, (dict, list))})
        names.append(f'{label} (`{path}`)')
    for title, dicts in (('model', facts), ('config', configs)) if names else ():
        keys = dict.fromkeys(k for d in dicts for k, v in d.items() if not isinstance(v, (dict, list)))
        lines += table([title] + names, [[k] + [d.get(k) for d in dicts] for k in keys])
    return lines


def log_summary(label, path):
    records = [r for r in read_jsonl(path) if is_number(r.get('loss')) and is_number(r.get('iter'))]
    train, val = ([r for r in records if r.get('split') == s] for s in ('train', 'val'))
    best = min(val, key=lambda r: r['loss']) if val else None
    last = records[-1] if records else {}
    span = lambda rs: f"{rs[0]['loss']:.4f} → {rs[-1]['loss']:.4f}" if rs else ''  # noqa: E731
    return [label, span(train), span(val), f"{best['loss']:.4f} at {best['iter']}" if best else '', len(val),
            last.get('iter'), last.get('tokens'), seconds(last['elapsed']) if is_number(last.get('elapsed')) else '']


def section_training(cfg):
    png = path_of(cfg, 'out', 'loss.png')
    if os.path.exists(png):  # linked relative to the report, so the folder can be moved or published whole
        rel = os.path.relpath(os.path.abspath(png), os.path.dirname(os.path.abspath(report_path(cfg))))
        lines = [f'![loss curves]({rel.replace(os.sep, "/")})', '']
    else:
        lines = not_run(png, 'visualize.py draws it')
    rows = []
    for label, folder in models(cfg):
        path = os.path.join(folder, 'log.jsonl')
        if os.path.exists(path):
            rows.append(log_summary(label, path))
        else:
            lines += not_run(path, f'train.py logs the {label} run there')
    if rows:
        lines += table(['run', 'train loss', 'val loss', 'best val', 'val points', 'iterations', 'tokens', 'time'],
                       rows) + ["Losses in nats per target token, from each run's `log.jsonl`.", '']
    return lines


def section_perplexity(cfg):
    lines, reports, names = [], [], []
    for label, folder in models(cfg):
        path = os.path.join(folder, 'perplexity_val.json')
        r = load(path)
        if r is None:
            lines += not_run(path, f'evaluations-perplexity.py on {label}')
        else:
            reports.append(r)
            names.append(f'{label} (`{path}`)')
    if not reports:
        return lines
    keys = [k for k in PPL_KEYS if any(is_number(r.get(k)) for r in reports)]
    keys += [k for r in reports for k, v in r.items() if is_number(v) and k not in keys]
    return lines + table([''] + names, [[k] + [r.get(k) for r in reports] for k in dict.fromkeys(keys)]) + [
        'Bits per character compare models whose tokenizers differ; perplexity, per token, does not. '
        'The unigram baseline is a model that ignores the context.', '']


def pick_examples(rows, n):
    """n rows spread evenly over the Rouge-L ranking, best first: neither the best cases alone nor the worst."""
    ranked = sorted(rows, key=lambda r: -float(r.get('f') or 0))
    if n <= 0 or n >= len(ranked):
        return ranked[:max(n, 0)]
    return [ranked[round(i * (len(ranked) - 1) / max(n - 1, 1))] for i in range(n)]


def section_rouge(cfg):
    path = os.path.join(path_of(cfg, cfg.sft), 'rougeL.json')
    report = load(path)
    if report is None:
        return not_run(path, 'evaluations-RougeL.py')
    summary = report.get('summary', {})
    figures = flatten(summary)
    order = [k for k in ('n', 'f', 'median_f', 'precision', 'recall') if k in figures] + list(figures)
    lines = [f"From `{path}`: characters, greedy unless the temperature says otherwise; questions from "
             f"`{summary.get('source', '?')}`.", '',
             *table(['', ''], [(k, figures[k]) for k in dict.fromkeys(order) if not any(w in k for w in REPETITION)]),
             '### Repetition', '']
    repetition = [(k, v) for k, v in figures.items() if any(w in k for w in REPETITION)]
    lines += table(['', ''], repetition) if repetition else [
        '_Not measured: rougeL.json has no repetition figures (an older evaluations-RougeL.py)._', '']
    csv_path = os.path.join(path_of(cfg, cfg.sft), 'rougeL.csv')
    lines += ['### Examples', '']
    if not os.path.exists(csv_path):
        return lines + not_run(csv_path, 'evaluations-RougeL.py writes it')
    with open(csv_path, encoding='utf-8', newline='') as f:
        rows = list(csv.DictReader(f))
    picked = pick_examples(rows, cfg.examples)
    return lines + [f'{len(picked)} of the {len(rows)} in `{csv_path}`, spread from the best Rouge-L to the worst.',
                    '', *table(['Question', 'Answer', 'Prediction', 'Rouge-L F'],
                               [(r.get('prompt'), r.get('reference'), r.get('prediction'), float(r.get('f') or 0))
                                for r in picked])]


def generations(cfg):
    """(model, file, what, path, its JSON) of the GENERATIONS files that exist."""
    folders, found = dict(models(cfg)), []
    for label, name, what in GENERATIONS:
        path = os.path.join(folders[label], name)
        report = load(path)
        if report is not None:
            found.append((label, name, what, path, report))
    return found


def penalties(summary):
    return f"presence {fmt(summary.get('presence_penalty'))}, frequency {fmt(summary.get('frequency_penalty'))}"


def section_generations(cfg):
    found = generations(cfg)
    if not found:
        return not_run(os.path.join(path_of(cfg, cfg.sft), 'rougeL_val.json'), 'evaluations-RougeL.py')
    rows = []
    for label, _, what, path, report in found:
        summary = report.get('summary', {})
        rows.append((f'{label}: {what} (`{path}`)', summary.get('n'), summary.get('median_f'), summary.get('f'),
                     summary.get('stopped_at_eot_share'), summary.get('repeat_4gram_share'),
                     summary.get('repeat_4gram_3x_share'), summary.get('distinct_2'), penalties(summary)))
    lines = ['Rouge-L where the prompt has a reference; "4 chars x2 / x3": share of outputs in which some 4 characters '
             'occur twice / three times or more.', '',
             *table(['evaluation', 'n', 'median F', 'mean F', 'stopped at EOT', '4 chars x2', '4 chars x3',
                     'distinct-2', 'penalties'], rows)]
    for label, name, what, path, report in found:
        if name == 'examples.json':
            items = report.get('items', [])[:cfg.listed]
            lines += [f'**{label}: {what}** (first {len(items)} of `{path}`)', '',
                      *table(['prompt', 'reference', 'prediction'],
                             [(i.get('prompt'), i.get('reference'), i.get('prediction')) for i in items])]
    return lines


def section_samples(cfg):
    lines = []
    for label, folder in models(cfg):
        path = os.path.join(folder, 'samples.txt')
        if not os.path.exists(path):
            lines += [f'**{label}**', '', *not_run(path, f'sample.py from the {label} model')]
            continue
        with open(path, encoding='utf-8', errors='replace') as f:
            text = f.read()
        text = text[:cfg.sample_chars] + ('\n…' if len(text) > cfg.sample_chars else '')
        lines += [f'**{label}** (`{path}`)', '', '```text', text.rstrip().replace('```', "'''"), '```', '']
    return lines


def section_judge(cfg):
    """judge.py's latest calibration of each judge, and the board of that judge's votes alone."""
    store = path_of(cfg, cfg.votes)
    path = store + '.calibration.json'
    saved = load(path)
    if saved is None:
        return not_run(path, 'judge.py')
    from judge_boards import boards_by_voter  # numpy and the ratings: only when there is a judge to show
    from judge_calibration import calibration_text
    lines = []
    for kind, calibration in saved.items():
        rows = [r for r in boards_by_voter(store, kind)['judge']['rows'] if r['battles']]
        lines += [f'`{kind}`, its latest run, from `{path}`:', '', '```', calibration_text(calibration), '```', '',
                  f'Its votes in `{store}` alone (Bradley-Terry, mean 1000; people\'s votes: '
                  f'`python judge.py --board_only=True --votes={store}`):', '',
                  *table(['Model', 'BT', 'Battles', 'Wins / ties / losses'],
                         [(r['model'], r['bt'], r['battles'], f"{r['wins']} / {r['ties']} / {r['losses']}")
                          for r in rows])]
    return lines


def section_timings(cfg):
    path, stages = stage_seconds(cfg)
    if stages is None:
        return not_run(path, 'run.sh writes it')
    total = sum(r['seconds'] for r in stages) or 1
    rows = [(r.get('stage', '?'), seconds(r['seconds']), f"{r['seconds'] / total:.0%}") for r in stages]
    return [f'From `{path}`.', '', *table(['stage', 'time', 'share'], rows + [('all', seconds(total), '100%')])]


def section_machine(cfg):
    def git(*args):
        try:
            return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ''
    commit = git('rev-parse', 'HEAD')
    dirty = ' with uncommitted changes' if commit and git('status', '--porcelain', '--untracked-files=no') else ''
    cpu = platform.processor() or platform.machine()
    if os.path.exists('/proc/cpuinfo'):  # Linux names the model there; platform gives only the architecture
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    import torch
    gpu = f', CUDA on {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''
    rows = [('code', f'git commit {commit}{dirty}' if commit else 'not a git checkout'),
            ('CPU', f'{cpu}, {os.cpu_count()} cores'), ('torch', torch.__version__ + gpu),
            ('Python', platform.python_version()), ('OS', platform.platform())]
    return ['Where this report was made: make it on the machine that ran the stages.', '', *table(['', ''], rows)]


SECTIONS = (('Summary', section_summary), ('Corpus', section_corpus), ('Tokenizer', section_tokenizer),
            ('Prepared data', section_data), ('Models and configs', section_configs), ('Training', section_training),
            ('Perplexity and bits per character (val split)', section_perplexity),
            ('Rouge-L of the fine-tuned model', section_rouge),
            ('Held-out questions, examples.csv and loops', section_generations), ('Samples', section_samples),
            ('The automatic judge', section_judge),
            ('Time per stage', section_timings), ('Code and machine', section_machine))


def report_path(cfg):
    return cfg.output or path_of(cfg, 'out', 'report.md')


def make_report(cfg):
    lines = ['# MiniGPT-zh run report', '',
             f'Made by `python report.py --work={cfg.work}` on {datetime.datetime.now():%Y-%m-%d %H:%M} from the '
             f'files under `{cfg.work}`; each figure is read from the file named beside it.', '']
    for title, section in SECTIONS:
        lines += [f'## {title}', '']
        try:
            lines += section(cfg)
        except Exception as e:  # a malformed file spoils its own section only; the rest of the report stands
            lines += [f'_Could not be read: {type(e).__name__}: {e}._', '']
    return '\n'.join(lines)


def main():
    cfg = Settings(work, output, corpus, pretrain_data, sft_data, tokenizer, pretrain, sft, votes, examples, listed,
                   sample_chars)
    text, path = make_report(cfg), report_path(cfg)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(path + '.tmp', path)  # a reader never sees half a report
    print(f'wrote {path}')


if __name__ == '__main__':
    exec(open(os.path.join(ROOT, 'configurator.py')).read())
    sys.stdout.reconfigure(encoding='utf-8')
    main()

"""
Loss curves from training logs: train and val loss against iterations, the learning rate on a second
axis, one colour per run. Reads <out_dir>/log.jsonl (train.py's log: one {"iter", "split", "loss", "lr", ...}
a line) and, when an evaluation left one beside it, <out_dir>/perplexity_val.json for a bits-per-character mark.

    python visualize.py --out_dir=out/pretrain,out/sft --output=out/loss.png      # fine-tuning after pretraining
    python visualize.py --out_dir=out/pretrain
    python visualize.py --out_dir=runs/a/out/pretrain,runs/b/out/pretrain --chain=False   # compare two runs from 0

By default (--chain=True) each run continues the axis where the previous one stopped: fine-tuning starts
at pretraining's last iteration, on a shaded band, because it is the same model trained further, not a
second model trained at the same time. --chain=False overlays the runs from iteration 0 to compare them.
The raw train loss is drawn faint, and over it a centred moving average (--smoothing) that has no lag
and no start-up bias: its window narrows towards the start, so the first point is the first loss. Val
losses are points, joined by a line only when a run has enough of them to make one. A loss that is NaN or
infinite (a diverged step) leaves a gap in the raw line, and the smoothed line averages the finite losses around
it. A torn last line of a log (a run killed mid-write) is skipped with a note. Works without a display.
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use('Agg')  # no display needed: servers, CI, ssh sessions
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from corpus import jsonl_objects  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = 'out/pretrain'  # one or more checkpoint folders, comma-separated, in training order
output = ''  # PNG path; '' means loss.png in the first out_dir
chain = True  # each run continues the previous run's axis (pretrain, then fine-tune); False overlays from 0
width = 1200  # image width in pixels
height = 600  # image height in pixels
size = ''  # WIDTHxHEIGHT, e.g. 1600x900; overrides --width/--height
dpi = 100  # pixels per inch: sets how large text and lines are in the image
smoothing = 0.1  # the smoothed train line averages a centred window of this share of a run's points; 0: none
val_line_min = 5  # join a run's val points with a line only from this many on; fewer are drawn as points
title = ''  # figure title; '' means the run names
# -----------------------------------------------------------------------------

REQUIRED = ('iter', 'split', 'loss')


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_log(folder):
    """
    {'train': [(iter, loss, lr)], 'val': [...]} from folder/log.jsonl. A bad line stops with file:line, except
    the last one when it is not JSON: a run killed while writing it leaves it torn, so it is skipped with a note.
    """
    path = os.path.join(folder, 'log.jsonl')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no training log (is --out_dir a folder train.py wrote?)")
    curves, torn = {'train': [], 'val': []}, None
    for line_no, record, problem in jsonl_objects(path):
        if torn:  # a bad line with lines after it is no torn last line
            raise ValueError(torn)
        if problem:
            torn = f"{path}:{line_no}: {problem[1]}"
            continue
        for key in REQUIRED:
            if key not in record:
                raise ValueError(f"{path}:{line_no}: no {key!r} field")
        if not is_number(record['loss']) or not is_number(record['iter']):
            raise ValueError(f"{path}:{line_no}: iter and loss must be numbers")
        if not isinstance(record['split'], str):
            raise ValueError(f"{path}:{line_no}: split must be a name such as \"train\", not {record['split']!r}")
        if record['split'] in curves:  # other splits, if a later train.py logs any, are not plotted
            curves[record['split']].append((record['iter'], record['loss'], record.get('lr')))
    if torn:
        print(f"note: {torn}; skipped it as the torn last line of a run stopped mid-write", file=sys.stderr)
    if not curves['train'] and not curves['val']:
        raise ValueError(f"{path}: empty, no train or val entries to plot")
    return curves


def read_bits_per_char(folder):
    """(iter or None, loss or None, bits/char, unigram bits/char or None) from perplexity_val.json, or None."""
    try:
        with open(os.path.join(folder, 'perplexity_val.json'), encoding='utf-8') as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None  # not evaluated, or an older evaluation without the figure: nothing to mark
    if not isinstance(report, dict) or not isinstance(report.get('bits_per_char'), (int, float)):
        return None
    number = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return number.get('iter_num'), number.get('loss'), number['bits_per_char'], number.get('unigram_bits_per_char')


def smooth(values, share):
    """
    Centred moving average over a window of up to `share` of the points. A trailing average (an EMA too,
    bias-corrected or not) lags a falling loss: on the steep start of a run it draws the line far above
    the losses measured there. A centred one has no lag on a straight stretch, but any window that spans
    a bend draws inside it, so near the start the window is kept within a quarter of the way back: a loss
    bends fastest at the start, and the first point is the first loss itself. Near the end, where the loss
    has flattened, the window keeps the points before it, so one noisy last loss is not drawn as a rise.
    """
    n = len(values)
    half = int(share * n / 2)
    if half < 1:
        return list(values)
    prefix, count = [0.0], [0]  # sums and counts of the finite values only: one NaN would spoil every later sum
    for v in values:
        finite = math.isfinite(v)
        prefix.append(prefix[-1] + (v if finite else 0.0))
        count.append(count[-1] + finite)
    out = []
    for i in range(n):
        h = min(half, i // 4)
        lo, hi = i - h, min(i + h, n - 1)
        k = count[hi + 1] - count[lo]
        out.append((prefix[hi + 1] - prefix[lo]) / k if k else math.nan)
    return out


def finite(loss):
    """The loss, or NaN for an infinite one: matplotlib leaves a gap at NaN, while inf stretches the axis."""
    return loss if math.isfinite(loss) else math.nan


def last_iter(curves):
    return max(p[0] for split in curves.values() for p in split)


def offsets(runs, chain=True):
    """Where each run's iteration 0 sits on the shared axis: after the previous run's last iteration."""
    out, start = [], 0
    for _, curves in runs:
        out.append(start if chain else 0)
        start += last_iter(curves)
    return out


def run_label(folder, folders):
    """The folder's name, or its whole path when two runs share a name."""
    name = os.path.basename(os.path.normpath(folder))
    same = [f for f in folders if os.path.basename(os.path.normpath(f)) == name]
    return name if len(same) == 1 else os.path.normpath(folder)


def draw(runs, width_px, height_px, dpi=100, smoothing=0.1, title='', chain=True, val_line_min=5, marks=None):
    """
    The figure for runs = [(label, curves)] in training order, sized width_px x height_px at this dpi.
    marks = [read_bits_per_char(...) or None] per run adds the evaluated bits per character.
    """
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax_lr = ax.twinx()
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    data_x_axes_y = blended_transform_factory(ax.transData, ax.transAxes)  # x in iterations, y in axes fractions
    for i, ((label, curves), x0) in enumerate(zip(runs, offsets(runs, chain))):
        color = colors[i % len(colors)]
        train, val = curves['train'], curves['val']
        if chain and i > 0:  # the band says where fine-tuning runs; the line where it starts
            ax.axvspan(x0, x0 + last_iter(curves), color=color, alpha=0.08, linewidth=0)
            ax.axvline(x0, color='grey', linestyle='--', linewidth=0.8)
            ax.text(x0, 0.02, f' {label} starts here', transform=data_x_axes_y, ha='left', va='bottom',  # the top holds the
                    fontsize='small', color=color)  # final val label when fine-tuning overfits
        if train:
            iters, losses = [x0 + p[0] for p in train], [finite(p[1]) for p in train]
            ax.plot(iters, losses, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(iters, smooth(losses, smoothing), color=color, linewidth=1.8, label=f'{label} train')
        if val:
            many = len(val) >= val_line_min  # three points joined by lines suggest a curve nobody measured
            ax.plot([x0 + p[0] for p in val], [finite(p[1]) for p in val], color=color, marker='o', markersize=4,
                    linestyle='--' if many else 'none', linewidth=1.2, label=f'{label} val')
        mark = marks[i] if marks else None
        if mark:
            it, loss, bpc, unigram = mark
            x = x0 + (it if it is not None else last_iter(curves))
            y = loss if loss is not None else (val or train)[-1][1]
            text = f'val {bpc:.2f} bits/char' + (f' (unigram {unigram:.2f})' if unigram is not None else '')
            ax.plot([x], [y], color=color, marker='*', markersize=11, linestyle='none')
            ax.annotate(text, (x, y), textcoords='offset points', xytext=(-6, 10), ha='right', fontsize='small',
                        color=color, bbox=dict(boxstyle='round,pad=0.2', fc='white', ec='none', alpha=0.8))
        lrs = [(x0 + p[0], p[2]) for p in train if isinstance(p[2], (int, float))]
        if lrs:
            ax_lr.plot([p[0] for p in lrs], [p[1] for p in lrs], color=color, linestyle=':', linewidth=1.0,
                       alpha=0.7, label=f'{label} lr')
    ax.set_xlabel('iteration' + (' (each run continues the one before)' if chain and len(runs) > 1 else ''))
    ax.set_ylabel('loss (nats per target token)')
    ax_lr.set_ylabel('learning rate')
    ax_lr.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or (' then ' if chain else ' vs ').join(label for label, _ in runs))
    handles, labels = ax.get_legend_handles_labels()
    lr_handles, lr_labels = ax_lr.get_legend_handles_labels()
    ax.legend(handles + lr_handles, labels + lr_labels, loc='best', fontsize='small')
    fig.tight_layout()  # fits the labels inside the figure; the image size stays width x height
    return fig


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f"--size={text!r}: expected WIDTHxHEIGHT in pixels, like 1600x900")
    return w, h


def main():
    folders = [f.strip() for f in out_dir.split(',') if f.strip()]
    if not folders:
        sys.exit("error: --out_dir names no folder")
    if not 0 <= smoothing <= 1 or val_line_min < 1:
        sys.exit(f"error: need 0 <= --smoothing <= 1 and --val_line_min >= 1 (got {smoothing}, {val_line_min})")
    if not is_number(dpi) or not 10 <= dpi <= 1000:
        sys.exit(f"error: --dpi={dpi}: expected pixels per inch from 10 to 1000, like 100")
    try:
        w, h = parse_size(size) if size else (width, height)
        if w < 100 or h < 100:
            raise ValueError(f"image of {w}x{h} pixels is too small to read; ask for at least 100x100")
        runs = [(run_label(f, folders), read_log(f)) for f in folders]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    marks = [read_bits_per_char(f) for f in folders]
    path = output or os.path.join(folders[0], 'loss.png')
    fig = draw(runs, w, h, dpi, smoothing, title, chain, val_line_min, marks)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)  # no bbox_inches='tight': it would change the size asked for
    plt.close(fig)
    for (label, curves), x0, mark in zip(runs, offsets(runs, chain), marks):
        last = {s: c[-1][1] for s, c in curves.items() if c}
        bad = sum(not math.isfinite(p[1]) for c in curves.values() for p in c)
        print(f"{label}: {len(curves['train'])} train and {len(curves['val'])} val points"
              + (f" ({bad} not finite, left as gaps)" if bad else '')
              + (f", drawn from iteration {x0:g}" if x0 else '') + '; last '
              + ', '.join(f'{s} loss {v:.4f}' for s, v in last.items())
              + (f'; {mark[2]:.3f} bits/char on val' if mark else ''))
    print(f"wrote {path} ({w}x{h})")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

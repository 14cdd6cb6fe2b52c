"""
Loss curves from training logs: train and val loss against iterations, the learning rate on a second
axis, one colour per run, several runs overlaid. Reads only <out_dir>/log.jsonl (DESIGN.md §4).

    python visualize.py --out_dir=out/pretrain
    python visualize.py --out_dir=out/pretrain,out/sft --output=out/loss.png --width=1600 --height=800

The raw train loss is drawn faint, an exponential moving average (--smoothing) over it, and val loss as
points joined by a line. Works without a display (matplotlib's Agg backend).
"""
import os
import sys

import matplotlib

matplotlib.use('Agg')  # no display needed: servers, CI, ssh sessions
import matplotlib.pyplot as plt  # noqa: E402

from data_utils import jsonl_objects  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = 'out/pretrain'  # one or more checkpoint folders, comma-separated
output = ''  # PNG path; '' means loss.png in the first out_dir
width = 1200  # image width in pixels
height = 600  # image height in pixels
size = ''  # WIDTHxHEIGHT, e.g. 1600x900; overrides --width/--height
dpi = 100  # pixels per inch: sets how large text and lines are in the image
smoothing = 0.9  # EMA weight of the past for the train curve; 0 turns smoothing off
title = ''  # figure title; '' means the run names
# -----------------------------------------------------------------------------

REQUIRED = ('iter', 'split', 'loss')


def read_log(folder):
    """{'train': [(iter, loss, lr)], 'val': [...]} from folder/log.jsonl; a bad line stops with file:line."""
    path = os.path.join(folder, 'log.jsonl')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no training log (is --out_dir a folder train.py wrote?)")
    curves = {'train': [], 'val': []}
    for line_no, record, problem in jsonl_objects(path):
        if problem:
            raise ValueError(f"{path}:{line_no}: {problem[1]}")
        for key in REQUIRED:
            if key not in record:
                raise ValueError(f"{path}:{line_no}: no {key!r} field")
        if not isinstance(record['loss'], (int, float)) or not isinstance(record['iter'], (int, float)):
            raise ValueError(f"{path}:{line_no}: iter and loss must be numbers")
        if record['split'] in curves:  # other splits, if a later train.py logs any, are not plotted
            curves[record['split']].append((record['iter'], record['loss'], record.get('lr')))
    if not curves['train'] and not curves['val']:
        raise ValueError(f"{path}: empty, no train or val entries to plot")
    return curves


def ema(values, weight):
    """
    Exponential moving average, bias-corrected so the first points are not pulled towards 0. Its window,
    about 1/(1-weight) points, is kept under a twentieth of the curve: a short run's few points fall fast,
    and a long window would draw the smoothed line far above them.
    """
    weight = max(0.0, min(weight, 1 - 20 / max(len(values), 1)))
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i) if weight else v)
    return out


def run_label(folder, folders):
    """The folder's name, or its whole path when two runs share a name."""
    name = os.path.basename(os.path.normpath(folder))
    same = [f for f in folders if os.path.basename(os.path.normpath(f)) == name]
    return name if len(same) == 1 else os.path.normpath(folder)


def draw(runs, width_px, height_px, dpi=100, smoothing=0.9, title=''):
    """The figure for runs = [(label, curves)], sized width_px x height_px at this dpi."""
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax_lr = ax.twinx()
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (label, curves) in enumerate(runs):
        color = colors[i % len(colors)]
        train, val = curves['train'], curves['val']
        if train:
            iters, losses = [p[0] for p in train], [p[1] for p in train]
            ax.plot(iters, losses, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(iters, ema(losses, smoothing), color=color, linewidth=1.8, label=f'{label} train')
        if val:
            ax.plot([p[0] for p in val], [p[1] for p in val], color=color, linestyle='--', marker='o',
                    markersize=4, linewidth=1.2, label=f'{label} val')
        lrs = [(p[0], p[2]) for p in train if isinstance(p[2], (int, float))]
        if lrs:
            ax_lr.plot([p[0] for p in lrs], [p[1] for p in lrs], color=color, linestyle=':', linewidth=1.0,
                       alpha=0.7, label=f'{label} lr')
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss (nats per token)')
    ax_lr.set_ylabel('learning rate')
    ax_lr.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or ' vs '.join(label for label, _ in runs))
    handles, labels = ax.get_legend_handles_labels()
    lr_handles, lr_labels = ax_lr.get_legend_handles_labels()
    ax.legend(handles + lr_handles, labels + lr_labels, loc='upper right', fontsize='small')
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
    try:
        w, h = parse_size(size) if size else (width, height)
        if w < 100 or h < 100:
            raise ValueError(f"image of {w}x{h} pixels is too small to read; ask for at least 100x100")
        runs = [(run_label(f, folders), read_log(f)) for f in folders]
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    path = output or os.path.join(folders[0], 'loss.png')
    fig = draw(runs, w, h, dpi, smoothing, title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)  # no bbox_inches='tight': it would change the size asked for
    plt.close(fig)
    for label, curves in runs:
        last = {s: c[-1][1] for s, c in curves.items() if c}
        print(f"{label}: {len(curves['train'])} train and {len(curves['val'])} val points; last "
              + ', '.join(f'{s} loss {v:.4f}' for s, v in last.items()))
    print(f"wrote {path} ({w}x{h})")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    main()

"""visualize.py on synthetic training logs in the DESIGN.md §4 format."""
import importlib.util
import json
import math
import os
import struct

import pytest

from conftest import ROOT, run_script

spec = importlib.util.spec_from_file_location('visualize', os.path.join(ROOT, 'visualize.py'))
visualize = importlib.util.module_from_spec(spec)
spec.loader.exec_module(visualize)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, which follows the 8-byte signature."""
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR', f"{path} is not a PNG"
    return struct.unpack('>II', head[16:24])


def write_log(folder, iters, start, end, lr, val_every=50):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'log.jsonl'), 'w', encoding='utf-8') as f:
        for i in range(0, iters + 1, 5):
            loss = end + (start - end) * math.exp(-i / (iters / 5)) + 0.1 * math.sin(i)
            f.write(json.dumps({'iter': i, 'split': 'train', 'loss': loss, 'lr': lr * (1 - i / (iters + 1)),
                                'tokens': i * 4096, 'elapsed': i * 0.1}) + '\n')
            if i % val_every == 0:
                f.write(json.dumps({'iter': i, 'split': 'val', 'loss': loss + 0.2, 'lr': lr,
                                    'tokens': i * 4096, 'elapsed': i * 0.1}) + '\n')
    return str(folder)


def test_two_runs_make_a_png_of_the_requested_size(tmp_path):
    pretrain = write_log(tmp_path / 'out' / 'pretrain', 300, 10.8, 4.0, 2e-3)
    sft = write_log(tmp_path / 'out' / 'sft', 100, 5.0, 2.5, 5e-4, val_every=25)
    png = tmp_path / 'plots' / 'loss.png'
    proc = run_script(['visualize.py', f'--out_dir={pretrain},{sft}', f'--output={png}',
                       '--width=900', '--height=500'])
    assert png_size(png) == (900, 500)
    assert 'pretrain: 61 train and 7 val points' in proc.stdout
    assert 'sft: 21 train and 5 val points' in proc.stdout
    assert f'wrote {png} (900x500)' in proc.stdout
    # --size wins over --width/--height; the default output is loss.png in the first folder
    run_script(['visualize.py', f'--out_dir={sft}', '--size=640x480', '--width=900'])
    assert png_size(os.path.join(sft, 'loss.png')) == (640, 480)


def test_plot_draws_every_curve_with_a_legend(tmp_path):
    runs = [('pretrain', visualize.read_log(write_log(tmp_path / 'a' / 'pretrain', 100, 10.0, 4.0, 1e-3))),
            ('sft', visualize.read_log(write_log(tmp_path / 'b' / 'sft', 60, 5.0, 2.0, 1e-4)))]
    fig = visualize.draw(runs, 800, 400)
    loss_ax, lr_ax = fig.axes
    labels = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert labels == ['pretrain train', 'pretrain val', 'sft train', 'sft val', 'pretrain lr', 'sft lr']
    raw, smooth = loss_ax.lines[0], loss_ax.lines[1]
    assert raw.get_alpha() < 0.5 and list(raw.get_xdata()) == list(range(0, 101, 5))
    assert list(smooth.get_ydata()) == pytest.approx(visualize.ema(list(raw.get_ydata()), 0.9))
    assert lr_ax.get_ylabel() == 'learning rate' and len(lr_ax.lines) == 2
    assert tuple(fig.get_size_inches() * fig.dpi) == (800, 400)
    visualize.plt.close(fig)


def test_ema_is_bias_corrected_and_short_runs_are_not_smoothed_away():
    assert visualize.ema([4.0] * 200, 0.9) == pytest.approx([4.0] * 200)
    values = [1.0, 3.0] + [2.0] * 78  # 80 points: the window may span 4 of them, weight 0.75 < 0.9
    smooth = visualize.ema(values, 0.9)
    assert smooth[:2] == pytest.approx([1.0, (0.75 * 0.25 + 0.25 * 3.0) / (1 - 0.75 ** 2)])
    assert visualize.ema(values[:40], 0.9)[1] == pytest.approx((0.5 * 0.5 + 0.5 * 3.0) / 0.75)  # 40 points: 0.5
    assert visualize.ema([5.0, 4.0, 3.0, 2.0], 0.9) == [5.0, 4.0, 3.0, 2.0]  # too few points to smooth
    assert visualize.ema([1.0, 3.0] * 50, 0.0) == [1.0, 3.0] * 50


def test_bad_logs_are_named(tmp_path):
    missing = tmp_path / 'nothing'
    os.makedirs(missing)
    proc = run_script(['visualize.py', f'--out_dir={missing}'], check=False)
    assert proc.returncode != 0 and f"{missing}/log.jsonl: no training log" in proc.stderr

    empty = tmp_path / 'empty'
    os.makedirs(empty)
    (empty / 'log.jsonl').write_text('\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r'empty/log\.jsonl: empty'):
        visualize.read_log(str(empty))

    bad = tmp_path / 'bad'
    os.makedirs(bad)
    (bad / 'log.jsonl').write_text('{"iter": 0, "split": "train", "loss": 10.9, "lr": 0.001}\n{"iter": 5, "spl',
                                   encoding='utf-8')
    with pytest.raises(ValueError, match=r'bad/log\.jsonl:2: not JSON'):
        visualize.read_log(str(bad))
    (bad / 'log.jsonl').write_text('{"iter": 0, "split": "train", "loss": 10.9}\n\n{"iter": 5, "split": "val"}\n',
                                   encoding='utf-8')
    with pytest.raises(ValueError, match=r"bad/log\.jsonl:3: no 'loss' field"):
        visualize.read_log(str(bad))


def test_labels_are_folder_names_unless_they_clash():
    assert visualize.run_label('out/pretrain/', ['out/pretrain/', 'out/sft']) == 'pretrain'
    assert visualize.run_label('a/sft', ['a/sft', 'b/sft']) == 'a/sft'
    assert visualize.parse_size('1600x900') == (1600, 900)
    with pytest.raises(ValueError, match='WIDTHxHEIGHT'):
        visualize.parse_size('big')

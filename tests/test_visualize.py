"""visualize.py on synthetic training logs in train.py's log.jsonl format."""
import json
import math
import os
import struct

import pytest

from conftest import load_script, run_script

visualize = load_script('visualize.py')


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
    assert 'sft: 21 train and 5 val points, drawn from iteration 300' in proc.stdout
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
    assert list(smooth.get_ydata()) == pytest.approx(visualize.smooth(list(raw.get_ydata()), 0.1))
    assert lr_ax.get_ylabel() == 'learning rate' and len(lr_ax.lines) == 2
    assert tuple(fig.get_size_inches() * fig.dpi) == (800, 400)
    visualize.plt.close(fig)


def test_fine_tuning_is_drawn_after_pretraining():
    pretrain = {'train': [(i, 10.0 - i / 100, 1e-3) for i in range(10, 301, 10)],
                'val': [(0, 10.9, 1e-3), (300, 7.1, 1e-3)]}
    sft = {'train': [(i, 3.0, 1e-4) for i in range(5, 101, 5)], 'val': [(i, 3.2, 1e-4) for i in range(0, 101, 20)]}
    fig = visualize.draw([('pretrain', pretrain), ('sft', sft)], 800, 400)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert max(lines['pretrain train'].get_xdata()) == 300 and max(lines['pretrain val'].get_xdata()) == 300
    assert list(lines['sft train'].get_xdata()) == list(range(305, 401, 5))  # iteration 5 of SFT is 305
    assert list(lines['sft val'].get_xdata()) == list(range(300, 401, 20))  # SFT's iteration 0 is the pretrained model
    assert [t.get_text() for t in ax.texts] == [' sft starts here'] and len(ax.patches) == 1  # the shaded band
    assert ax.patches[0].get_x() == 300 and ax.patches[0].get_width() == 100
    assert 'each run continues' in ax.get_xlabel()
    visualize.plt.close(fig)
    # --chain=False: two runs compared from iteration 0, nothing shaded
    fig = visualize.draw([('pretrain', pretrain), ('sft', sft)], 800, 400, chain=False)
    ax = fig.axes[0]
    assert min({line.get_label(): line for line in ax.lines}['sft train'].get_xdata()) == 5
    assert not ax.texts and not ax.patches and ax.get_xlabel() == 'iteration'
    visualize.plt.close(fig)
    assert visualize.offsets([('a', pretrain), ('b', sft), ('c', sft)]) == [0, 300, 400]


def test_val_points_are_joined_only_when_there_are_enough():
    run = {'train': [(i, 5.0, 1e-3) for i in range(1, 51)], 'val': [(0, 6.0, 1e-3), (25, 5.5, 1e-3), (50, 5.0, 1e-3)]}
    fig = visualize.draw([('few', run)], 800, 400)
    val = [line for line in fig.axes[0].lines if line.get_label() == 'few val'][0]
    assert val.get_linestyle() == 'None' and val.get_marker() == 'o'
    visualize.plt.close(fig)
    fig = visualize.draw([('few', run)], 800, 400, val_line_min=3)
    assert [line for line in fig.axes[0].lines if line.get_label() == 'few val'][0].get_linestyle() == '--'
    visualize.plt.close(fig)


def test_smoothing_starts_at_the_first_loss_and_does_not_lag():
    assert visualize.smooth([4.0] * 200, 0.1) == pytest.approx([4.0] * 200)
    falling = [10.0 - 0.05 * i for i in range(100)]  # a straight fall: a centred window has no lag on it
    smooth = visualize.smooth(falling, 0.1)  # window of 11 points, 5 on each side
    assert smooth[0] == falling[0] and smooth[:95] == pytest.approx(falling[:95])
    assert smooth[-1] == pytest.approx(sum(falling[-6:]) / 6)  # at the end: the last point and the 5 before it
    noisy = visualize.smooth([1.0, 3.0] * 50, 0.1)  # the window reaches back a quarter of the way, 5 at most
    assert noisy[:4] == [1.0, 3.0, 1.0, 3.0] and noisy[4] == pytest.approx(7 / 3)  # 3..5
    assert noisy[50] == pytest.approx((5 * 1.0 + 6 * 3.0) / 11)  # 45..55: six 3s
    assert visualize.smooth([5.0, 4.0, 3.0, 2.0], 0.1) == [5.0, 4.0, 3.0, 2.0]  # too few points to smooth
    assert visualize.smooth([1.0, 3.0] * 50, 0.0) == [1.0, 3.0] * 50
    # a loss falling fast from 10.8: a trailing average draws 7.0 where 5.25 was measured
    steep = [10.8 * 0.7 ** i + 3.0 for i in range(60)]
    assert all(abs(s - v) < 0.03 * v for s, v in zip(visualize.smooth(steep, 0.1), steep))


def test_bits_per_character_are_marked_when_the_run_folder_has_them(tmp_path):
    folder = write_log(tmp_path / 'out' / 'pretrain', 100, 10.0, 4.0, 1e-3)
    assert visualize.read_bits_per_char(folder) is None  # not evaluated: nothing to mark
    with open(os.path.join(folder, 'perplexity_val.json'), 'w', encoding='utf-8') as f:
        json.dump({'ppl': 60.0, 'loss': 4.1}, f)  # an evaluation without bits per character: still nothing
    assert visualize.read_bits_per_char(folder) is None
    with open(os.path.join(folder, 'perplexity_val.json'), 'w', encoding='utf-8') as f:
        json.dump({'ppl': 60.0, 'loss': 4.1, 'iter_num': 100, 'bits_per_char': 5.83, 'unigram_bits_per_char': 9.5}, f)
    mark = visualize.read_bits_per_char(folder)
    assert mark == (100, 4.1, 5.83, 9.5)
    fig = visualize.draw([('pretrain', visualize.read_log(folder))], 800, 400, marks=[mark])
    assert [t.get_text() for t in fig.axes[0].texts] == ['val 5.83 bits/char (unigram 9.50)']
    visualize.plt.close(fig)
    proc = run_script(['visualize.py', f'--out_dir={folder}'])
    assert '5.830 bits/char on val' in proc.stdout


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
    (bad / 'log.jsonl').write_text('{"iter": 0, "split": "train", "loss": 10.9, "lr": 0.001}\n{"iter": 5, "spl\n'
                                   '{"iter": 10, "split": "train", "loss": 9.0}\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r'bad/log\.jsonl:2: not JSON'):  # a bad line with lines after it
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


@pytest.mark.slow
def test_a_torn_last_line_is_skipped_with_a_note(tmp_path, capsys):
    folder = tmp_path / 'torn'
    os.makedirs(folder)
    (folder / 'log.jsonl').write_text('{"iter": 0, "split": "train", "loss": 10.9, "lr": 0.001}\n'
                                      '{"iter": 5, "split": "val", "loss": 9.5}\n{"iter": 10, "split": "tr',
                                      encoding='utf-8')
    assert visualize.read_log(str(folder)) == {'train': [(0, 10.9, 0.001)], 'val': [(5, 9.5, None)]}
    assert f'note: {folder}/log.jsonl:3: not JSON' in capsys.readouterr().err
    proc = run_script(['visualize.py', f'--out_dir={folder}'])
    assert 'torn: 1 train and 1 val points' in proc.stdout and 'log.jsonl:3: not JSON' in proc.stderr


@pytest.mark.slow
def test_bad_settings_and_fields_are_one_line_errors(tmp_path):
    folder = write_log(tmp_path / 'run', 20, 5.0, 4.0, 1e-3)
    proc = run_script(['visualize.py', f'--out_dir={folder}', '--dpi=0'], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'error: --dpi=0: expected pixels per inch from 10 to 1000, like 100'
    with open(os.path.join(folder, 'log.jsonl'), 'a', encoding='utf-8') as f:
        f.write('{"iter": 25, "split": ["train"], "loss": 3.9}\n')
    proc = run_script(['visualize.py', f'--out_dir={folder}'], check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip() == f'error: {folder}/log.jsonl:7: split must be a name such as "train", ' \
        "not ['train']"  # after 5 train lines and 1 val line


@pytest.mark.slow
def test_a_nan_or_inf_loss_leaves_a_gap_not_the_end_of_the_smoothed_line(tmp_path):
    values = [3.0] * 40 + [math.nan] + [3.0] * 40 + [math.inf] + [3.0] * 18
    smooth = visualize.smooth(values, 0.1)
    assert smooth == pytest.approx([3.0] * 100)  # each window still holds finite losses: their mean
    assert math.isnan(visualize.smooth([math.nan] * 30, 0.2)[5])  # no finite loss in the window: nothing to draw
    folder = tmp_path / 'diverged'
    os.makedirs(folder)
    with open(folder / 'log.jsonl', 'w', encoding='utf-8') as f:
        for i in range(100):
            loss = float('nan') if i == 30 else float('inf') if i == 60 else 5.0 - i / 100
            f.write(json.dumps({'iter': i, 'split': 'train', 'loss': loss, 'lr': 1e-3}) + '\n')  # NaN, Infinity
    fig = visualize.draw([('diverged', visualize.read_log(str(folder)))], 800, 400)
    raw, smoothed = fig.axes[0].lines[0], fig.axes[0].lines[1]
    ys = list(smoothed.get_ydata())
    assert all(math.isfinite(y) for y in ys) and ys[99] == pytest.approx(sum(5.0 - i / 100 for i in range(94, 100)) / 6)
    assert [i for i, y in enumerate(raw.get_ydata()) if not math.isfinite(y)] == [30, 60]  # gaps in the raw line
    assert all(math.isfinite(y) for y in fig.axes[0].get_ylim())
    visualize.plt.close(fig)
    proc = run_script(['visualize.py', f'--out_dir={folder}'])
    assert 'diverged: 100 train and 0 val points (2 not finite, left as gaps)' in proc.stdout

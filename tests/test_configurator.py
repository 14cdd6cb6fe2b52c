"""configurator.py as train.py uses it: config files, --key=value overrides, type checks, --help."""
import os
import sys

import pytest

from conftest import ROOT, run_script

CONFIGURATOR = open(os.path.join(ROOT, 'configurator.py'), encoding='utf-8').read()


def configure(argv, **defaults):
    """Runs the configurator over `defaults` as a script's module globals would be, with argv as sys.argv[1:]."""
    scope = {'__doc__': 'a test script', **defaults}
    saved = sys.argv
    sys.argv = ['script.py', *argv]
    try:
        exec(CONFIGURATOR, scope)
    finally:
        sys.argv = saved
    return scope


def test_config_file_then_overrides(tmp_path):
    config = tmp_path / 'run.py'
    config.write_text("n_layer = 3\nbatch_size = 8\nout_dir = 'out/file'\n")
    scope = configure([str(config), '--batch_size=2', '--learning_rate=1', '--device=cuda:1', '--compile=False'],
                      n_layer=12, batch_size=16, out_dir='out', learning_rate=6e-4, device='auto', compile=True)
    assert scope['n_layer'] == 3 and scope['out_dir'] == 'out/file'  # from the file
    assert scope['batch_size'] == 2  # the override comes after the file and wins
    assert scope['learning_rate'] == 1.0 and isinstance(scope['learning_rate'], float)  # an int is fine for a float
    assert scope['device'] == 'cuda:1' and scope['compile'] is False


def test_unknown_key_and_wrong_type_are_refused():
    with pytest.raises(SystemExit) as e:
        configure(['--batch_sise=4'], batch_size=16)
    assert '--batch_sise' in str(e.value) and 'unknown' in str(e.value)
    with pytest.raises(SystemExit) as e:
        configure(['--batch_size=4.5'], batch_size=16)
    assert '--batch_size expects int' in str(e.value) and '4.5' in str(e.value)
    with pytest.raises(SystemExit) as e:
        configure(['--batch_size'], batch_size=16)
    assert 'needs a value' in str(e.value)


def test_train_py_refuses_an_unknown_key_and_a_wrong_type():
    proc = run_script(['train.py', '--max_itters=5'], check=False)
    assert proc.returncode != 0 and '--max_itters' in proc.stderr
    proc = run_script(['train.py', 'config/train_config_cpu.py', '--max_iters=lots'], check=False)
    assert proc.returncode != 0 and '--max_iters expects int' in proc.stderr


def test_train_py_help_lists_the_settings():
    proc = run_script(['train.py', 'config/train_config_cpu.py', '--help'])
    assert 'torchrun --standalone --nproc_per_node=8 train.py config/train_config.py' in proc.stdout
    for setting in ("--init_from='scratch'", "--dtype='float32'", "--device='cpu'", "--sample_mode='bucket'",
                    '--epochs=0.0', "--data_dir=''"):
        assert setting in proc.stdout, setting  # the config file's values, shown after it was read


def test_a_string_setting_takes_any_text():
    scope = configure(['--dataset=2024', '--out_dir=1e3', '--start=[1, 2]', '--device=None', '--empty='],
                      dataset='sample', out_dir='out', start='', device='auto', empty='x')
    assert scope['dataset'] == '2024' and scope['out_dir'] == '1e3' and scope['start'] == '[1, 2]'
    assert scope['device'] == 'None' and scope['empty'] == ''
    with pytest.raises(SystemExit, match='--max_iters expects int'):
        configure(['--max_iters=2024.5'], max_iters=10)  # other types are still checked


def test_a_missing_or_broken_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        configure([str(tmp_path / 'nothere.py')], batch_size=16)
    assert f'config file {tmp_path / "nothere.py"} not found' in str(e.value)
    (tmp_path / 'broken.py').write_text('batch_size = 8\nn_layer = (\n')
    with pytest.raises(SystemExit, match=r'broken\.py:2: .*never closed'):
        configure([str(tmp_path / 'broken.py')], batch_size=16)
    (tmp_path / 'raises.py').write_text('batch_size = undefined\n')
    with pytest.raises(SystemExit, match=r"raises\.py: NameError: name 'undefined'"):
        configure([str(tmp_path / 'raises.py')], batch_size=16)
    proc = run_script(['train.py', 'config/train_config_cpus.py'], check=False)  # a typo in the README's command
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert 'config file config/train_config_cpus.py not found' in proc.stderr


def test_a_bare_argument_that_is_not_a_py_file_is_refused_not_executed(tmp_path):
    other = tmp_path / 'other.jsonl'
    other.write_text('batch_size = 99\n', encoding='utf-8')
    with pytest.raises(SystemExit) as e:
        configure([str(other)], batch_size=16)
    assert str(e.value) == f'error: {other} is neither a setting (--key=value) nor a config file (a .py file)'
    config = tmp_path / 'run.py'
    config.write_text('batch_size = 8\n', encoding='utf-8')
    assert configure([str(config)], batch_size=16)['batch_size'] == 8

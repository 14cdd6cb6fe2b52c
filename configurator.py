# Overrides the calling script's module globals, nanoGPT style:
#
#     python train.py config/train_config_cpu.py --batch_size=8 --device=cpu
#
# A bare argument is a config file executed over the globals; --key=value sets one global.
# Unknown keys and values of the wrong type stop the run with a message naming the key.
# Use it as:  exec(open(os.path.join(os.path.dirname(__file__), 'configurator.py')).read())
# (No docstring here on purpose: exec would overwrite the caller's __doc__, which --help prints.)
import sys
from ast import literal_eval

for arg in sys.argv[1:]:
    if arg in ('-h', '--help'):
        print(globals().get('__doc__') or '')
        print('settings (--key=value) and their defaults:')
        for _k, _v in list(globals().items()):
            if _k.islower() and not _k.startswith('_') and isinstance(_v, (int, float, bool, str)):
                print(f'  --{_k}={_v!r}')
        sys.exit(0)
    if not arg.startswith('--'):
        with open(arg, encoding='utf-8') as f:
            exec(f.read())
        continue
    if '=' not in arg:
        sys.exit(f"error: {arg} needs a value, as in {arg}=...")
    key, val = arg[2:].split('=', 1)
    if key not in globals() or key.startswith('_'):
        sys.exit(f"error: unknown setting --{key}; run with --help to list them")
    try:
        attempt = literal_eval(val)
    except (SyntaxError, ValueError):
        attempt = val  # a bare string such as --device=cuda
    old = globals()[key]
    if isinstance(old, float) and type(attempt) is int:
        attempt = float(attempt)
    if old is not None and type(attempt) != type(old):
        sys.exit(f"error: --{key} expects {type(old).__name__} (like {old!r}), got {val!r}")
    globals()[key] = attempt

# Overrides the calling script's module globals, nanoGPT style:
#
#     python train.py config/train_config_cpu.py --batch_size=8 --device=cpu
#
# A bare argument ending in .py is a config file executed over the globals; --key=value sets one global. Any
# other bare argument is refused, never executed: a script's own inputs (ratings.py's votes file) are taken
# out of sys.argv by the script before it runs this.
# Unknown keys and values of the wrong type stop the run with a message naming the key. A string setting
# takes the text as given (--dataset=2024 is the string '2024'); others are read as Python literals.
# Use it as:  exec(open(os.path.join(os.path.dirname(__file__), 'configurator.py')).read())
# (No docstring here on purpose: exec would overwrite the caller's __doc__, which --help prints.)
import os
import sys
from ast import literal_eval

for _arg in sys.argv[1:]:
    if _arg in ('-h', '--help'):
        print(globals().get('__doc__') or '')
        print('settings (--key=value) and their defaults:')
        for _k, _v in list(globals().items()):
            if _k.islower() and not _k.startswith('_') and isinstance(_v, (int, float, bool, str)):
                print(f'  --{_k}={_v!r}')
        sys.exit(0)
    if not _arg.startswith('--'):
        if not _arg.endswith('.py'):
            sys.exit(f"error: {_arg} is neither a setting (--key=value) nor a config file (a .py file)")
        if not os.path.isfile(_arg):
            sys.exit(f"error: config file {_arg} not found (settings are given as --key=value)")
        try:
            with open(_arg, encoding='utf-8') as _f:
                exec(_f.read())  # not compile(): train.py has a setting named compile
        except SyntaxError as _e:
            sys.exit(f"error: config file {_arg}:{_e.lineno}: {_e.msg}")
        except Exception as _e:  # a config file is Python: its mistakes are reported as the file's, not as ours
            sys.exit(f"error: config file {_arg}: {type(_e).__name__}: {_e}")
        continue
    if '=' not in _arg:
        sys.exit(f"error: {_arg} needs a value, as in {_arg}=...")
    _key, _val = _arg[2:].split('=', 1)
    if _key not in globals() or _key.startswith('_'):
        sys.exit(f"error: unknown setting --{_key}; run with --help to list them")
    _old = globals()[_key]
    try:
        _attempt = _val if isinstance(_old, str) else literal_eval(_val)
    except (SyntaxError, ValueError):
        _attempt = _val  # a bare string such as --device=cuda
    if isinstance(_old, float) and type(_attempt) is int:
        _attempt = float(_attempt)
    if _old is not None and type(_attempt) != type(_old):
        sys.exit(f"error: --{_key} expects {type(_old).__name__} (like {_old!r}), got {_val!r}")
    globals()[_key] = _attempt

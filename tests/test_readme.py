"""
The README's commands work as printed: every script it runs exists and knows every --setting it is given, and
a reader is told to activate the environment before the first `python` command. (The main command runs the
stages end to end in test_main_command; the DDP command runs in test_train.)
"""
import os
import re
import shlex

import pytest

from conftest import ROOT, run_script

README = os.path.join(ROOT, 'README.md')


def readme_commands():
    """(script, [--settings]) for every python/torchrun line of the README's bash blocks, continuations joined."""
    text = open(README, encoding='utf-8').read()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            if not re.search(r'\b(python|torchrun) ', line):
                continue
            words, parts = shlex.split(line, comments=True), [[]]
            for w in words:  # commands joined with && ; | on one line
                parts.append([]) if w in ('&&', ';', '|') else parts[-1].append(w)
            for words in parts:
                while words and re.match(r'^[A-Z_]+=', words[0]):  # OPENAI_API_KEY=... python ...
                    words = words[1:]
                if not words or words[0] not in ('python', 'torchrun'):
                    continue
                script = next((w for w in words[1:] if w.endswith('.py')), None)
                if script is None or words[1] == '-m':
                    continue
                settings = [w[2:].split('=', 1)[0] for w in words[words.index(script) + 1:] if w.startswith('--')]
                commands.append((script, settings))
    return commands


def test_the_readme_has_commands_and_says_to_activate_the_environment():
    commands = readme_commands()
    scripts = {s for s, _ in commands}
    assert len(commands) > 20 and {'train.py', 'data/prepare.py', 'server.py', 'export.py'} <= scripts
    text = open(README, encoding='utf-8').read()
    first_python = min(m.start() for m in re.finditer(r'\npython \w', text))
    assert 'source .venv/bin/activate' in text[:first_python]


@pytest.fixture(scope='module')
def known_settings():
    """script -> the --settings its --help lists (configurator scripts print them all)."""
    cache = {}

    def settings(script):
        if script not in cache:
            proc = run_script([script, '--help'], timeout=120)
            cache[script] = set(re.findall(r'--([a-z_0-9]+)', proc.stdout))
        return cache[script]
    return settings


@pytest.mark.parametrize('script', sorted({s for s, _ in readme_commands()}))
def test_every_readme_command_names_a_script_and_settings_it_knows(script, known_settings):
    assert os.path.isfile(os.path.join(ROOT, script)), f"README runs {script}, which does not exist"
    known = known_settings(script)
    for name, settings in readme_commands():
        if name == script:
            unknown = [s for s in settings if s not in known]
            assert not unknown, f"README gives {script} --{unknown[0]}, which its --help does not list"

"""
The house rules a reader relies on: modules import in one direction, comments describe the code as it is (no
history, no documents a clone lacks), and every project file the README or a comment names exists.
"""
import ast
import os
import re

from conftest import ROOT

SKIP_DIRS = {'.git', '.venv', 'runs', 'out', 'export', '__pycache__', 'node_modules'}


def project_files(ext):
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith('.')]
        for f in files:
            if f.endswith(ext):
                yield os.path.join(folder, f)


def top_level_modules():
    return {os.path.splitext(f)[0]: os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith('.py')}


def imports_of(path, names):
    """The project's top-level modules that a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            found |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split('.')[0])
    return found & set(names)


def test_no_module_imports_one_that_imports_it_back():
    modules = top_level_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in graph[start])
    loops = sorted(f'{a} -> {b} -> ... -> {a}' for a in graph for b in graph[a] if reaches(b, a, set()))
    assert loops == [], loops
    assert 'tokenizer' not in graph['model'] and 'checkpoint' not in graph['model']  # the network alone
    assert 'model' not in graph['tokenizer'] and 'checkpoint' not in graph['tokenizer']


def test_comments_cite_no_history_and_no_missing_documents():
    pattern = re.compile('|'.join([r'DESIGN' + r'\.md', 'the ' + "seed's", r'\bissue' + r' \d+', r'\bdefect' + r' \d+']))
    offenders = [f'{os.path.relpath(p, ROOT)}:{i}: {line.strip()[:80]}'
                 for p in project_files('.py') for i, line in enumerate(open(p, encoding='utf-8'), 1)
                 if pattern.search(line)]
    assert offenders == [], '\n'.join(offenders)


def named_paths(text):
    """Paths of scripts and shipped files in a text (a .py, .sh or .example.json, with its folders)."""
    names = re.findall(r'(?<![\w./<-])((?:[\w-]+/)*[\w-]+\.(?:py|sh|example\.json))\b', text)
    return {n for n in names if not re.fullmatch(r'[A-Z]', os.path.splitext(os.path.basename(n))[0])}  # config/X.py


def test_every_file_the_readme_or_a_comment_names_exists():
    everything = {os.path.relpath(p, ROOT) for ext in ('.py', '.sh', '.json') for p in project_files(ext)}
    basenames = {os.path.basename(p) for p in everything}
    tests = os.path.join(ROOT, 'tests', '')  # tests name files they make themselves
    sources = [os.path.join(ROOT, 'README.md'), os.path.join(ROOT, 'run.sh')] + \
        [p for p in project_files('.py') if not p.startswith(tests)]
    missing = []
    for path in sources:
        for name in named_paths(open(path, encoding='utf-8').read()):
            if name in everything or ('/' not in name and name in basenames):
                continue
            if name.startswith(('nanochat/', 'nanogpt/', 'fastchat/', 'scripts/', 'nanovllm/')) or '/' in name and \
                    not os.path.isdir(os.path.join(ROOT, name.split('/')[0])):
                continue  # another project's file, named as a source of an idea
            missing.append(f'{os.path.relpath(path, ROOT)} names {name}')
    assert sorted(set(missing)) == [], '\n'.join(sorted(set(missing)))

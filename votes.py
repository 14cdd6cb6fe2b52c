"""
The votes store: one SQLite file that the arena, the judge and ratings.py share.

    import votes
    db = votes.connect('out/arena.db')              # created on first use; WAL, so readers never block a vote
    votes.add_vote(db, record)                       # False when that battle id already has a vote
    for record in votes.records(db): ...             # every vote, oldest first, as the dicts that were added
    votes.import_jsonl(db, 'votes.jsonl')            # an older arena's votes file, once
    votes.export(db, 'votes.csv')                    # .jsonl or .csv, for analysis elsewhere

A record is the object a votes.jsonl line holds (README: Formats): battle_id, model_a, model_b, vote ('A', 'B',
'tie', 'both_bad'), leaked, prompt, answers, times..., plus who voted: voter (a name, '' when anonymous) and
voter_kind ('human', or 'judge:<model>' for an automatic judge). Tables: battles (prompt, both answers, times,
flags), votes (one per battle), voters, contestants (the registered servers, as last probed) and imports (files
already imported). Each vote is one transaction, so a kill in the middle leaves either the whole vote or none of
it; several processes may share one file (a busy timeout waits for the writer in front). synchronous=NORMAL in WAL
mode: a killed process loses nothing it acknowledged; a power cut may lose the last few votes, never corrupt the file.
"""
import csv
import hashlib
import json
import sqlite3
import threading
from datetime import datetime, timezone

from corpus import jsonl_objects

BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's transaction before giving up
OUTCOMES = ('A', 'B', 'tie', 'both_bad')
WRITE_LOCK = threading.Lock()  # one connection's transactions may not interleave across the page's threads

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    battle_id TEXT NOT NULL UNIQUE,
    time TEXT,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    vote TEXT NOT NULL,
    voter TEXT NOT NULL DEFAULT '',
    voter_kind TEXT NOT NULL DEFAULT 'human',
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    time TEXT,
    prompt TEXT,
    params TEXT,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    answer_a TEXT,
    answer_b TEXT,
    seconds_a REAL,
    seconds_b REAL,
    leaked INTEGER NOT NULL DEFAULT 0,
    flags TEXT
);
CREATE TABLE IF NOT EXISTS voters (name TEXT PRIMARY KEY, kind TEXT NOT NULL, first_vote TEXT);
CREATE TABLE IF NOT EXISTS contestants (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    registered TEXT,
    last_seen REAL,
    up INTEGER NOT NULL DEFAULT 1,
    latency REAL,
    tokens_per_s REAL
);
CREATE TABLE IF NOT EXISTS imports (sha256 TEXT PRIMARY KEY, path TEXT, time TEXT, votes INTEGER);
"""
CSV_FIELDS = ['battle_id', 'time', 'model_a', 'model_b', 'vote', 'voter', 'voter_kind', 'leaked', 'prompt', 'answer_a',
              'answer_b', 'seconds_a', 'seconds_b']


def connect(path):
    """An open connection to the store at path, created with its tables when new."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
    try:
        db.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
        db.execute('PRAGMA journal_mode = WAL')
        db.execute('PRAGMA synchronous = NORMAL')
        with WRITE_LOCK:
            db.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        db.close()
        raise ValueError(f'{path}: not a votes database ({e})') from e
    return db


def vote_problem(v):
    """What is wrong with one votes record, or None."""
    for key in ('model_a', 'model_b'):
        if not isinstance(v.get(key), str) or not v[key].strip():
            return f'"{key}" must be a non-empty string, got {v.get(key)!r:.60}'
    if v['model_a'] == v['model_b']:
        return f'a model against itself ({v["model_a"]!r})'
    if not isinstance(v.get('vote'), str) or v['vote'] not in OUTCOMES:
        return f'"vote" must be one of {list(OUTCOMES)}, got {v.get("vote")!r:.60}'
    if not isinstance(v.get('leaked', False), bool):
        return f'"leaked" must be true or false, got {v["leaked"]!r:.60}'
    if not isinstance(v.get('battle_id', ''), str):
        return f'"battle_id" must be a string, got {v["battle_id"]!r:.60}'
    for key in ('voter', 'voter_kind'):
        if not isinstance(v.get(key, ''), str):
            return f'"{key}" must be a string, got {v[key]!r:.60}'
    return None


def insert(db, record):
    """The vote's rows, inside the caller's transaction; False when its battle already has a vote."""
    r = dict(record)
    r.setdefault('voter', '')
    r.setdefault('voter_kind', 'human')
    flags = {k: r[k] for k in ('leak_words', 'over_long', 'stopped', 'failed') if k in r}
    try:
        db.execute('INSERT INTO votes (battle_id, time, model_a, model_b, vote, voter, voter_kind, record) '
                   'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                   (r['battle_id'], r.get('time'), r['model_a'], r['model_b'], r['vote'], r['voter'], r['voter_kind'],
                    json.dumps(r, ensure_ascii=False)))
    except sqlite3.IntegrityError:
        return False
    db.execute('INSERT OR REPLACE INTO battles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
               (r['battle_id'], r.get('time'), r.get('prompt'), json.dumps(r.get('params'), ensure_ascii=False),
                r['model_a'], r['model_b'], r.get('answer_a'), r.get('answer_b'), r.get('seconds_a'), r.get('seconds_b'),
                int(bool(r.get('leaked', False))), json.dumps(flags, ensure_ascii=False)))
    if r['voter']:
        db.execute('INSERT OR IGNORE INTO voters VALUES (?, ?, ?)', (r['voter'], r['voter_kind'], r.get('time')))
    return True


def add_vote(db, record):
    """Stores one vote in its own transaction; False (and nothing written) when its battle already has one.
    ValueError for a record that is not a vote."""
    why = vote_problem(record) or (None if isinstance(record.get('battle_id'), str) else '"battle_id" is missing')
    if why:
        raise ValueError(why)
    with WRITE_LOCK:
        db.execute('BEGIN IMMEDIATE')
        try:
            written = insert(db, record)
        except BaseException:
            db.execute('ROLLBACK')
            raise
        db.execute('COMMIT')
    return written


def records(db):
    """Every stored vote, oldest first, as the dicts add_vote was given (with voter and voter_kind filled in)."""
    return [json.loads(r) for (r,) in db.execute('SELECT record FROM votes ORDER BY id')]


def vote_rows(db):
    """(model_a, model_b, vote, leaked, voter, time, voter_kind) of every vote, oldest first: what the ranking needs,
    without parsing each record."""
    return db.execute('SELECT v.model_a, v.model_b, v.vote, COALESCE(b.leaked, 0), v.voter, v.time, v.voter_kind '
                      'FROM votes v '
                      'LEFT JOIN battles b ON b.battle_id = v.battle_id ORDER BY v.id').fetchall()


def import_jsonl(db, path):
    """
    A votes.jsonl file's votes added in one transaction: (added, already there, bad lines as 'path:line (why)').
    A line without a battle id gets one made of the file's hash and its line number. ValueError when this file
    (the same bytes) was imported before: importing twice would be harmless, but saying so catches a mistake.
    """
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with WRITE_LOCK:
        seen = db.execute('SELECT path, time FROM imports WHERE sha256 = ?', (digest,)).fetchone()
        if seen:
            raise ValueError(f'{path}: already imported (as {seen[0]}, {seen[1]})')
        added, present, bad = 0, 0, []
        db.execute('BEGIN IMMEDIATE')
        try:
            for line_no, v, problem in jsonl_objects(path):
                why = problem[1] if problem else vote_problem(v)
                if why:
                    bad.append(f'{path}:{line_no} ({why})')
                    continue
                v = dict(v)
                v.setdefault('battle_id', f'{digest[:16]}:{line_no}')
                if insert(db, v):
                    added += 1
                else:
                    present += 1
            db.execute('INSERT INTO imports VALUES (?, ?, ?, ?)',
                       (digest, path, datetime.now(timezone.utc).isoformat(timespec='seconds'), added))
        except BaseException:
            db.execute('ROLLBACK')
            raise
        db.execute('COMMIT')
    return added, present, bad


def export(db, path):
    """Every vote written to path: JSON lines (.jsonl, the full records) or CSV (.csv, one row per vote); the count."""
    rows = records(db)
    if path.endswith('.jsonl'):
        with open(path, 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
    elif path.endswith('.csv'):
        with open(path, 'w', encoding='utf-8-sig', newline='') as f:  # -sig: Excel reads the Chinese right
            out = csv.DictWriter(f, CSV_FIELDS, extrasaction='ignore')
            out.writeheader()
            out.writerows(rows)
    else:
        raise ValueError(f'{path}: export to a .jsonl or a .csv file')
    return len(rows)


def save_contestant(db, c):
    """Inserts or updates one registered contestant (a dict with the table's columns)."""
    with WRITE_LOCK:
        db.execute('INSERT OR REPLACE INTO contestants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                   (c['name'], c['owner'], c['url'], c['kind'], c.get('model'), c.get('registered'), c.get('last_seen'),
                    int(bool(c.get('up', True))), c.get('latency'), c.get('tokens_per_s')))


def contestants(db):
    """The registered contestants as dicts, by name."""
    cursor = db.execute('SELECT * FROM contestants ORDER BY name')
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row)) for row in cursor.fetchall()]

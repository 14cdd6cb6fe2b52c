"""
The votes store: one SQLite file that the arena, the judge and ratings.py share.

    import votes
    db = votes.connect('out/arena.db')              # created on first use; WAL, so readers never block a vote
    votes.add_vote(db, record)                       # False when that battle id already has a vote
    for record in votes.records(db): ...             # every vote, oldest first, as the dicts that were added

A record is the object a votes.jsonl line holds (README: Formats): battle_id, model_a, model_b, vote ('A', 'B',
'tie', 'both_bad'), leaked, prompt, answers, times..., plus who voted: voter (a name, '' when anonymous) and
voter_kind ('human', or 'judge:<model>' for an automatic judge). Each vote is one transaction, so a kill in the
middle leaves either the whole vote or none of it; several processes may share one file (a busy timeout waits
for the writer in front).
"""
import json
import sqlite3

BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's transaction before giving up

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
"""


def connect(path):
    """An open connection to the store at path, created with its tables when new."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
    db.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
    db.execute('PRAGMA journal_mode = WAL')
    db.executescript(SCHEMA)
    return db


def add_vote(db, record):
    """Stores one vote in its own transaction; False (and nothing written) when its battle already has one."""
    record = dict(record)
    record.setdefault('voter', '')
    record.setdefault('voter_kind', 'human')
    try:
        with db:  # BEGIN ... COMMIT, or ROLLBACK on any error
            db.execute('BEGIN IMMEDIATE')
            db.execute('INSERT INTO votes (battle_id, time, model_a, model_b, vote, voter, voter_kind, record) '
                       'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                       (record['battle_id'], record.get('time'), record['model_a'], record['model_b'], record['vote'],
                        record['voter'], record['voter_kind'], json.dumps(record, ensure_ascii=False)))
    except sqlite3.IntegrityError:
        return False
    return True


def records(db):
    """Every stored vote, oldest first, as the dicts add_vote was given (with voter and voter_kind filled in)."""
    return [json.loads(r) for (r,) in db.execute('SELECT record FROM votes ORDER BY id')]

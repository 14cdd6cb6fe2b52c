"""
An automatic judge for the arena: it compares two contestants' answers to a question and votes in the arena's
votes store, beside people's votes and marked as the judge's. Every run also measures how far the judge can be
trusted, and says so. The judge is an LLM on any OpenAI-compatible server (LM Studio, Ollama, llama.cpp, vLLM),
or, offline, rules that prefer the answer nearer the reference answer (judge_verdicts.py).

    OPENAI_API_KEY=lm-studio python judge.py --questions=data/sft_heldout.jsonl --base_url=http://localhost:1234/v1 \\
        --model=qwen2.5-7b-instruct                       # the contestants of peers.json (or out/sft, out/pretrain)
    python judge.py --questions=examples.csv --checkpoints=out/pretrain_25,out/pretrain_50,out/pretrain --pairs=0
    python judge.py --backend=rules --checkpoints=out/pretrain,out/sft   # no LLM: Rouge-L against the reference
    python judge.py --board_only=True                     # the leaderboards of the store: people, judge, both

Questions: a JSONL of {"question", "answer"?} (sft_generate's output; the answer is the reference the judge is
shown) or a CSV with a "prompt" column and an optional "reference" one (examples.csv; a prompt without a final
## is a text to continue). For each question, --pairs contestant pairs are drawn as the arena draws them (never
one model against itself); each answers, and the judge is asked twice, the answers shown in both orders. A win
counts only when both orders name the same winner; otherwise the vote is a tie. The vote goes into the store
(votes.py) with the arena's fields plus voter=<judge model>, voter_kind='judge:<model>' ('judge:rules') and the
two raw verdicts. Its battle id is made of the judge, the question and the pair, so a rerun skips what is judged.
The calibration (judge_calibration.py) is printed and saved to <votes>.calibration.json, then the leaderboards
of people, the judge and both (judge_boards.py). A battle without a verdict is written to <votes>.rejects.jsonl
and tried again on a rerun; a judge server that refuses the key or model, or fails --max_down battles in a row
(or a calibration probe), stops the run with one line.
"""
import hashlib
import json
import os
import random
import sys
from collections import Counter
from datetime import datetime, timezone

import contestants
from checkpoint import checkpoint_path
import votes as store
from corpus import jsonl_objects
from judge_boards import boards_by_voter, checkpoint_summary, side_by_side
from judge_calibration import calibration, calibration_text, run_probes, save_calibration
from judge_verdicts import JudgeDown, JudgeFailed, both_orders, llm_judge, rules_judge
from sft.sft_generate import ask_chat

# -----------------------------------------------------------------------------
questions = 'sft/sft_saves.jsonl'  # JSONL of {"question", "answer"?}, or a CSV with prompt[,reference] (examples.csv)
limit = 50  # the first this many questions (0: all)
peers = ''  # contestants file (peers.example.json's format); empty: --checkpoints, else out/sft and out/pretrain
checkpoints = ''  # comma-separated checkpoint folders (one training run's): each is a contestant named by its folder
pairs = 1  # contestant pairs judged per question, drawn with the arena's odds (0: every pair)
votes = 'out/arena.db'  # the votes store the arena writes; calibration and rejects are written beside it
backend = 'openai'  # the judge: 'openai' (an LLM on any OpenAI-compatible server) or 'rules' (offline, Rouge-L)
rules_margin = 0.1  # rules: Rouge-L F by which the answer nearer the reference must lead to win, else a tie
base_url = 'http://localhost:1234/v1'  # openai: the judge's server (LM Studio's default address)
model = 'qwen2-7b-instruct'  # the judge model, as its server names it
api_key_env = 'OPENAI_API_KEY'  # name of the environment variable holding the judge server's key
temperature = 0.0  # the judge's: greedy, so the same pair gets the same verdict
timeout = 120.0  # seconds per judge request
max_attempts = 3  # requests per verdict before the battle is set aside (a rerun tries it again)
backoff = 1.0  # seconds before the second attempt, doubling after each failure
max_down = 3  # this many battles in a row without any answer from the judge: it is down, stop
human_battles = 50  # the store's first this many human-voted battles are also judged (agreement with people)
probes = 4  # questions with a reference answer used for the calibration probes
min_consistency = 0.6  # share of pairs judged the same in both orders below which the judge is not trusted
min_probe = 0.75  # share of each probe kind passed below which the judge is not trusted
min_kappa = 0.4  # Cohen's kappa with people below which a warning is printed
min_overlap = 10  # battles judged by people and the judge from which a low kappa also makes the judge not trusted
max_new_tokens = 100  # the contestants' answers: the arena's defaults, greedy
answer_temperature = 0.0
top_k = 20
presence_penalty = 1.0
frequency_penalty = 1.0
answer_timeout = 30.0  # seconds a peer may stay silent while answering
device = 'cpu'  # for local checkpoints
seed = 0  # the pair draw: the same questions always get the same pairs
board_only = False  # only print the leaderboards of the store (no judging)
bootstrap_rounds = 200  # the leaderboards' intervals, as ratings.py
min_battles = 10  # as ratings.py: fewer counted battles give no interval and no rank
# -----------------------------------------------------------------------------

# the contestants' sampling when a caller gives none (the defaults above, before any --key=value)
PARAMS = {'max_new_tokens': max_new_tokens, 'temperature': answer_temperature, 'top_k': top_k, 'top_p': 1.0,
          'presence_penalty': presence_penalty, 'frequency_penalty': frequency_penalty}


# ----------------------------------------------------------------------------- the question set
def read_prompt(prompt):
    """(question as the judge reads it, task): a prompt ending in ## is a question, any other a text to continue."""
    stripped = prompt.strip()
    return (stripped[:-2].strip(), 'question') if stripped.endswith('##') else (stripped, 'continuation')


def load_questions(path, limit=0):
    """
    [{'prompt', 'question', 'reference', 'task'}]: prompt as a contestant gets it (a question ends in ##),
    question as the judge reads it, reference or None, task 'question' or 'continuation'. Repeats are dropped.
    ValueError names the file and line of anything wrong.
    """
    if not os.path.exists(path):
        raise ValueError(f'{path}: no such question file')
    found, seen = [], set()

    def add(where, prompt, reference):
        if not isinstance(prompt, str) or not prompt.strip().removesuffix('##').strip():
            raise ValueError(f'{where}: the question must be a non-empty string, got {prompt!r:.60}')
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f'{where}: the reference answer must be a string, got {reference!r:.60}')
        question, task = read_prompt(prompt)
        if question and question not in seen:
            seen.add(question)
            found.append({'prompt': prompt, 'question': question, 'reference': (reference or '').strip() or None,
                          'task': task})

    if path.lower().endswith('.csv'):
        import csv
        try:
            with open(path, encoding='utf-8-sig', newline='') as f:
                rows = list(csv.reader(f))
        except UnicodeDecodeError as e:
            raise ValueError(f'{path}: not UTF-8 ({e.reason} at byte {e.start})')
        if not rows or 'prompt' not in rows[0]:
            raise ValueError(f'{path}:1: expected a header with a "prompt" column (and optionally "reference")')
        head = rows[0]
        for line_no, row in enumerate(rows[1:], 2):
            if not any(row):
                continue
            if len(row) != len(head):
                raise ValueError(f'{path}:{line_no}: {len(row)} fields, the header has {len(head)}')
            row = dict(zip(head, row))
            add(f'{path}:{line_no}', row['prompt'], row.get('reference'))
    else:
        for line_no, record, problem in jsonl_objects(path):
            if problem:
                raise ValueError(f'{path}:{line_no}: {problem[1]}')
            question = record.get('question')
            if isinstance(question, str) and question.strip().removesuffix('##').strip():
                question = question.strip().removesuffix('##').strip() + '##'  # a question, ## or not
            add(f'{path}:{line_no} "question"', question, record.get('answer'))
    if not found:
        raise ValueError(f'{path}: no questions in it')
    return found[:limit] if limit > 0 else found


# ----------------------------------------------------------------------------- contestants
def answer(entry, model, question, params=PARAMS, timeout=30.0):
    """One contestant's whole answer to a prompt: the only place the judge calls contestants.py's streaming."""
    pieces = []
    try:
        for piece in contestants.stream_answer(entry, model, question, params, timeout,
                                               params['max_new_tokens'] * 8 + 100):
            pieces.append(piece)
    except contestants.TooLong:
        pass  # the peer sent more than asked: judged on the cut text, as the arena shows it
    return ''.join(pieces)


class LazyModels(dict):
    """Local checkpoints loaded when first asked for: a run with everything judged loads none."""
    def __init__(self, entries, device):
        super().__init__()
        self.entries, self.device = {e['name']: e for e in entries if 'checkpoint' in e}, device

    def get(self, name, default=None):
        if name in self.entries and name not in self:
            self.update(contestants.load_models([self.entries[name]], self.device))
        return super().get(name, default)


def contestant_entries(peers_path, checkpoint_dirs):
    """The contestants: the peers file's entries, then one per checkpoint folder (named by the folder)."""
    entries = contestants.load_peers(peers_path) if peers_path else []
    for path in checkpoint_dirs:
        entries.append({'name': path, 'checkpoint': path})
    names = [e['name'] for e in entries]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f'the contestant {name!r} is named twice (--peers and --checkpoints)')
    return entries or contestants.default_peers()


def draw_pairs(entries, count, rng):
    """`count` different pairs of contestants that are not one model (0: every such pair), as the arena draws them."""
    groups = contestants.same_model_groups(entries)
    weights = {e['name']: e.get('weight', 1) for e in entries}
    names = list(weights)
    every = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if groups[a] != groups[b] and weights[a] * weights[b] > 0]  # weight 0: never in battles
    if count <= 0:
        return every
    drawn = []
    for _ in range(20 * count):  # a few draws more than needed: the same pair may come twice
        pair = contestants.draw_pair(weights, groups, rng)
        if pair is None or len(drawn) == count:
            break
        if set(pair) not in [set(p) for p in drawn]:
            drawn.append(tuple(pair))
    return drawn


def version(entry):
    """Which training of a local checkpoint answered (its ckpt.pt's size and time), so that a model trained again in
    the same folder is judged again; '' for a peer, whose server alone knows."""
    if 'checkpoint' not in entry:
        return ''
    try:
        stat = os.stat(checkpoint_path(entry['checkpoint']))
    except OSError:
        return ''
    return f'{stat.st_size}:{stat.st_mtime_ns}'


def battle_key(judge_kind, *parts):
    """A battle id from the judge and what was judged: a rerun finds the id in the store and skips the battle."""
    return 'judge-' + hashlib.sha1(json.dumps([judge_kind, *parts], ensure_ascii=False).encode()).hexdigest()[:24]


def question_battles(items, entries, models, judge_kind, count, seed, done, params=PARAMS, answer_timeout=30.0,
                     tally=None, log=print):
    """The battles still to judge, answers included: each question's drawn pairs (either order is the same battle)."""
    by_name, cache, tally = {e['name']: e for e in entries}, {}, Counter() if tally is None else tally
    for item in items:
        for a, b in draw_pairs(entries, count, random.Random(f"{seed}:{item['prompt']}")):
            pair = sorted([[a, version(by_name[a])], [b, version(by_name[b])]])
            battle_id = battle_key(judge_kind, item['prompt'], pair)
            if battle_id in done:
                tally['already judged'] += 1
                continue
            try:
                for name in (a, b):
                    if (name, item['prompt']) not in cache:
                        cache[name, item['prompt']] = answer(by_name[name], models.get(name), item['prompt'], params,
                                                             answer_timeout)
            except Exception as err:  # a contestant that fails takes no vote, as in the arena; a rerun asks again
                log(contestants.describe_error(name, by_name[name], err, answer_timeout))
                tally['contestant failed'] += 1
                continue
            yield dict(item, battle_id=battle_id, model_a=a, model_b=b, answer_a=cache[a, item['prompt']],
                       answer_b=cache[b, item['prompt']], params=params)


def human_battles_to_judge(records, judge_kind, count, references, done, tally=None):
    """The first `count` battles people voted on (not leaked), to be judged on their own answers."""
    tally = Counter() if tally is None else tally
    people = [r for r in records if r.get('voter_kind', 'human') == 'human' and not r.get('leaked')
              and isinstance(r.get('answer_a'), str) and isinstance(r.get('answer_b'), str)
              and isinstance(r.get('prompt'), str) and r.get('model_a') != r.get('model_b')]
    for r in people[:count]:
        battle_id = battle_key(judge_kind, 'battle', r['battle_id'])
        if battle_id in done:
            tally['already judged'] += 1
            continue
        question, task = read_prompt(r['prompt'])
        yield {'battle_id': battle_id, 'prompt': r['prompt'], 'question': question, 'task': task,
               'reference': references.get(question), 'model_a': r['model_a'], 'model_b': r['model_b'],
               'answer_a': r['answer_a'], 'answer_b': r['answer_b'], 'judged_battle': r['battle_id']}


def judge_battles(db, judge, battles, judge_kind, max_down=3, rejects='', tally=None, log=print):
    """
    Judges each battle in both orders and stores its vote at once (a kill loses at most the battle in hand).
    A battle without a verdict goes to `rejects` (a JSONL) and is retried on a rerun. JudgeDown when the server
    refuses the request or `max_down` battles in a row got no reply at all.
    """
    tally, down = Counter() if tally is None else tally, 0
    for battle in battles:
        try:
            vote, verdicts, replies = both_orders(judge, battle, battle['answer_a'], battle['answer_b'])
        except JudgeFailed as e:
            if e.kind == 'refused':
                raise JudgeDown(f'refused the request ({e})')
            down = down + 1 if e.kind == 'server' else 0
            if down >= max_down:
                raise JudgeDown(f'did not answer {down} battles in a row, {e.tries} tries each ({e})')
            tally['no verdict'] += 1
            if rejects and e.kind == 'unreadable':
                with open(rejects, 'a', encoding='utf-8') as f:
                    f.write(json.dumps({'battle_id': battle['battle_id'], 'judge': judge_kind,
                                        'prompt': battle['prompt'], 'model_a': battle['model_a'],
                                        'model_b': battle['model_b'], 'reason': str(e), 'reply': e.reply},
                                       ensure_ascii=False) + '\n')
            continue
        down = 0
        record = {'battle_id': battle['battle_id'], 'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
                  'prompt': battle['prompt'], 'model_a': battle['model_a'], 'model_b': battle['model_b'],
                  'answer_a': battle['answer_a'], 'answer_b': battle['answer_b'], 'vote': vote, 'leaked': False,
                  'voter': judge_kind.split(':', 1)[1], 'voter_kind': judge_kind, 'verdicts': verdicts,
                  'replies': replies, 'reference': battle.get('reference')}
        record.update({k: battle[k] for k in ('params', 'judged_battle') if k in battle})
        if store.add_vote(db, record):
            tally['judged'] += 1
            log(f"{battle['model_a']} vs {battle['model_b']}: {vote} ({verdicts[0]}, {verdicts[1]} swapped) "
                f"{battle['question'][:30]}")
    return tally


# ----------------------------------------------------------------------------- the run
def run(db, judge, judge_kind, items, entries, models, pairs=1, seed=0, params=PARAMS, answer_timeout=30.0,
        max_down=3, probes=4, human_battles=50, thresholds=None, rejects='', log=print):
    """
    judge(item, answer_a, answer_b) -> (verdict, reply) (judge_verdicts.py) on the probes first (a dead judge is
    found before any contestant answers), then on the store's human battles and the question set's battles;
    returns (calibration report, tally). JudgeDown stops it, with every vote kept.
    """
    probe_results = run_probes(judge, items, probes, seed)
    done = {r['battle_id'] for r in store.records(db)}
    tally = Counter()
    references = {x['question']: x['reference'] for x in items if x['reference']}
    people = human_battles_to_judge(store.records(db), judge_kind, human_battles, references, done, tally)
    judge_battles(db, judge, people, judge_kind, max_down, rejects, tally, log)
    judge_battles(db, judge, question_battles(items, entries, models, judge_kind, pairs, seed, done, params,
                                              answer_timeout, tally, log),
                  judge_kind, max_down, rejects, tally, log)
    return calibration(store.records(db), judge_kind, probe_results, **(thresholds or {})), tally


def main():
    if backend not in ('openai', 'rules'):
        sys.exit(f"error: --backend={backend!r}: expected 'openai' or 'rules'")
    for name, value in (('max_attempts', max_attempts), ('max_down', max_down), ('timeout', timeout)):
        if value <= 0:
            sys.exit(f'error: --{name}={value}: must be above 0')
    for name, value in (('min_consistency', min_consistency), ('min_probe', min_probe), ('rules_margin', rules_margin)):
        if not 0 <= value <= 1:
            sys.exit(f'error: --{name}={value}: must be a share between 0 and 1')
    if pairs < 0 or probes < 0 or human_battles < 0:
        sys.exit('error: --pairs, --probes and --human_battles must be 0 or more')
    os.makedirs(os.path.dirname(os.path.abspath(votes)), exist_ok=True)
    db = store.connect(votes)
    judge_kind = 'judge:rules' if backend == 'rules' else f'judge:{model}'
    if not board_only:
        try:
            items = load_questions(questions, limit)
            entries = contestant_entries(peers, [p.strip() for p in checkpoints.split(',') if p.strip()])
        except ValueError as e:
            sys.exit(f'error: {e}')
        params = {'max_new_tokens': max_new_tokens, 'temperature': answer_temperature, 'top_k': top_k, 'top_p': 1.0,
                  'presence_penalty': presence_penalty, 'frequency_penalty': frequency_penalty}
        if backend == 'rules':
            judge, which = rules_judge(rules_margin), 'rules (Rouge-L against the reference answer, offline)'
        else:
            def ask(messages):
                return ask_chat(messages, base_url, model, api_key_env, timeout, temperature)
            judge, which = llm_judge(ask, max_attempts, backoff), f'{model} at {base_url}'
            if not os.environ.get(api_key_env):
                print(f'note: ${api_key_env} is not set; sending a placeholder key', file=sys.stderr)
        print(f"judge {which}; {len(items)} questions from {questions} ({sum(1 for x in items if x['reference'])} "
              f"with a reference); contestants {[e['name'] for e in entries]}")
        try:
            report, tally = run(db, judge, judge_kind, items, entries, LazyModels(entries, device), pairs, seed, params,
                                answer_timeout, max_down, probes, human_battles,
                                dict(min_consistency=min_consistency, min_probe=min_probe, min_kappa=min_kappa,
                                     min_overlap=min_overlap), votes + '.rejects.jsonl')
        except JudgeDown as e:
            sys.exit(f'error: the judge {model} at {base_url} {e}; check --base_url, --model and ${api_key_env}. '
                     f'Votes so far are saved in {votes}; rerun to go on.')
        except KeyboardInterrupt:
            sys.exit(f'interrupted: votes so far are saved in {votes}; rerun to go on.')
        rejected = f" (see {votes}.rejects.jsonl)" if tally['no verdict'] else ''
        print(f"\n{tally['judged']} battles judged, {tally['already judged']} judged before, {tally['no verdict']} "
              f"without a verdict{rejected}, {tally['contestant failed']} where a contestant failed")
        save_calibration(votes + '.calibration.json', report)
        print(calibration_text(report) + f'\n(saved in {votes}.calibration.json)\n')
    boards = boards_by_voter(db, judge_kind, rounds=bootstrap_rounds, min_battles=min_battles, seed=seed)
    print(side_by_side(boards, judge_kind))
    if not board_only and checkpoints:
        print('\n' + checkpoint_summary(boards['judge'], [p.strip() for p in checkpoints.split(',') if p.strip()]))


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py'), encoding='utf-8').read())
    main()

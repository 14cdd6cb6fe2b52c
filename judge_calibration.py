"""
How far a judge can be trusted, measured on every run of judge.py: position consistency (pairs whose two orders
agree), probes made from the reference answers (two identical answers should tie; the reference should beat a
truncated copy, a shuffled one and another question's answer in both orders; the reference padded with its own
repetition should not beat it), and agreement with people (Cohen's kappa) on battles both judged. A judge below
a threshold is reported as not trusted, with the reasons; the report is printed and kept in a JSON file.
"""
import json
import os
import random
from datetime import datetime, timezone

import ratings
from judge_verdicts import OTHER, JudgeDown, JudgeFailed, both_orders


def corruptions(reference, other, rng):
    """(kind, corrupted copy) of a reference answer: truncated, characters shuffled, another question's answer."""
    found = []
    if len(reference) >= 2:
        found.append(('truncated', reference[:len(reference) // 2]))
        chars = list(reference)
        for _ in range(10):
            rng.shuffle(chars)
            if ''.join(chars) != reference:
                found.append(('shuffled', ''.join(chars)))
                break
    if other and other != reference:
        found.append(('other answer', other))
    return found


def run_probes(judge, items, count=4, seed=0):
    """
    The probes on the first `count` questions with a reference: [{'probe', 'question', 'verdicts', 'passed'}].
    A probe without a verdict fails; a server that does not answer one is JudgeDown (nothing else would work).
    """
    with_ref = [x for x in items if x['reference']][:count]
    rng, results = random.Random(seed), []

    def verdicts(a, b, orders=2):
        """The verdicts with a shown first, then (orders=2) b first; None where the reply named no verdict."""
        try:
            return [judge(item, a, b)[0]] if orders == 1 else both_orders(judge, item, a, b)[1]
        except JudgeFailed as e:
            if e.kind != 'unreadable':
                raise JudgeDown(f"{'refused' if e.kind == 'refused' else 'did not answer'} a calibration probe ({e})")
            return [None] * orders

    for i, item in enumerate(with_ref):
        ref = item['reference']
        same = verdicts(ref, ref, orders=1)
        results.append({'probe': 'identical', 'question': item['question'], 'verdicts': same,
                        'passed': same == ['tie']})
        other = with_ref[(i + 1) % len(with_ref)]['reference'] if len(with_ref) > 1 else None
        for kind, bad in corruptions(ref, other, rng):
            got = verdicts(ref, bad)  # the reference is A first, then B: it should win both
            results.append({'probe': kind, 'question': item['question'], 'verdicts': got, 'passed': got == ['A', 'B']})
        got = verdicts(ref, '。'.join([ref.rstrip('。')] * 4) + '。')
        results.append({'probe': 'length', 'question': item['question'], 'verdicts': got,
                        'passed': None not in got and got != ['B', 'A']})  # ['B', 'A']: the padded copy won both
    return results


def outcome(record):
    """A vote as 'first', 'second' (the pair's model first in name order won) or 'tie', whichever side it sat on."""
    if record['vote'] in ('tie', 'both_bad'):
        return 'tie'
    winner = record['model_a'] if record['vote'] == 'A' else record['model_b']
    return 'first' if winner == min(record['model_a'], record['model_b']) else 'second'


def cohen_kappa(pairs):
    """Cohen's kappa of two raters' labels on the same items: agreement beyond chance; None when undefined."""
    n = len(pairs)
    if not n:
        return None
    agreed = sum(a == b for a, b in pairs) / n
    labels = {x for pair in pairs for x in pair}
    chance = sum(sum(a == x for a, _ in pairs) / n * sum(b == x for _, b in pairs) / n for x in labels)
    return None if chance >= 1 else (agreed - chance) / (1 - chance)


def share(hits, total):
    return hits / total if total else None


def people_and_judge(records, mine):
    """
    (person's outcome, judge's outcome) of each human battle the judge voted on too: the judge's vote on that very
    battle, else on the same prompt and pair.
    """
    def key(r):
        return r['prompt'].strip().removesuffix('##').strip(), frozenset((r['model_a'], r['model_b']))
    by_battle, by_key = {}, {}
    for r in mine:
        if r.get('judged_battle'):
            by_battle.setdefault(r['judged_battle'], r)
        by_key.setdefault(key(r), r)
    labels = []
    for r in records:
        if r.get('voter_kind', 'human') != 'human' or r.get('leaked') or r.get('vote') not in ratings.OUTCOME:
            continue
        theirs = by_battle.get(r.get('battle_id')) or by_key.get(key(r)) if isinstance(r.get('prompt'), str) else None
        if theirs:
            labels.append((outcome(r), outcome(theirs)))
    return labels


def calibration(records, judge_kind, probe_results, min_consistency=0.6, min_probe=0.75, min_kappa=0.4, min_overlap=10):
    """The judge's calibration report from the store's records and this run's probes, with its verdict and reasons."""
    mine = [r for r in records if r.get('voter_kind') == judge_kind and len(r.get('verdicts') or []) == 2]
    battles = [r['verdicts'][0] == OTHER.get(r['verdicts'][1]) for r in mine]
    two_way = [p['verdicts'] for p in probe_results if p['probe'] != 'identical' and None not in p['verdicts']]
    probes_agree = [v[0] == OTHER[v[1]] for v in two_way]
    agree = battles + probes_agree
    kinds = {'identical': ['identical'], 'corrupted': ['truncated', 'shuffled', 'other answer'], 'length': ['length']}
    probe = {}
    for name, members in kinds.items():
        got = [p for p in probe_results if p['probe'] in members]
        probe[name] = {'asked': len(got), 'passed': sum(p['passed'] for p in got),
                       'share': share(sum(p['passed'] for p in got), len(got)),
                       'by_kind': {k: [sum(p['passed'] for p in got if p['probe'] == k),
                                       sum(1 for p in got if p['probe'] == k)] for k in members}}
    labels = people_and_judge(records, mine)
    decided = [(h, j) for h, j in labels if 'tie' not in (h, j)]
    kappa = cohen_kappa(labels)
    report = {'judge': judge_kind, 'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
              'consistency': {'pairs': len(agree), 'agreed': sum(agree), 'share': share(sum(agree), len(agree)),
                              'battles': [sum(battles), len(battles)],
                              'probes': [sum(probes_agree), len(probes_agree)]},
              'probes': probe, 'probe_results': probe_results,
              'people': {'battles': len(labels), 'agreed': sum(h == j for h, j in labels),
                         'share': share(sum(h == j for h, j in labels), len(labels)),
                         'without_ties': {'battles': len(decided), 'agreed': sum(h == j for h, j in decided),
                                          'share': share(sum(h == j for h, j in decided), len(decided))},
                         'kappa': None if kappa is None else round(kappa, 4)}}
    reasons, warnings = [], []
    c = report['consistency']['share']
    if c is None:
        reasons.append('no pair was judged in both orders: nothing to calibrate on')
    elif c < min_consistency:
        reasons.append(f'position consistency {c:.0%} < {min_consistency:.0%}: '
                       'swapping the answers changes its verdict')
    what = {'identical': 'identical answers judged a tie', 'corrupted': 'the reference picked over a corrupted copy',
            'length': 'the reference padded with repetition kept from winning'}
    if not probe['identical']['asked']:
        reasons.append('no probes: the question set has no reference answers')
    for name, p in probe.items():
        if p['asked'] and p['share'] < min_probe:
            reasons.append(f"{name} probe: {what[name]} {p['passed']}/{p['asked']} ({p['share']:.0%} < {min_probe:.0%})"
                           + (': it prefers longer answers' if name == 'length' else ''))
    if kappa is not None and kappa < min_kappa:
        line = f'agreement with people: kappa {kappa:.2f} < {min_kappa} on {len(labels)} battles'
        enough = len(labels) >= min_overlap
        warnings.append(line + ('' if enough else f' (fewer than {min_overlap}: not yet a reason to distrust it)'))
        if enough:
            reasons.append(line)
    elif len(labels) < min_overlap:
        warnings.append(f'only {len(labels)} battles judged by both people and the judge: agreement not checked '
                        f'(needs {min_overlap})')
    report.update(trusted=not reasons, reasons=reasons, warnings=warnings)
    return report


def save_calibration(path, report):
    """Keeps the latest report of each judge in one JSON file beside the votes (written whole, then renamed)."""
    saved = {}
    try:
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
        saved = saved if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        pass
    saved[report['judge']] = report
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(saved, f, ensure_ascii=False, indent=1)
    os.replace(path + '.tmp', path)


def calibration_text(report):
    """The report as the lines a run prints, ending with the verdict line."""
    def pct(x):
        return '—' if x is None else f'{x:.0%}'
    c, h, bare = report['consistency'], report['people'], report['people']['without_ties']
    b, q = c['battles'], c['probes']
    same, bad, long = (report['probes'][k] for k in ('identical', 'corrupted', 'length'))
    corrupted = ', '.join(f'{k} {a}/{n}' for k, (a, n) in bad['by_kind'].items() if n)
    kappa = '—' if h['kappa'] is None else format(h['kappa'], '.2f')
    lines = [f"calibration of {report['judge']}:",
             f"  position consistency    {c['agreed']}/{c['pairs']} pairs judged the same in both orders "
             f"({pct(c['share'])}; battles {b[0]}/{b[1]}, probes {q[0]}/{q[1]})",
             f"  identical answers       {same['passed']}/{same['asked']} judged a tie ({pct(same['share'])})",
             f"  reference vs corrupted  {bad['passed']}/{bad['asked']} picked the reference in both orders "
             f"({pct(bad['share'])}{': ' + corrupted if corrupted else ''})",
             f"  length probe            {long['passed']}/{long['asked']} times the padded copy did not win "
             f"({pct(long['share'])})",
             f"  agreement with people   {h['battles']} battles: {pct(h['share'])} with ties, {pct(bare['share'])} "
             f"without ({bare['battles']}), Cohen's kappa {kappa}"]
    lines += [f'warning: {w}' for w in report['warnings']]
    lines.append(f"verdict: {report['judge']} is TRUSTED" if report['trusted'] else
                 f"verdict: {report['judge']} is NOT TRUSTED: " + '; '.join(report['reasons']))
    return '\n'.join(lines)

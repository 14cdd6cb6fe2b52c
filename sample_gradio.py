"""
The arena: a web page where people chat with the models, compare two side by side, judge anonymous
battles, and read a leaderboard built from their votes, as LMSYS's Chatbot Arena does. This file is the page;
contestants.py reads the peers file and streams each kind of contestant, ratings.py rates the votes.

    python sample_gradio.py                                   # contestants from peers.json, else out/sft + out/pretrain
    python sample_gradio.py --peers=peers.json --votes=out/arena.db --host=0.0.0.0 --port=7860
    python sample_gradio.py --peers=peers.json --host=127.0.0.1 --port=7861 --device=cpu --leak_words=Qwen,通义
    python sample_gradio.py --peers= --token=班级口令 --roster=roster.csv --teacher=老师 --daily_cap=200   # a class
    python sample_gradio.py --help

Contestants live in one editable JSON list (--peers, see peers.example.json):
    {"name": "本地微调", "checkpoint": "out/sft"}                          a checkpoint served in this process
    {"name": "张三的模型", "url": "http://192.168.1.20:5000"}              a classmate's server.py (POST /generate)
    {"name": "qwen", "url": "http://127.0.0.1:1234/v1", "kind": "openai",  any OpenAI-compatible server
     "model": "qwen2-7b-instruct", "api_key_env": "LMSTUDIO_KEY"}            (LM Studio, vLLM, Ollama, a MiniGPT /v1)
Any entry may add "weight" (how often it is drawn for battles, default 1, 0 = never) and "same_as" (a name,
or a list of names, of contestants that are the same model: never paired). Two entries with the same
checkpoint file, or the same server (this machine under any of its names) and model, are paired never anyway.

A prompt ending in ## is a question: local models and MiniGPT peers answer it after A_TOKEN; an
OpenAI-compatible peer gets it as a chat user message without the ##. A peer that is down, silent, answers
garbage or floods gets a message in its own pane (an answer past what was asked is cut and marked); the
rest of the page keeps working. Battles are blind: sides are drawn at random, both panes are revealed at the
pace of the slower contestant, times and names show only after the vote, and a battle whose answers name a
model is marked leaked. Each battle has an id and gets one vote in --votes (the SQLite store of votes.py),
whatever the page does.

For a class (registry.py): students register their own servers with POST /register on this same port (the
students' command is `python registry.py ...`), the arena checks and then probes them every --heartbeat seconds,
and draws battles only among the live ones; the 参赛者 tab shows who is up. With --roster (a CSV of name,password)
everyone signs in, and the board leaves out votes on one's own model, votes past --daily_cap a day and the votes
of a voter the outlier test flags, saying how many each rule left out. --teacher may download the board and votes.
"""
import csv
import html
import json
import os
import queue
import random
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import ratings
import votes as store
from contestants import TooLong, default_peers, describe_error, draw_pair, load_models, load_peers, same_model_groups, stream_answer
from registry import Refused, Registry

# -----------------------------------------------------------------------------
host = '0.0.0.0'  # interface the page listens on (127.0.0.1 keeps it to this machine)
port = 7860  # port of the page
peers = 'peers.json'  # the contestants file; when the default is missing, local out/sft and out/pretrain are used; empty: none
votes = 'out/arena.db'  # the votes store (SQLite): every battle and vote; the leaderboard is computed from it
token = ''  # the class token a registration must carry; empty: none asked
roster = ''  # a CSV file of name,password: everyone signs in and votes under their name; empty: anonymous voting
teacher = ''  # the roster name that may download the board and the votes (without a roster: anyone)
daily_cap = 0  # votes per signed-in voter per UTC day that count on the board; 0: no cap
outlier_alpha = 0.001  # significance of the outlier test on signed-in voters; 0: off
heartbeat = 15.0  # seconds between two probes of every contestant server
expiry = 45.0  # a server not seen for this many seconds is down: out of battles until it answers again
examples = 'examples.csv'  # example prompts shown under the prompt box (column "prompt")
device = 'auto'  # where local checkpoints run: auto, cpu, cuda, mps
timeout = 30  # seconds a peer may stay silent (connecting, or between two pieces) before it is given up
seed = -1  # seed for drawing battle pairs; -1 draws fresh ones each start
bootstrap_rounds = 200  # resamples of the votes for the leaderboard's 95% intervals
min_battles = 10  # below this many counted battles a model shows "not enough data" instead of an interval
anchor = ''  # a contestant pinned at 1000 on the board; empty: the mean is 1000
count_leaked = False  # also count votes on battles whose answers named a model
leak_words = 'ChatGPT,GPT-4,OpenAI,Qwen,通义,千问,Llama,DeepSeek,Claude,Gemini,文心,Kimi,GLM,MiniGPT'  # mark a battle leaked, as names do
chars_per_token = 8  # a peer's answer is cut after max_new_tokens * this + chars_margin characters and marked over-long
chars_margin = 100  # (a token is rarely over 8 characters; a peer past that ignored max_new_tokens)
fail_streak = 3  # a contestant whose last this-many answers all failed...
fail_weight = 0.1  # ...is drawn with its weight times this until it answers again
# -----------------------------------------------------------------------------

VOTE_TEXT = {'A': 'A 更好', 'B': 'B 更好', 'tie': '平局', 'both_bad': '都不好'}
MARK = {'stopped': '（已停止）', 'cut': '（回答超长，已截断）'}  # appended to an answer that ended this way
STATE_TEXT = {'running': '生成中…', 'done': '完成', 'cut': '超长，已截断', 'stopped': '已停止', 'failed': '出错'}


# ----------------------------------------------------------------------------- several answers at once
CONTESTANTS = {}  # name -> its entry in the peers file; filled at start
MODELS = {}  # name -> loaded GPT, for the local checkpoints
GROUPS = {}  # name -> which model it is underneath (same_model_groups)
FAILS = {}  # name -> how many of its answers in a row failed
LEAK_WORDS = []  # contestant names, peers' model ids and --leak_words
PAIR_RNG = random.Random()  # draws battle pairs and sides; seeded at start when --seed is given
STORE = {}  # 'db': the store's connection that writes votes (reads open their own, so a board never delays a vote)
REGISTRY = []  # the Registry, once started (a list, so that tests can leave it empty)
RUNNING = {}  # (session, tab) -> stop events of the streams in flight there, set by that tab's Stop button
RUNNING_LOCK = threading.Lock()


def weight(name):
    w = CONTESTANTS[name].get('weight', 1)
    return w * fail_weight if FAILS.get(name, 0) >= fail_streak else w


def race(names, prompt, params, key):
    """Streams all `names` at once, one thread each; yields (texts, seconds, states) as pieces arrive. A state is
    running, done, cut (more than asked for), stopped (the Stop button) or failed."""
    n, start = len(names), time.time()
    texts, secs, states = [''] * n, [0.0] * n, ['running'] * n
    updates, stop = queue.Queue(), threading.Event()
    with RUNNING_LOCK:
        RUNNING.setdefault(key, set()).add(stop)

    def work(i):
        end, extra = 'done', ''
        try:
            pieces = stream_answer(CONTESTANTS[names[i]], MODELS.get(names[i]), prompt, params, timeout,
                                   params['max_new_tokens'] * chars_per_token + chars_margin)
            try:
                for piece in pieces:
                    if stop.is_set():  # the worker says "stopped" itself: its end can no longer read as "done"
                        end = 'stopped'
                        break
                    updates.put((i, piece, None))
            finally:
                pieces.close()  # a local model stops computing; an HTTP stream is closed
        except TooLong:
            end = 'cut'
        except Exception as err:  # any failure of one contestant stays in its own pane
            end, extra = ('stopped', '') if stop.is_set() else ('failed', describe_error(names[i], CONTESTANTS[names[i]], err, timeout))
        updates.put((i, extra, end))

    for i in range(n):
        threading.Thread(target=work, args=(i,), daemon=True).start()
    try:
        while 'running' in states:
            try:
                items = [updates.get(timeout=0.25)]
            except queue.Empty:  # nothing new: still update the clocks
                items = []
            while not updates.empty():  # only this loop takes from the queue, so this get never waits
                items.append(updates.get())
            secs = [time.time() - start if s == 'running' else t for s, t in zip(states, secs)]
            for i, text, end in items:
                if states[i] == 'running':  # a pane marked stopped below takes nothing more
                    texts[i] += ('\n\n' if end == 'failed' and texts[i] else '') + text + MARK.get(end, '')
                    states[i] = end or 'running'
            if stop.is_set():  # Stop pressed: do not wait for a silent peer, leave its thread to time out
                texts = [t + MARK['stopped'] if s == 'running' else t for t, s in zip(texts, states)]
                states = ['stopped' if s == 'running' else s for s in states]
            yield texts, secs, states
    finally:
        stop.set()
        with RUNNING_LOCK:
            RUNNING[key].discard(stop)
            if not RUNNING[key]:
                del RUNNING[key]
        for name, s in zip(names, states):
            FAILS[name] = FAILS.get(name, 0) + 1 if s == 'failed' else 0 if s in ('done', 'cut') else FAILS.get(name, 0)


def paced(texts, states):
    """The battle panes as shown: no more characters than the slower still-running answer has, so speed names no one."""
    running = [len(t) for t, s in zip(texts, states) if s == 'running']
    return texts if not running or 'failed' in states else [t[:min(running)] for t in texts]


def leaks(answers, words):
    """The words (case ignored) that occur in the answers: a contestant named itself or another."""
    text = '\n'.join(answers).lower()
    return sorted({w for w in words if len(w) >= 2 and w.lower() in text})


def open_store(path):
    """The write connection to the votes store at path, opened once per process."""
    if STORE.get('path') != path:
        STORE.update(path=path, db=store.connect(path))
    return STORE['db']


def write_vote(record, path):
    """Stores one vote unless its battle id already has one; True when written. The store, not the page, decides."""
    return store.add_vote(open_store(path), record)


def votes_today(voter, path):
    """How many votes the voter cast today (UTC), this one included once written."""
    day = datetime.now(timezone.utc).strftime('%Y-%m-%d')
    with store.WRITE_LOCK:
        return open_store(path).execute('SELECT COUNT(*) FROM votes WHERE voter = ? AND time >= ?', (voter, day)).fetchone()[0]


def owners():
    """model -> the roster name that registered it."""
    return {n: e['owner'] for n, e in REGISTRY[0].entries.items()} if REGISTRY else {}


def chat(prompt, text, state):
    """The pane's messages. Escaped: a peer's answer with <img src=...> must show as text, not make every viewer's
    browser fetch that address (the panes do not render Markdown, but they do render HTML)."""
    return [{'role': 'user', 'content': html.escape(prompt, quote=False)},
            {'role': 'assistant', 'content': html.escape(text, quote=False) or ('…' if state == 'running' else '（没有生成内容）')}]


def timing(secs, state, text, clock=True):
    chars = '' if state == 'failed' else f'{len(text) - len(MARK.get(state, ""))} 字 · '
    return (f'用时 {secs:.1f} 秒 · ' if clock else '') + chars + STATE_TEXT[state]


def compute_board():
    """The leaderboard of the votes store, with the page's rules, and a note when --anchor has no votes yet."""
    options = dict(names=list(CONTESTANTS), rounds=bootstrap_rounds, min_battles=min_battles, include_leaked=count_leaked,
                   owners=owners(), daily_cap=daily_cap, outlier_alpha=outlier_alpha)
    try:
        return ratings.leaderboard(votes, anchor=anchor, **options), ''
    except ValueError as err:  # --anchor has no votes yet: the mean stands in until it has
        if not anchor:
            raise
        return ratings.leaderboard(votes, anchor='', **options), f'（{ratings.md(err)}）'


def board_view():
    """(table and notes, win-fraction figure, battle-count figure) of the votes store."""
    text, board = board_text()
    return text, *ratings.matrix_figures(board)


def board_text():
    """(the table and its notes, the board): what a vote shows, without the figures (a second of matplotlib each time)."""
    board, note = compute_board()
    note += (f"共 {board['votes']} 票（{ratings.md(votes)}），计入 {board['counted']} 票" +
            (f"；{board['leaked']} 票的回答泄露了模型名字，未计入" if board['leaked'] else '') + '。' +
            f'\n\n**BT**：Bradley-Terry 评分，由全部计入的票一起拟合，与投票顺序无关（平局算各赢半场，均值 1000）；'
            f'**95% 区间**：{bootstrap_rounds} 次有放回重抽样投票后 BT 的中间 95%，不足 {min_battles} 场不给区间；'
            '**排名 (UB)**：1 + 区间下界高于本模型上界的模型数，区间重叠的模型并列；**还需对战**：大约再比多少场，'
            '本模型的区间才能和上下相邻的模型分开；**在线 Elo**：按投票顺序逐票更新（K=4）。')
    for line in ratings.notes(board):
        note += '\n\n' + line
    if board['bad']:
        note += f"\n\n⚠️ 跳过了 {len(board['bad'])} 行有问题的记录：" + ratings.md('；'.join(board['bad'][:3]))
    return ratings.table(board, min_battles) + '\n\n' + note, board


def battle_counts():
    """contestant -> battles voted, from the store."""
    if not os.path.exists(votes):
        return {}
    db = store.connect(votes)
    try:
        rows = db.execute('SELECT model_a, COUNT(*) FROM votes GROUP BY model_a UNION ALL '
                          'SELECT model_b, COUNT(*) FROM votes GROUP BY model_b').fetchall()
    finally:
        db.close()
    counts = {}
    for name, n in rows:
        counts[name] = counts.get(name, 0) + n
    return counts


def contestants_view():
    """The 参赛者 tab: one row per contestant, live ones first."""
    if REGISTRY:
        rows = REGISTRY[0].rows(battle_counts())
    else:
        counts = battle_counts()
        rows = [{'name': n, 'owner': '（参赛文件）', 'model': e.get('model') or e.get('checkpoint', ''), 'up': True,
                 'last_seen': None, 'latency': None, 'tokens_per_s': None, 'battles': counts.get(n, 0)} for n, e in CONTESTANTS.items()]
    lines = ['| 名字 | 主人 | 模型 | 状态 | 上次应答 | 延迟 | token/秒 | 已投票对战 |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {ratings.md(r['name'])} | {ratings.md(r['owner'])} | {ratings.md(r['model'])} | "
                     f"{'在线' if r['up'] else '**离线**'} | {'—' if r['last_seen'] is None else format(r['last_seen'], '.0f') + ' 秒前'} | "
                     f"{'—' if r['latency'] is None else format(1000 * r['latency'], '.0f') + ' ms'} | "
                     f"{'—' if r['tokens_per_s'] is None else r['tokens_per_s']} | {r['battles']} |")
    up = sum(r['up'] for r in rows)
    return f'{up} 个在线，{len(rows) - up} 个离线（每 {heartbeat:g} 秒探测一次，{expiry:g} 秒没有应答算离线；离线的不参加对战）。\n\n' + '\n'.join(lines)


def sync_registered():
    """Puts the registry's contestants into CONTESTANTS, GROUPS and LEAK_WORDS (registrations arrive at any time)."""
    registry = REGISTRY[0]
    with registry.lock:
        names = list(registry.entries)
    for name in names:
        CONTESTANTS[name] = registry.peer(name)
    GROUPS.update(same_model_groups(list(CONTESTANTS.values())))
    LEAK_WORDS.extend(n for n in names if n not in LEAK_WORDS)


def live_weights():
    """Battle weights of the contestants that are up."""
    return {n: weight(n) for n in list(CONTESTANTS) if not REGISTRY or REGISTRY[0].live(n)}


def downloads(request):
    """Files of the board (CSV) and the votes (CSV) for the teacher."""
    import tempfile
    user = getattr(request, 'username', None)
    if roster and user != teacher:
        raise ValueError('只有老师（--teacher）可以下载')
    folder = tempfile.mkdtemp(prefix='arena-')
    board = compute_board()[0]
    board_path = os.path.join(folder, 'leaderboard.csv')
    with open(board_path, 'w', encoding='utf-8-sig', newline='') as f:
        out = csv.DictWriter(f, ['model', 'rank_ub', 'bt', 'bt_low', 'bt_high', 'needed', 'elo', 'battles', 'wins', 'ties',
                                 'losses', 'win_rate', 'group', 'record'], extrasaction='ignore')
        out.writeheader()
        out.writerows(board['rows'])
    votes_path = os.path.join(folder, 'votes.csv')
    db = store.connect(votes)
    try:
        store.export(db, votes_path)
    finally:
        db.close()
    return board_path, votes_path


# ----------------------------------------------------------------------------- the page
def build_page():
    import gradio as gr
    names = list(CONTESTANTS)
    prompts = []
    path = examples if os.path.exists(examples) else os.path.join(os.path.dirname(os.path.abspath(__file__)), examples)
    if os.path.exists(path):
        with open(path, encoding='utf-8', newline='') as f:
            prompts = [[row['prompt']] for row in csv.DictReader(f) if row.get('prompt')]

    def refuse(message):  # a message for the page; no traceback in the terminal for a user's slip
        return gr.Error(message, print_exception=False)

    def check_prompt(prompt):
        if not prompt or not prompt.strip():
            raise refuse('请先输入提示词')

    def params_of(m, t, k, p, pp, fp):
        return {'max_new_tokens': int(m), 'temperature': float(t), 'top_k': int(k), 'top_p': float(p),
                'presence_penalty': float(pp), 'frequency_penalty': float(fp)}

    def single(name, prompt, m, t, k, p, pp, fp, request: gr.Request):
        check_prompt(prompt)
        for texts, secs, states in race([name], prompt, params_of(m, t, k, p, pp, fp), (request.session_hash, 'single')):
            yield chat(prompt, texts[0], states[0]), timing(secs[0], states[0], texts[0]), prompt

    def side_by_side(name_a, name_b, prompt, m, t, k, p, pp, fp, request: gr.Request):
        check_prompt(prompt)
        params = params_of(m, t, k, p, pp, fp)
        for texts, secs, states in race([name_a, name_b], prompt, params, (request.session_hash, 'sbs')):
            yield (*(chat(prompt, texts[i], states[i]) for i in range(2)),
                   *(timing(secs[i], states[i], texts[i]) for i in range(2)), prompt)

    def battle(prompt, m, t, k, p, pp, fp, request: gr.Request):
        check_prompt(prompt)
        pair, params = draw_pair(live_weights(), GROUPS, PAIR_RNG), params_of(m, t, k, p, pp, fp)
        if not pair:
            raise refuse('对战需要至少两个在线的不同模型（权重大于 0）：在 --peers 文件里再加一个，或等同学注册')
        for texts, secs, states in race(pair, prompt, params, (request.session_hash, 'battle')):
            done, failed, shown, found, fight = 'running' not in states, 'failed' in states, paced(texts, states), [], None
            if not done:
                note = '两个匿名模型正在作答……（两边按较慢一方的速度显示）'
            elif failed:
                note = f'本场有模型出错，不计票（模型 A 是 **{pair[0]}**，模型 B 是 **{pair[1]}**）。点“开始对战”再来一场。'
            else:
                found = leaks(texts, LEAK_WORDS)
                note = '请投票：投票后揭晓双方名字。' + (f"\n\n⚠️ 回答里出现了 {'、'.join(found)}：本场算“泄露”，"
                                                   '可以投票，但这一票默认不计入排行榜。' if found else '')
            if done:
                fight = {'id': uuid.uuid4().hex, 'names': pair, 'prompt': prompt, 'params': params, 'answers': list(texts),
                         'secs': list(secs), 'states': list(states), 'leaks': found, 'failed': failed}
            yield (*(chat(prompt, shown[i], 'running' if not done else states[i]) for i in range(2)),
                   *(timing(secs[i], 'running' if not done else states[i], shown[i], clock=failed) for i in range(2)),
                   note, fight, *[gr.Button(interactive=done and not failed)] * 4)

    def voter(choice):
        def vote(fight, request: gr.Request = None):
            if not fight:
                raise refuse('请先开始一场对战')
            if fight['failed']:
                raise refuse('本场有模型出错，不计票')
            (a, b), (sa, sb) = fight['names'], fight['secs']
            who = getattr(request, 'username', None) or ''
            record = {'battle_id': fight['id'], 'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
                      'voter': who, 'voter_kind': 'human',
                      'prompt': fight['prompt'], 'params': fight['params'], 'model_a': a, 'model_b': b,
                      'answer_a': fight['answers'][0], 'answer_b': fight['answers'][1], 'vote': choice,
                      'leaked': bool(fight['leaks']), 'leak_words': fight['leaks'], 'seconds_a': round(sa, 2),
                      'seconds_b': round(sb, 2), 'over_long': [s for s, st in zip('AB', fight['states']) if st == 'cut'],
                      'stopped': 'stopped' in fight['states']}
            if not write_vote(record, votes):
                raise refuse('这一场已经投过票了')
            reveal = (f"你的投票：**{VOTE_TEXT[choice]}**（已记录）。模型 A 是 **{ratings.md(a)}**（用时 {sa:.1f} 秒），"
                      f"模型 B 是 **{ratings.md(b)}**（用时 {sb:.1f} 秒）。" + ('本场泄露了名字，这一票默认不计入排行榜。' if fight['leaks'] else ''))
            if who and who in (owners().get(a), owners().get(b)):
                reveal += '这一场有你自己注册的模型：这一票保留，但不计入排行榜。'
            elif who and daily_cap and votes_today(who, votes) > daily_cap:
                reveal += f'你今天已经投了超过 {daily_cap} 票：多出的票保留，但不计入排行榜。'

            try:  # the vote is in the file: nothing after this may make the page offer it again
                board = board_text()[0]
            except Exception as err:
                board = f'⚠️ 排行榜暂时算不出来（{type(err).__name__}: {err}）；你的一票已经记下了。'
            return reveal, board, *[gr.Button(interactive=False)] * 4
        return vote

    def prompt_row(tab):
        """The prompt box with its buttons and examples, the same in every tab."""
        box = gr.Textbox(label='提示词（以 ## 结尾表示提问）', placeholder='例如：新华社北京１月１日电  或  什么是希望工程？##',
                         lines=2, elem_id=f'{tab}_prompt')
        with gr.Row():
            send = gr.Button('生成' if tab != 'battle' else '开始对战', variant='primary', elem_id=f'{tab}_send')
            again = gr.Button('重新生成', elem_id=f'{tab}_again', visible=tab != 'battle')
            stop = gr.Button('停止', variant='stop', elem_id=f'{tab}_stop')
            clear = gr.Button('清空', elem_id=f'{tab}_clear')
        if prompts:
            gr.Examples(prompts, inputs=[box], label='示例', examples_per_page=len(prompts))
        return box, send, again, stop, clear

    def pane(label, elem_id):
        box = gr.Chatbot(label=label, elem_id=elem_id, height=360, render_markdown=False, buttons=['copy'])
        return box, gr.Markdown('用时 —', elem_id=f'{elem_id}_time')

    with gr.Blocks(title='MiniGPT 竞技场', analytics_enabled=False) as page:
        gr.Markdown('# MiniGPT 竞技场\n和模型对话、并排比较、匿名对战投票，看排行榜。续写：直接输入开头；提问：在问题后面加 `##`。')
        with gr.Accordion('生成参数（发给每个参赛模型）', open=True):
            with gr.Row():
                from engine import Sampling
                demo = Sampling()  # the demo's defaults, as on /generate: penalties 1.0, or a small model's text loops
                knobs = [gr.Slider(1, 1024, value=demo.max_new_tokens, step=1, label='max_new_tokens（最多生成的 token 数）'),
                         gr.Slider(0.0, 2.0, value=demo.temperature, step=0.05, label='temperature（0 为贪心）'),
                         gr.Slider(1, 200, value=demo.top_k, step=1, label='top_k'),
                         gr.Slider(0.05, 1.0, value=demo.top_p, step=0.05, label='top_p（1 为不限）'),
                         gr.Slider(-2.0, 2.0, value=demo.presence_penalty, step=0.1, label='presence_penalty（出现过就扣分）'),
                         gr.Slider(-2.0, 2.0, value=demo.frequency_penalty, step=0.1, label='frequency_penalty（按出现次数扣分）')]
        with gr.Tabs():
            with gr.Tab('单模型对话'):
                pick, last = gr.Dropdown(names, value=names[0] if names else None, label='模型'), gr.State('')
                out, took = pane('回答', 'single_out')
                box, send, again, stop, clear = prompt_row('single')
                gr.on([send.click, box.submit], single, [pick, box, *knobs], [out, took, last], api_name='single')
                again.click(single, [pick, last, *knobs], [out, took, last], api_name='regenerate_single')
                stop.click(stopper('single'), None, None, api_name='stop_single')
                clear.click(lambda: ('', [], '用时 —'), None, [box, out, took], api_visibility='undocumented')
            with gr.Tab('并排比较'):
                last = gr.State('')
                with gr.Row():
                    with gr.Column():
                        pick_a = gr.Dropdown(names, value=names[0] if names else None, label='左边的模型')
                        out_a, took_a = pane('左', 'sbs_a')
                    with gr.Column():
                        pick_b = gr.Dropdown(names, value=names[min(1, len(names) - 1)] if names else None, label='右边的模型')
                        out_b, took_b = pane('右', 'sbs_b')
                box, send, again, stop, clear = prompt_row('sbs')
                outputs = [out_a, out_b, took_a, took_b, last]
                gr.on([send.click, box.submit], side_by_side, [pick_a, pick_b, box, *knobs], outputs, api_name='side_by_side')
                again.click(side_by_side, [pick_a, pick_b, last, *knobs], outputs, api_name='regenerate_side_by_side')
                stop.click(stopper('sbs'), None, None, api_name='stop_side_by_side')
                clear.click(lambda: ('', [], [], '用时 —', '用时 —'), None, [box, out_a, out_b, took_a, took_b],
                            api_visibility='undocumented')
            with gr.Tab('匿名对战'):
                fight = gr.State(None)
                gr.Markdown('随机抽两个不同的模型匿名作答，两边按同样的速度显示。投票之后才揭晓名字和用时，每场只能投一票。')
                with gr.Row():
                    with gr.Column():
                        bat_a, bat_took_a = pane('模型 A', 'battle_a')
                    with gr.Column():
                        bat_b, bat_took_b = pane('模型 B', 'battle_b')
                reveal = gr.Markdown('', elem_id='battle_reveal')
                with gr.Row():
                    vote_buttons = [gr.Button(label, interactive=False, elem_id=f'vote_{c}') for c, label in VOTE_TEXT.items()]
                box, send, _, stop, clear = prompt_row('battle')
            with gr.Tab('参赛者') as people_tab:
                people = gr.Markdown(elem_id='contestants')
                people_refresh = gr.Button('刷新', elem_id='contestants_refresh')
            with gr.Tab('排行榜') as board_tab:
                board = gr.Markdown(elem_id='leaderboard')
                with gr.Row():
                    pictures = [gr.Plot(label='胜率矩阵', elem_id='win_matrix', format='png'),
                                gr.Plot(label='对战次数', elem_id='count_matrix', format='png')]
                with gr.Row():
                    refresh = gr.Button('刷新')
                    fetch = gr.Button('下载排行榜和全部投票（CSV）', elem_id='download')
                files = gr.File(label='下载', file_count='multiple', elem_id='downloads')
        outputs = [bat_a, bat_b, bat_took_a, bat_took_b, reveal, fight, *vote_buttons]
        gr.on([send.click, box.submit], battle, [box, *knobs], outputs, api_name='battle')
        stop.click(stopper('battle'), None, None, api_name='stop_battle')
        clear.click(lambda: ('', [], [], '用时 —', '用时 —', '', None, *[gr.Button(interactive=False)] * 4), None,
                    [box, *outputs], api_visibility='undocumented')
        for button, choice in zip(vote_buttons, VOTE_TEXT):
            button.click(voter(choice), [fight], [reveal, board, *vote_buttons], api_name=f'vote_{choice}')
        gr.on([refresh.click, board_tab.select, page.load], board_view, None, [board, *pictures], api_name='leaderboard')
        gr.on([people_refresh.click, people_tab.select, page.load], contestants_view, None, [people], api_name='contestants')

        def fetch_files(request: gr.Request = None):
            try:
                return list(downloads(request))
            except ValueError as err:
                raise refuse(str(err))
        fetch.click(fetch_files, None, [files], api_name='download')
        page.load(lambda: [gr.Dropdown(choices=list(CONTESTANTS))] * 3, None, [pick, pick_a, pick_b], api_visibility='undocumented')
    return page


def read_roster(path):
    """name -> password from a CSV file with the columns name,password; ValueError naming the file and line."""
    if not os.path.isfile(path):
        raise ValueError(f'{path}: no such roster file (a CSV with the columns name,password)')
    accounts = {}
    with open(path, encoding='utf-8-sig', newline='') as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or [h.strip() for h in header[:2]] != ['name', 'password']:
            raise ValueError(f'{path}:1: the first line must be the header name,password, got {header!r:.80}')
        for line_no, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1]:
                raise ValueError(f'{path}:{line_no}: expected name,password, got {row!r:.80}')
            if row[0].strip() in accounts:
                raise ValueError(f'{path}:{line_no}: the name {row[0].strip()!r} is listed twice')
            accounts[row[0].strip()] = row[1]
    if not accounts:
        raise ValueError(f'{path}: no names in the roster')
    return accounts


def stopper(tab):
    import gradio as gr

    def stop(request: gr.Request):
        with RUNNING_LOCK:
            for event in RUNNING.get((request.session_hash, tab), ()):
                event.set()
    return stop


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no telemetry or version check: the page must work offline
    os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as probe:  # before minutes of loading
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the page's own server does
        try:
            probe.bind((host, port))
        except OSError as e:
            sys.exit(f'error: cannot listen on {host}:{port}: {e} (an arena still running? stop it, or pick another --port)')
    if not ratings.is_store(votes):
        sys.exit(f'error: --votes={votes}: the votes store is a SQLite file (.db); an older votes.jsonl is imported once '
                 f'with: python ratings.py {os.path.splitext(votes)[0]}.db --import={votes}')
    os.makedirs(os.path.dirname(os.path.abspath(votes)), exist_ok=True)
    try:
        entries = [] if not peers else load_peers(peers) if os.path.exists(peers) or peers != 'peers.json' else default_peers()
        accounts = read_roster(roster) if roster else None
        open_store(votes)
        if accounts is not None and teacher and teacher not in accounts:
            raise ValueError(f'--teacher={teacher!r} is not a name in {roster}')
        MODELS.update(load_models(entries, device))
    except ValueError as e:
        sys.exit(f'error: {e}')
    CONTESTANTS.update((e['name'], e) for e in entries)
    GROUPS.update(same_model_groups(entries))
    PAIR_RNG.seed(None if seed < 0 else seed)
    LEAK_WORDS.extend({*CONTESTANTS, *(e['model'] for e in entries if e.get('model')), *filter(None, leak_words.split(','))})
    for e in entries:
        kind = f"local checkpoint {e['checkpoint']}" if 'checkpoint' in e else f"{e['kind']} peer {e['url']}"
        same = [n for n in GROUPS if GROUPS[n] == GROUPS[e['name']] and n != e['name']]
        print(f"contestant {e['name']!r}: {kind}, weight {e.get('weight', 1)}" + (f'; same model as {same}: never paired' if same else ''))
        if not same and MODELS and GROUPS[e['name']].startswith('server localhost'):
            print(f"  note: {e['name']!r} is a server on this machine; if it serves one of the local checkpoints, add "
                  '"same_as": "<that contestant>" to it, or battles will pit the model against itself')
    REGISTRY.append(Registry(votes, CONTESTANTS, token, accounts, heartbeat, expiry, timeout, on_change=sync_registered))
    sync_registered()
    REGISTRY[0].start()
    voted = open_store(votes).execute('SELECT COUNT(*) FROM votes').fetchone()[0]
    print(f'votes: {os.path.abspath(votes)} ({voted} battles voted)  page: http://{host}:{port}  registrations: '
          f'http://{host}:{port}/register ({len(REGISTRY[0].entries)} registered earlier; '
          f"{'class token required' if token else 'no class token'}; {'roster ' + roster if roster else 'anonymous voting'})")
    # system fonts only: the default theme would fetch Google Fonts, which an offline classroom cannot reach
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    app = FastAPI()

    @app.post('/register')
    async def register(request: Request):
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({'ok': False, 'message': '请求体不是 JSON'}, status_code=400)
        try:
            return JSONResponse({'ok': True, 'message': await run_in_threadpool(REGISTRY[0].register, payload)})
        except Refused as err:
            return JSONResponse({'ok': False, 'message': str(err)}, status_code=err.status)

    theme = gr.themes.Default(font=['system-ui', 'sans-serif'], font_mono=['monospace'])
    page = build_page().queue(default_concurrency_limit=16)
    auth = (lambda user, password: accounts.get(user) == password) if accounts is not None else None
    app = gr.mount_gradio_app(app, page, path='/', auth=auth, auth_message='用老师发的名字和密码登录', theme=theme,
                              ssr_mode=False, show_error=True, footer_links=['api'])
    uvicorn.run(app, host=host, port=port, log_level='warning')

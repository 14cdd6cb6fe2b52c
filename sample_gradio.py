"""
The arena: a web page where people chat with the models, compare two side by side, judge anonymous
battles, and read an Elo leaderboard built from their votes (as LMSYS's Chatbot Arena does).

    python sample_gradio.py                                   # contestants from peers.json, else out/sft + out/pretrain
    python sample_gradio.py --peers=peers.json --votes=votes.jsonl --host=0.0.0.0 --port=7860
    python sample_gradio.py --peers=peers.json --host=127.0.0.1 --port=7861 --device=cpu

Contestants live in one editable JSON list (--peers, see peers.example.json):
    {"name": "本地微调", "checkpoint": "out/sft"}                          a checkpoint served in this process
    {"name": "张三的模型", "url": "http://192.168.1.20:5000"}              a classmate's server.py (POST /generate)
    {"name": "qwen", "url": "http://127.0.0.1:1234/v1", "kind": "openai",  any OpenAI-compatible server
     "model": "qwen2-7b-instruct", "api_key_env": "LMSTUDIO_KEY"}            (LM Studio, vLLM, Ollama, a MiniGPT /v1)
A minigpt peer may also name a "model" (server.py --models serves several) and an "api_key_env".

A prompt ending in ## is a question: local models and MiniGPT peers answer it after A_TOKEN; an
OpenAI-compatible peer gets it as a chat user message without the ##. A peer that is down, slow or
answers garbage gets a message in its own pane; the rest of the page keeps working.
Each vote is appended to --votes (JSONL). The leaderboard replays the votes in order with online Elo
(start 1000, K=4, scale 400, as the public arena does) and bootstraps 95% intervals.
"""
import codecs
import csv
import json
import os
import queue
import random
import threading
import time
from datetime import datetime, timezone

import numpy as np

from data_utils import jsonl_objects

# -----------------------------------------------------------------------------
host = '0.0.0.0'  # interface the page listens on (127.0.0.1 keeps it to this machine)
port = 7860  # port of the page
peers = 'peers.json'  # the contestants file; when the default is missing, local out/sft and out/pretrain are used
votes = 'votes.jsonl'  # every vote is appended here; the leaderboard is computed from it
examples = 'examples.csv'  # example prompts shown under the prompt box (column "prompt")
device = 'auto'  # where local checkpoints run: auto, cpu, cuda, mps
timeout = 30  # seconds a peer may stay silent (connecting, or between two pieces) before it is given up
seed = -1  # seed for drawing battle pairs; -1 draws fresh ones each start
bootstrap_rounds = 200  # resamples of the votes for the leaderboard's 95% intervals
# -----------------------------------------------------------------------------

OUTCOME = {'A': 1.0, 'B': 0.0, 'tie': 0.5, 'both_bad': 0.5}  # score of model A; both bad counts as a tie, as in FastChat
VOTE_TEXT = {'A': 'A 更好', 'B': 'B 更好', 'tie': '平局', 'both_bad': '都不好'}
PEER_KEYS = {'name', 'url', 'kind', 'model', 'api_key_env'}
KINDS = ('minigpt', 'openai')


# ----------------------------------------------------------------------------- Elo, plain functions
def read_votes(path):
    """(battles, bad): battles are (model_a, model_b, score of A) in file order; bad lists unreadable lines as path:line."""
    battles, bad = [], []
    if not os.path.exists(path):
        return battles, bad
    for line_no, v, problem in jsonl_objects(path):
        if problem:
            bad.append(f'{path}:{line_no} ({problem[1]})')
            continue
        try:
            battles.append((v['model_a'], v['model_b'], OUTCOME[v['vote']]))
        except (KeyError, TypeError) as e:
            bad.append(f'{path}:{line_no} ({type(e).__name__}: {e})')
    return battles, bad


def compute_elo(battles, k=4.0, scale=400.0, base=10.0, init=1000.0):
    """Online Elo: the votes replayed in order, each moving both ratings by K * (score - expected score)."""
    ratings = {}
    for a, b, score in battles:
        ra, rb = ratings.setdefault(a, init), ratings.setdefault(b, init)
        expected = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        ratings[a] = ra + k * (score - expected)
        ratings[b] = rb - k * (score - expected)
    return ratings


def bootstrap_elo(battles, rounds=200, seed=0, k=4.0, scale=400.0, base=10.0, init=1000.0):
    """{name: (low, high)} 95% intervals: Elo recomputed on `rounds` resamples of the votes (with replacement)."""
    if not battles:
        return {}
    names = sorted({n for a, b, _ in battles for n in (a, b)})
    index = {n: i for i, n in enumerate(names)}
    a = np.array([index[x[0]] for x in battles])
    b = np.array([index[x[1]] for x in battles])
    score = np.array([x[2] for x in battles], dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(battles), size=(rounds, len(battles)))
    ratings = np.full((rounds, len(names)), init, dtype=np.float64)
    rows = np.arange(rounds)
    for j in range(len(battles)):  # all resamples advance one vote at a time, each in its own drawn order
        p = picks[:, j]
        expected = 1.0 / (1.0 + base ** ((ratings[rows, b[p]] - ratings[rows, a[p]]) / scale))
        delta = k * (score[p] - expected)
        ratings[rows, a[p]] += delta
        ratings[rows, b[p]] -= delta
    low, high = np.percentile(ratings, [2.5, 97.5], axis=0)
    return {n: (float(low[i]), float(high[i])) for i, n in enumerate(names)}


def leaderboard_rows(battles, names=(), rounds=200):
    """Rows (name, elo, low, high, battles, wins, ties, losses) best first; `names` adds contestants with no votes yet."""
    elo, ci = compute_elo(battles), bootstrap_elo(battles, rounds)
    counts = {n: [0, 0, 0] for n in list(names) + list(elo)}
    for a, b, score in battles:
        for name, s in ((a, score), (b, 1.0 - score)):
            counts[name][0 if s == 1.0 else 1 if s == 0.5 else 2] += 1
    rows = [(n, elo.get(n, 1000.0), *ci.get(n, (1000.0, 1000.0)), sum(c), *c) for n, c in counts.items()]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def leaderboard_markdown(path, names=(), rounds=200):
    battles, bad = read_votes(path)
    lines = ['| 排名 | 模型 | Elo | 95% 区间 | 对战数 | 胜 / 平 / 负 | 胜率 |', '|---|---|---|---|---|---|---|']
    for rank, (n, r, lo, hi, total, w, t, l) in enumerate(leaderboard_rows(battles, names, rounds), 1):
        rate = f'{100 * w / total:.0f}%' if total else '—'
        lines.append(f'| {rank} | {n} | {r:.1f} | {lo:.1f} ~ {hi:.1f} | {total} | {w} / {t} / {l} | {rate} |')
    note = f'共 {len(battles)} 票（{path}）。Elo 按投票顺序计算：初始 1000，K=4，尺度 400；区间为 {rounds} 次有放回重抽样的 95% 区间。'
    if bad:
        note += f'\n\n⚠️ 跳过了 {len(bad)} 行无法读取的记录：' + '；'.join(bad[:3])
    return '\n'.join(lines) + '\n\n' + note


# ----------------------------------------------------------------------------- contestants
def load_peers(path):
    """The contestants file, checked entry by entry: {name, checkpoint} or {name, url, kind?, model?, api_key_env?}."""
    if not os.path.exists(path):
        raise SystemExit(f'error: {path}: no such contestants file (see peers.example.json)')
    try:
        with open(path, encoding='utf-8') as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise SystemExit(f'error: {path}: not valid JSON ({e})')
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f'error: {path}: expected a non-empty JSON list of contestants, like [{{"name": "本地", "checkpoint": "out/sft"}}]')
    seen = set()
    for i, e in enumerate(entries, 1):
        where = f'{path}: entry {i}' + (f' ({e.get("name")!r})' if isinstance(e, dict) and 'name' in e else '')
        if not isinstance(e, dict):
            raise SystemExit(f'error: {where}: expected an object, got {e!r}')
        allowed = {'name', 'checkpoint'} if 'checkpoint' in e else PEER_KEYS
        unknown = sorted(set(e) - allowed)
        if unknown:
            raise SystemExit(f'error: {where}: unknown key(s) {unknown}; allowed here: {sorted(allowed)}')
        if not isinstance(e.get('name'), str) or not e['name'].strip():
            raise SystemExit(f'error: {where}: needs a non-empty "name"')
        if e['name'] in seen:
            raise SystemExit(f'error: {where}: the name {e["name"]!r} is used twice')
        seen.add(e['name'])
        if 'checkpoint' in e:
            continue
        if not isinstance(e.get('url'), str) or not e['url'].startswith(('http://', 'https://')):
            raise SystemExit(f'error: {where}: needs "url" (http://host:port of a peer) or "checkpoint" (a local model folder)')
        e.setdefault('kind', 'minigpt')
        if e['kind'] not in KINDS:
            raise SystemExit(f'error: {where}: "kind" must be one of {list(KINDS)}, got {e["kind"]!r}')
        if e['kind'] == 'openai' and not e.get('model'):
            raise SystemExit(f'error: {where}: an openai peer needs "model" (the name its server lists under /v1/models)')
    return entries


def default_peers():
    found = [{'name': f'{n} (本地)', 'checkpoint': p} for n, p in (('sft', 'out/sft'), ('pretrain', 'out/pretrain'))
             if os.path.exists(os.path.join(p, 'ckpt.pt'))]
    if not found:
        raise SystemExit('error: no peers.json and no out/sft or out/pretrain checkpoint: train one, or pass --peers=FILE')
    print(f"peers.json not found: using the local checkpoints {[c['checkpoint'] for c in found]}")
    return found


def load_models(entries, device):
    """Loads each local checkpoint once (two names may share one), keyed by contestant name."""
    from model import load_checkpoint, pick_device
    loaded, models = {}, {}
    for e in entries:
        if 'checkpoint' in e:
            path = os.path.abspath(e['checkpoint'])
            if path not in loaded:
                try:
                    loaded[path] = load_checkpoint(path, pick_device(device))[0]
                except (FileNotFoundError, ValueError) as err:
                    raise SystemExit(f"error: contestant {e['name']!r}: {err}")
            models[e['name']] = loaded[path]
    return models


# ----------------------------------------------------------------------------- streaming one answer
class PeerError(Exception):
    pass


def api_key(peer):
    """The peer's API key from the environment variable it names, or None when it names none."""
    env = peer.get('api_key_env')
    if env and not os.environ.get(env):
        raise PeerError(f'环境变量 {env} 没有设置（这个模型的 API key）')
    return os.environ[env] if env else None


def stream_local(model, prompt, max_new_tokens, temperature, top_k):
    from engine import encode_prompt, stream_text
    yield from stream_text(model, encode_prompt(prompt), max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)


def stream_minigpt(peer, prompt, max_new_tokens, temperature, top_k):
    import requests
    body = {'prompt': prompt, 'max_new_tokens': max_new_tokens, 'temperature': temperature, 'top_k': top_k}
    if peer.get('model'):
        body['model'] = peer['model']
    key = api_key(peer)
    headers = {'Authorization': f'Bearer {key}'} if key else {}
    url = peer['url'].rstrip('/') + '/generate'
    with requests.post(url, json=body, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
        if r.status_code != 200:
            raise PeerError(f'HTTP {r.status_code}：{r.text[:200]}')
        if not r.headers.get('Content-Type', '').startswith('text/plain'):
            raise PeerError(f"回答不是 MiniGPT /generate 的纯文本流（Content-Type: {r.headers.get('Content-Type')}）")
        decoder = codecs.getincrementaldecoder('utf-8')()  # strict: bytes that are not UTF-8 mean a garbled peer
        for chunk in r.iter_content(chunk_size=None):
            piece = decoder.decode(chunk)
            if piece:
                yield piece
        decoder.decode(b'', final=True)


def stream_openai(peer, prompt, max_new_tokens, temperature, top_k):
    from openai import OpenAI
    client = OpenAI(base_url=peer['url'], api_key=api_key(peer) or 'none', timeout=timeout, max_retries=0)
    question = prompt.rstrip()[:-2].rstrip() if prompt.rstrip().endswith('##') else prompt
    # top_k is not part of the OpenAI API and strict servers reject unknown fields, so it is not sent
    stream = client.chat.completions.create(model=peer['model'], messages=[{'role': 'user', 'content': question}],
                                            max_tokens=max_new_tokens, temperature=temperature, stream=True)
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content
    finally:
        stream.close()


def stream_answer(name, prompt, max_new_tokens, temperature, top_k):
    """Text pieces of one contestant's answer, whatever kind it is."""
    if name in MODELS:
        return stream_local(MODELS[name], prompt, max_new_tokens, temperature, top_k)
    peer = CONTESTANTS[name]
    stream = stream_openai if peer['kind'] == 'openai' else stream_minigpt
    return stream(peer, prompt, max_new_tokens, temperature, top_k)


def describe_error(name, err):
    """A message a user understands, for the pane of the contestant that failed."""
    import openai
    import requests
    url = CONTESTANTS.get(name, {}).get('url', '')
    if isinstance(err, (requests.Timeout, openai.APITimeoutError)):
        why = f'{url} 超过 {timeout} 秒没有回应'
    elif isinstance(err, (requests.ConnectionError, openai.APIConnectionError)):
        why = f'连不上 {url}（对方没开机、没启动服务，或地址/端口写错了）'
    elif isinstance(err, openai.APIStatusError):
        why = f'{url} 返回 HTTP {err.status_code}：{str(err.message)[:200]}'
    elif isinstance(err, UnicodeDecodeError):
        why = '回答不是 UTF-8 文本'
    elif isinstance(err, PeerError):
        why = str(err)
    else:
        why = f'{type(err).__name__}: {str(err)[:200]}'
    return f'⚠️ {name} 出错：{why}'


# ----------------------------------------------------------------------------- several answers at once
CONTESTANTS = {}  # name -> its entry in the peers file; filled at start
MODELS = {}  # name -> loaded GPT, for the local checkpoints
PAIR_RNG = random.Random()  # draws battle pairs; seeded at start when --seed is given
VOTES_LOCK = threading.Lock()  # one vote line written at a time
RUNNING = {}  # (session, tab) -> stop events of the streams in flight there, set by that tab's Stop button
RUNNING_LOCK = threading.Lock()
STOPPED = '（已停止）'  # appended to an answer cut short by the Stop button


def race(names, prompt, params, key):
    """Streams all `names` at once, one thread each; yields (texts, seconds, running, failed) as pieces arrive."""
    n, start = len(names), time.time()
    texts, secs, running, failed = [''] * n, [0.0] * n, [True] * n, [False] * n
    updates, stop = queue.Queue(), threading.Event()
    with RUNNING_LOCK:
        RUNNING.setdefault(key, set()).add(stop)

    def work(i):
        try:
            pieces = stream_answer(names[i], prompt, **params)
            try:
                for piece in pieces:
                    updates.put((i, piece, False))
                    if stop.is_set():
                        break
            finally:
                pieces.close()  # a local model stops computing; an HTTP stream is closed
        except Exception as err:  # any failure of one contestant stays in its own pane
            updates.put((i, describe_error(names[i], err), True))
        updates.put((i, None, False))

    for i in range(n):
        threading.Thread(target=work, args=(i,), daemon=True).start()
    try:
        while any(running):
            try:
                items = [updates.get(timeout=0.25)]
            except queue.Empty:  # nothing new: still update the clocks
                items = []
            while not updates.empty():  # only this loop takes from the queue, so this get never waits
                items.append(updates.get())
            now = time.time() - start
            for i, piece, is_error in items:
                secs[i] = now
                if piece is None:
                    running[i] = False
                elif is_error:
                    texts[i], failed[i] = (texts[i] + '\n\n' if texts[i] else '') + piece, True
                else:
                    texts[i] += piece
            if stop.is_set():  # Stop pressed: do not wait for a silent peer, leave its thread to time out
                for i in range(n):
                    if running[i]:
                        texts[i], running[i] = texts[i] + STOPPED, False
            secs = [now if running[i] else secs[i] for i in range(n)]
            yield texts, secs, running, failed
    finally:
        stop.set()
        with RUNNING_LOCK:
            RUNNING[key].discard(stop)
            if not RUNNING[key]:
                del RUNNING[key]


def stopper(tab):
    import gradio as gr

    def stop(request: gr.Request):
        with RUNNING_LOCK:
            for event in RUNNING.get((request.session_hash, tab), ()):
                event.set()
    return stop


def chat(prompt, text, running):
    shown = text or ('…' if running else '（没有生成内容）')
    return [{'role': 'user', 'content': prompt}, {'role': 'assistant', 'content': shown}]


def timing(secs, running, failed, text):
    if failed:
        return f'用时 {secs:.1f} 秒 · 出错'
    stopped = not running and text.endswith(STOPPED)
    state = '生成中…' if running else '已停止' if stopped else '完成'
    return f'用时 {secs:.1f} 秒 · {len(text) - len(STOPPED) * stopped} 字 · {state}'


def check_prompt(prompt):
    import gradio as gr
    if not prompt or not prompt.strip():
        raise gr.Error('请先输入提示词')


# ----------------------------------------------------------------------------- the page
def build_page():
    import gradio as gr
    names = list(CONTESTANTS)
    prompts = []
    path = examples if os.path.exists(examples) else os.path.join(os.path.dirname(os.path.abspath(__file__)), examples)
    if os.path.exists(path):
        with open(path, encoding='utf-8', newline='') as f:
            prompts = [[row['prompt']] for row in csv.DictReader(f) if row.get('prompt')]

    def two_panes(prompt, texts, secs, running, failed):
        return (*(chat(prompt, texts[i], running[i]) for i in range(2)),
                *(timing(secs[i], running[i], failed[i], texts[i]) for i in range(2)))

    def params_of(m, t, k):
        return {'max_new_tokens': int(m), 'temperature': float(t), 'top_k': int(k)}

    def single(name, prompt, m, t, k, request: gr.Request):
        check_prompt(prompt)
        for texts, secs, running, failed in race([name], prompt, params_of(m, t, k), (request.session_hash, 'single')):
            yield chat(prompt, texts[0], running[0]), timing(secs[0], running[0], failed[0], texts[0])

    def side_by_side(name_a, name_b, prompt, m, t, k, request: gr.Request):
        check_prompt(prompt)
        for texts, secs, running, failed in race([name_a, name_b], prompt, params_of(m, t, k), (request.session_hash, 'sbs')):
            yield two_panes(prompt, texts, secs, running, failed)

    def battle(prompt, m, t, k, request: gr.Request):
        check_prompt(prompt)
        if len(names) < 2:
            raise gr.Error('对战需要至少两个模型：在 --peers 文件里再加一个')
        pair, params = PAIR_RNG.sample(names, 2), params_of(m, t, k)
        state = {'names': pair, 'prompt': prompt, 'params': params, 'answers': None, 'ok': False, 'voted': False}
        for texts, secs, running, failed in race(pair, prompt, params, (request.session_hash, 'battle')):
            done = not any(running)
            if done:
                state.update(answers=list(texts), ok=not any(failed))
            note = ('两个匿名模型正在作答……' if not done else '请投票：投票后揭晓双方名字。' if not any(failed) else
                    f'本场有模型出错，不计票（模型 A 是 **{pair[0]}**，模型 B 是 **{pair[1]}**）。点“开始对战”再来一场。')
            buttons = [gr.Button(interactive=done and state['ok'])] * 4
            yield (*two_panes(prompt, texts, secs, running, failed), note, state, *buttons)

    def voter(choice):
        def vote(state):
            if not state or not state.get('answers'):
                raise gr.Error('请先开始一场对战')
            if state['voted'] or not state['ok']:
                raise gr.Error('这一场已经投过票了' if state['voted'] else '本场有模型出错，不计票')
            record = {'time': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'prompt': state['prompt'],
                      'params': state['params'], 'model_a': state['names'][0], 'model_b': state['names'][1],
                      'answer_a': state['answers'][0], 'answer_b': state['answers'][1], 'vote': choice}
            with VOTES_LOCK, open(votes, 'a', encoding='utf-8') as f:
                f.write(json.dumps(record, ensure_ascii=False) + '\n')
            state = dict(state, voted=True)
            reveal = f"你的投票：**{VOTE_TEXT[choice]}**（已记录）。模型 A 是 **{state['names'][0]}**，模型 B 是 **{state['names'][1]}**。"
            return reveal, leaderboard_markdown(votes, names, bootstrap_rounds), state, *[gr.Button(interactive=False)] * 4
        return vote

    def prompt_row(tab):
        """The prompt box with its buttons and examples, the same in every tab."""
        box = gr.Textbox(label='提示词（以 ## 结尾表示提问）', placeholder='例如：新华社北京１月１日电  或  什么是希望工程？##',
                         lines=2, elem_id=f'{tab}_prompt')
        with gr.Row():
            send = gr.Button('生成' if tab != 'battle' else '开始对战', variant='primary', elem_id=f'{tab}_send')
            stop = gr.Button('停止', variant='stop', elem_id=f'{tab}_stop')
            clear = gr.Button('清空', elem_id=f'{tab}_clear')
        if prompts:
            gr.Examples(prompts, inputs=[box], label='示例')
        return box, send, stop, clear

    def pane(label, elem_id):
        box = gr.Chatbot(label=label, elem_id=elem_id, height=360, render_markdown=False, buttons=['copy'])
        return box, gr.Markdown('用时 —', elem_id=f'{elem_id}_time')

    with gr.Blocks(title='MiniGPT 竞技场', analytics_enabled=False) as page:
        gr.Markdown('# MiniGPT 竞技场\n和模型对话、并排比较、匿名对战投票，看排行榜。续写：直接输入开头；提问：在问题后面加 `##`。')
        with gr.Accordion('生成参数', open=True):
            with gr.Row():
                max_new = gr.Slider(1, 1024, value=225, step=1, label='max_new_tokens（最多生成的 token 数）')
                temp = gr.Slider(0.0, 2.0, value=0.1, step=0.05, label='temperature（0 为贪心）')
                topk = gr.Slider(1, 200, value=20, step=1, label='top_k')
        knobs = [max_new, temp, topk]
        with gr.Tabs():
            with gr.Tab('单模型对话'):
                pick = gr.Dropdown(names, value=names[0], label='模型')
                out, took = pane('回答', 'single_out')
                box, send, stop, clear = prompt_row('single')
                gr.on([send.click, box.submit], single, [pick, box, *knobs], [out, took], api_name='single')
                stop.click(stopper('single'), None, None, api_name='stop_single')
                clear.click(lambda: ('', [], '用时 —'), None, [box, out, took], api_visibility='undocumented')
            with gr.Tab('并排比较'):
                with gr.Row():
                    with gr.Column():
                        pick_a = gr.Dropdown(names, value=names[0], label='左边的模型')
                        out_a, took_a = pane('左', 'sbs_a')
                    with gr.Column():
                        pick_b = gr.Dropdown(names, value=names[min(1, len(names) - 1)], label='右边的模型')
                        out_b, took_b = pane('右', 'sbs_b')
                box, send, stop, clear = prompt_row('sbs')
                gr.on([send.click, box.submit], side_by_side, [pick_a, pick_b, box, *knobs], [out_a, out_b, took_a, took_b],
                      api_name='side_by_side')
                stop.click(stopper('sbs'), None, None, api_name='stop_side_by_side')
                clear.click(lambda: ('', [], [], '用时 —', '用时 —'), None, [box, out_a, out_b, took_a, took_b],
                            api_visibility='undocumented')
            with gr.Tab('匿名对战'):
                state = gr.State(None)
                gr.Markdown('随机抽两个不同的模型匿名作答。投票之后才揭晓名字，每场只能投一票。')
                with gr.Row():
                    with gr.Column():
                        bat_a, bat_took_a = pane('模型 A', 'battle_a')
                    with gr.Column():
                        bat_b, bat_took_b = pane('模型 B', 'battle_b')
                reveal = gr.Markdown('', elem_id='battle_reveal')
                with gr.Row():
                    vote_buttons = [gr.Button(label, interactive=False, elem_id=f'vote_{c}') for c, label in
                                    (('A', 'A 更好'), ('B', 'B 更好'), ('tie', '平局'), ('both_bad', '都不好'))]
                box, send, stop, clear = prompt_row('battle')
            with gr.Tab('排行榜') as board_tab:
                board = gr.Markdown(elem_id='leaderboard')
                refresh = gr.Button('刷新')
        outputs = [bat_a, bat_b, bat_took_a, bat_took_b, reveal, state, *vote_buttons]
        gr.on([send.click, box.submit], battle, [box, *knobs], outputs, api_name='battle')
        stop.click(stopper('battle'), None, None, api_name='stop_battle')
        clear.click(lambda: ('', [], [], '用时 —', '用时 —', '', None, *[gr.Button(interactive=False)] * 4), None,
                    [box, *outputs], api_visibility='undocumented')
        for button, choice in zip(vote_buttons, OUTCOME):
            button.click(voter(choice), [state], [reveal, board, state, *vote_buttons], api_name=f'vote_{choice}')
        show_board = lambda: leaderboard_markdown(votes, names, bootstrap_rounds)  # noqa: E731
        gr.on([refresh.click, board_tab.select, page.load], show_board, None, [board], api_name='leaderboard')
    return page


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no telemetry or version check: the page must work offline
    os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
    entries = load_peers(peers) if os.path.exists(peers) or peers != 'peers.json' else default_peers()
    CONTESTANTS.update((e['name'], e) for e in entries)
    MODELS.update(load_models(entries, device))
    PAIR_RNG.seed(None if seed < 0 else seed)
    for e in entries:
        kind = f"local checkpoint {e['checkpoint']}" if 'checkpoint' in e else f"{e['kind']} peer {e['url']}"
        print(f"contestant {e['name']!r}: {kind}")
    print(f'votes: {os.path.abspath(votes)}  page: http://{host}:{port}')
    # system fonts only: the default theme would fetch Google Fonts, which an offline classroom cannot reach
    import gradio as gr
    theme = gr.themes.Default(font=['system-ui', 'sans-serif'], font_mono=['monospace'])
    build_page().queue(default_concurrency_limit=16).launch(server_name=host, server_port=port, theme=theme, ssr_mode=False,
                                                             show_error=True, footer_links=['api'])

"""
Pretrains (or fine-tunes) the GPT of model.py on rows prepared by data/prepare.py or data/prepare_sft.py.

On a CPU, the tiny run (a few minutes):
$ python train.py config/train_config_cpu.py

On one GPU, the 124M run:
$ python train.py config/train_config.py

On several GPUs of one node, with DDP:
$ torchrun --standalone --nproc_per_node=8 train.py config/train_config.py

On several nodes, e.g. 2 nodes of 8 GPUs (run the first line on the master node, the second on the other):
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py config/train_config.py
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=123.456.123.456 --master_port=1234 train.py config/train_config.py
(without Infiniband, put NCCL_IB_DISABLE=1 in front)

Continue a run that stopped or was killed, from out_dir/ckpt.pt, with the same loss curve:
$ python train.py config/train_config_cpu.py --init_from=resume

Fine-tune a trained model (its shape comes from its checkpoint), e.g. on SFT rows:
$ python train.py config/train_config_sft.py --init_from=out/pretrain

The kind of rows (pretrain or sft, hence the loss mask) comes from data_dir/meta.json.
Writes out_dir/ckpt.pt and out_dir/log.jsonl (DESIGN.md §4); visualize.py plots the log.
"""
import ast
import glob
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

import data_utils
from config.train_config import VOCAB_SIZE
from model import GPT, GPTConfig, load_checkpoint, pick_device, save_checkpoint

# -----------------------------------------------------------------------------
# defaults: the 124M GPU run of config/train_config.py
# I/O
out_dir = 'out/pretrain'  # ckpt.pt and log.jsonl go here
init_from = 'scratch'  # 'scratch', 'resume' (from out_dir/ckpt.pt) or a checkpoint folder to fine-tune from
eval_interval = 500  # iterations between val-loss estimates (and checkpoints)
eval_iters = 100  # batches per loss estimate
log_interval = 10  # iterations between train-loss log lines
always_save_checkpoint = True  # False: save at an eval only on a new best val loss (the end is always saved)
seed = 1337  # model init, row order and random rows
# data
dataset = 'sample'  # rows in data/<dataset>/
data_dir = ''  # overrides data/<dataset>
sample_mode = 'traverse'  # 'traverse': every row once per epoch, shuffled; 'random': rows drawn with replacement
gradient_accumulation_steps = 8  # micro-steps per iteration, over all processes
batch_size = 16  # rows per micro-step and process
block_size = 512  # tokens per row; must match meta.json
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # 0 for pretraining; try 0.1+ when fine-tuning on little data
# AdamW and the learning-rate schedule
learning_rate = 6e-4  # peak
max_iters = 20000  # optimizer steps in all
epochs = 0.0  # > 0: max_iters = this many passes over the train rows
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this norm; 0 disables
warmup_iters = 1000  # linear warmup
lr_decay_iters = 20000  # cosine decay to min_lr by here (capped at max_iters)
min_lr = 6e-5  # ~ learning_rate / 10
# system
device = 'auto'  # 'auto' (cuda, mps, cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'bfloat16'  # GPU autocast: 'bfloat16' or 'float16'; CPU and MPS always train in float32
compile = True  # torch.compile the model (PyTorch 2)
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if k.islower() and not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())


def given_settings(argv):
    """Settings named on the command line or assigned in a config file (not left at the defaults above)."""
    names = set()
    for arg in argv:
        if arg.startswith('--'):
            names.add(arg[2:].split('=', 1)[0])
        elif os.path.isfile(arg):
            tree = ast.parse(open(arg, encoding='utf-8').read())
            names |= {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                      for t in node.targets if isinstance(t, ast.Name)}
    return names


def get_lr(it):
    """Linear warmup, then cosine decay from learning_rate to min_lr at lr_decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def stop(message):
    sys.exit(f"error: {message}")


# ----------------------------------------------------------------------------- processes and device
ddp = int(os.environ.get('RANK', -1)) != -1  # started by torchrun
device = pick_device(device)
if ddp:
    init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    assert gradient_accumulation_steps % world_size == 0, \
        f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the {world_size} processes"
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0  # only this process prints and writes files
accum_steps = gradient_accumulation_steps // world_size
device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
if device_type == 'cuda' and dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
    dtype = 'float16'  # older GPUs
if device_type != 'cuda':
    dtype = 'float32'  # autocast on a CPU is slower than float32 and gains nothing here
if dtype not in ('float32', 'bfloat16', 'float16'):
    stop(f"--dtype={dtype!r}: expected 'float32', 'bfloat16' or 'float16'")
torch.manual_seed(seed + rank)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ctx = torch.autocast(device_type='cuda', dtype=getattr(torch, dtype)) if dtype != 'float32' else nullcontext()

# ----------------------------------------------------------------------------- model
data_dir = data_dir or os.path.join('data', dataset)
try:
    meta = data_utils.read_meta(data_dir)
except FileNotFoundError as e:
    stop(e)
if meta.get('kind') not in ('pretrain', 'sft'):
    stop(f"{data_dir}/meta.json: kind={meta.get('kind')!r}, expected 'pretrain' or 'sft'")
init_data = data_utils.init_data_sft if meta['kind'] == 'sft' else data_utils.init_data_pretrain
get_batch = data_utils.get_batch_sft if meta['kind'] == 'sft' else data_utils.get_batch_pretrain
shape_keys = ('n_layer', 'n_head', 'n_embd', 'block_size')
checkpoint, iter_num, best_val_loss, tokens_seen, elapsed_before = None, 0, float('inf'), 0, 0.0
if init_from == 'scratch':
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      vocab_size=VOCAB_SIZE, dropout=dropout, bias=False)
    model = GPT(GPTConfig(**model_args))
else:
    folder = out_dir if init_from == 'resume' else init_from
    try:
        model, checkpoint = load_checkpoint(folder, device)
    except (FileNotFoundError, ValueError) as e:
        stop(e)
    model.train()
    model_args = checkpoint['model_args']
    if init_from == 'resume':
        given = given_settings(sys.argv[1:])
        for k in shape_keys:
            if k in given and globals()[k] != model_args[k]:
                stop(f"{folder}/ckpt.pt was trained with {k}={model_args[k]}, but the config gives {k}={globals()[k]}; "
                     f"resume with the checkpoint's shape, or start afresh in another --out_dir")
        if 'optimizer' not in checkpoint:
            stop(f"{folder}/ckpt.pt has no optimizer state to resume from; fine-tune from it with --init_from={folder}")
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        tokens_seen, elapsed_before = checkpoint.get('tokens_seen', 0), checkpoint.get('elapsed', 0.0)
    else:  # fine-tuning: the weights and shape only; the data, optimizer and schedule start afresh
        for k, v in checkpoint.get('tokenizer', {}).items():
            if k in meta and meta[k] != v:
                stop(f"{folder}/ckpt.pt was trained with {k}={v!r}, but {data_dir}/meta.json has {k}={meta[k]!r}")
        if model_args['block_size'] != meta['block_size']:
            stop(f"{folder}/ckpt.pt has block_size={model_args['block_size']}, but {data_dir}/meta.json has "
                 f"block_size={meta['block_size']}; prepare the data again with --block_size={model_args['block_size']}")
        if master:
            print(f"fine-tuning {folder}/ckpt.pt: its shape " + ', '.join(f'{k}={model_args[k]}' for k in shape_keys)
                  + " is used; the config's n_layer/n_head/n_embd/block_size are ignored")
    n_layer, n_head, n_embd, block_size = (model_args[k] for k in shape_keys)
model.to(device)
raw_model = model  # the plain module: its state_dict is what the checkpoint holds

# ----------------------------------------------------------------------------- data
try:
    data = init_data(data_dir, block_size)
except (FileNotFoundError, ValueError) as e:
    stop(e)
n_train = len(data['train'])
if epochs > 0:
    max_iters = math.ceil(epochs * n_train / (batch_size * gradient_accumulation_steps))
lr_decay_iters = min(lr_decay_iters, max_iters)
tokens_per_iter = batch_size * (block_size - 1) * gradient_accumulation_steps  # trained positions, all processes
if sample_mode not in ('traverse', 'random'):
    stop(f"--sample_mode={sample_mode!r}: expected 'traverse' or 'random'")
order = data_utils.RowOrder(n_train, seed, rank, world_size) if sample_mode == 'traverse' else None
batch_rng = torch.Generator().manual_seed(seed + rank)  # random rows; its own generator so resume can restore it
config = {k: globals()[k] for k in config_keys}  # the settings as this run resolved them
if master:
    print(f"{data_dir}: {meta['kind']} rows of {block_size} tokens, {n_train} train / {len(data['val'])} val; "
          f"{max_iters} iterations of {tokens_per_iter} tokens ({max_iters * batch_size * gradient_accumulation_steps / n_train:.2f} epochs)")
    print(f"model: {raw_model.num_params() / 1e6:.2f}M parameters (without position embeddings); "
          f"device {device}, {dtype}, {world_size} process(es), {accum_steps} micro-step(s) each")

# ----------------------------------------------------------------------------- optimizer and wrappers
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler('cuda', enabled=dtype == 'float16') if device_type == 'cuda' else None
if init_from == 'resume':
    optimizer.load_state_dict(checkpoint['optimizer'])
    if scaler is not None and checkpoint.get('scaler'):
        scaler.load_state_dict(checkpoint['scaler'])
    states, orders = checkpoint.get('rng'), checkpoint.get('row_order')
    if states and len(states) == world_size:
        torch.set_rng_state(states[rank]['torch'].cpu())
        if device_type == 'cuda' and states[rank]['cuda'] is not None:
            torch.cuda.set_rng_state(states[rank]['cuda'].cpu())
        batch_rng.set_state(states[rank]['batches'].cpu())
        if order is not None and orders and orders[rank]:
            order.load_state_dict(orders[rank])
    else:  # another number of processes: keep the epoch, approximate the position within it
        if master:
            print(f"note: the checkpoint holds the row order of {len(states or [])} process(es), this run has "
                  f"{world_size}; rows continue from about the same place in the epoch")
        batch_rng.manual_seed(seed + rank + iter_num)
        if order is not None and orders and orders[0]:
            order.load_state_dict(dict(orders[0], pos=orders[0]['pos'] * len(orders) // world_size))
checkpoint = None  # free the memory
if compile:
    if master:
        print("compiling the model... (about a minute)")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
eval_model = model.module if ddp else model  # evaluation runs on the master alone: no collectives

# ----------------------------------------------------------------------------- log
log_path = os.path.join(out_dir, 'log.jsonl')
if master:
    os.makedirs(out_dir, exist_ok=True)
    kept = []
    if init_from == 'resume' and os.path.exists(log_path):
        with open(log_path, encoding='utf-8') as f:  # drop what a killed run logged after its last checkpoint
            for line in f:
                try:
                    if json.loads(line)['iter'] <= iter_num:
                        kept.append(line if line.endswith('\n') else line + '\n')
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line cut short by the kill
    with open(log_path + '.tmp', 'w', encoding='utf-8') as f:
        f.writelines(kept)
    os.replace(log_path + '.tmp', log_path)
    for stale in glob.glob(os.path.join(out_dir, 'ckpt.pt.tmp*')):  # a save that a kill cut short
        os.remove(stale)
    print(f"{'resuming at iteration ' + str(iter_num) if init_from == 'resume' else 'starting'}; "
          f"writing {os.path.join(out_dir, 'ckpt.pt')} and {log_path}")


def log(split, loss, lr):
    with open(log_path, 'a', encoding='utf-8') as f:
        f.write(json.dumps({'iter': iter_num, 'split': split, 'loss': round(loss, 6), 'lr': lr,
                            'tokens': tokens_seen, 'elapsed': round(elapsed_before + time.time() - t_start, 3)}) + '\n')


@torch.no_grad()
def estimate_loss():
    """Mean masked loss over eval_iters batches per split; the same batches at every eval, so the curve compares."""
    out = {}
    eval_model.eval()
    for split in ('train', 'val'):
        rng = torch.Generator().manual_seed(seed)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y, mask = get_batch(data, split, batch_size, device, generator=rng)
            with ctx:
                _, loss = eval_model(x, y, mask)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    eval_model.train()
    return out


def sampler_state():
    """Every process's RNG and row-order state, gathered so that rank 0 can save them all."""
    mine = {'torch': torch.get_rng_state(), 'batches': batch_rng.get_state(),
            'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    mine = (mine, order.state_dict() if order is not None else None)
    if not ddp:
        return [mine]
    gathered = [None] * world_size
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


# ----------------------------------------------------------------------------- training loop
if iter_num >= max_iters and master:
    print(f"already at iteration {iter_num} of max_iters={max_iters}: nothing to do (raise --max_iters to train on)")
start_iter, t_start = iter_num, time.time()
t_log, iters_since_log, running_mfu = time.time(), 0, -1.0
while True:
    # evaluate every eval_interval and at the end; a resumed run already evaluated the iteration it starts at
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and not (init_from == 'resume' and iter_num == start_iter):
        states = sampler_state()  # all processes take part
        if master:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            log('val', losses['val'], get_lr(iter_num))
            improved = losses['val'] < best_val_loss
            best_val_loss = min(best_val_loss, losses['val'])
            if iter_num > start_iter and (improved or always_save_checkpoint or iter_num == max_iters):
                save_checkpoint(out_dir, {
                    'model_args': model_args, 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                    'model': {k.removeprefix('_orig_mod.'): v for k, v in raw_model.state_dict().items()},
                    'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
                    'config': config, 'tokenizer': data_utils.tokenizer_facts(), 'world_size': world_size,
                    'rng': [s for s, _ in states], 'row_order': [o for _, o in states],
                    'tokens_seen': tokens_seen, 'elapsed': elapsed_before + time.time() - t_start})
                print(f"saved {out_dir}/ckpt.pt at iteration {iter_num}")
    if iter_num >= max_iters:
        break

    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr
    loss_sum = 0.0
    for micro_step in range(accum_steps):
        x, y, mask = get_batch(data, 'train', batch_size, device, order=order, generator=batch_rng)
        if ddp:  # average gradients across processes only after the last micro-step
            model.require_backward_grad_sync = micro_step == accum_steps - 1
        with ctx:
            _, loss = model(x, y, mask)
            loss = loss / accum_steps
        (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += loss.detach()
    if grad_clip > 0:
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    iters_since_log += 1
    tokens_seen += tokens_per_iter

    if master and (iter_num % log_interval == 0 or iter_num == max_iters):
        lossf = float(loss_sum)  # waits for the device
        dt = (time.time() - t_log) / iters_since_log
        t_log, iters_since_log = time.time(), 0
        if iter_num - start_iter >= 5:  # the first iterations include warm-up work
            mfu = raw_model.estimate_mfu(tokens_per_iter // world_size, dt)
            running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
        eta = (max_iters - iter_num) * dt
        mfu_text = f"{running_mfu * 100:.2f}%" if running_mfu >= 0 else 'n/a'
        print(f"iter {iter_num}/{max_iters}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.0f}ms/iter, "
              f"mfu {mfu_text}, eta {eta // 60:.0f}m{eta % 60:02.0f}s")
        log('train', lossf, lr)

if ddp:
    torch.distributed.barrier()  # rank 0 may still be saving; tearing gloo down under it aborts the others
    destroy_process_group()

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
from checkpoint import load_checkpoint, save_checkpoint
from model import GPT, GPTConfig, pick_device
from tokenizer import same_tokenizer

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
sample_mode = 'traverse'  # 'traverse': every row once per epoch, shuffled; 'bucket': the same, batches of rows of
#   similar length (less PAD to compute: ~1.35x faster on a CPU); 'random': rows drawn with replacement
gradient_accumulation_steps = 8  # micro-steps per iteration, all processes together (rounded up to a multiple of them)
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


def check_settings():
    """
    Stops at start, naming the setting, on values no run can use: otherwise they end in a traceback minutes
    later, or worse, in a run that trains nothing and saves it (gradient_accumulation_steps=0).
    """
    for name in ('batch_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval',
                 'n_layer', 'n_head'):
        if globals()[name] < 1:
            stop(f"--{name}={globals()[name]}: must be at least 1")
    rules = [  # (setting, whether its value can work, what it must be); NaN fails every comparison
        ('epochs', 0 <= epochs < math.inf, 'at least 0 (0: max_iters sets the length)'),
        ('max_iters', max_iters >= 1 or epochs > 0, 'at least 1'),
        ('block_size', block_size >= 2, 'at least 2 (an input token and its target)'),
        ('n_embd', n_embd >= 1 and n_embd % n_head == 0, f'a positive multiple of n_head={n_head}'),
        ('dropout', 0 <= dropout < 1, 'at least 0 and below 1'),
        ('learning_rate', 0 < learning_rate < math.inf, 'above 0 and finite'),
        ('min_lr', 0 <= min_lr <= learning_rate, f'between 0 and learning_rate={learning_rate}'),
        # with --epochs the length comes from the data, and a warmup longer than a short run is left to it
        ('warmup_iters', 0 <= warmup_iters and (epochs > 0 or warmup_iters <= max_iters),
         f'between 0 and max_iters={max_iters} (the learning rate would never reach its peak)'),
        ('lr_decay_iters', lr_decay_iters >= warmup_iters, f'at least warmup_iters={warmup_iters}'),
        ('weight_decay', 0 <= weight_decay < math.inf, 'at least 0'),
        ('beta1', 0 <= beta1 < 1, 'at least 0 and below 1'),
        ('beta2', 0 <= beta2 < 1, 'at least 0 and below 1'),
        ('grad_clip', 0 <= grad_clip < math.inf, 'at least 0 (0 disables clipping)'),
        ('dtype', dtype in ('float32', 'bfloat16', 'float16'), "'float32', 'bfloat16' or 'float16'"),
        ('sample_mode', sample_mode in ('traverse', 'bucket', 'random'), "'traverse', 'bucket' or 'random'"),
    ]
    for name, ok, need in rules:
        if not ok:
            stop(f"--{name}={globals()[name]!r}: must be {need}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        stop(f"--out_dir={out_dir!r} is a file; the checkpoint and the log go into a folder")
    try:
        dev = torch.device(device)
    except RuntimeError:
        stop(f"--device={device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = int(os.environ['LOCAL_RANK']) if ddp else dev.index or 0  # under torchrun, one GPU per process
    if dev.type == 'cuda' and gpu >= gpus:
        stop(f"--device={device!r}: GPU {gpu} asked for, PyTorch {torch.__version__} finds {gpus} here"
             + ("; torchrun starts one process per GPU" if ddp else "; use --device=cpu or auto"))
    mps = getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()
    if (dev.type == 'mps' and not mps) or dev.type not in ('cpu', 'cuda', 'mps'):
        stop(f"--device={device!r}: " + ("no MPS (Apple GPU) here" if dev.type == 'mps' else "expected 'cpu', 'cuda' or 'mps'"))


# ----------------------------------------------------------------------------- processes and device
ddp = int(os.environ.get('RANK', -1)) != -1  # started by torchrun
device = pick_device(device)
check_settings()
if ddp:
    init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
    rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0  # only this process prints and writes files
# gradient_accumulation_steps counts the micro-steps of all processes together, as nanoGPT's does, so a config
# trains on the same batch (and suits the same learning rate) on any number of processes. A count the processes
# cannot share evenly (1 on 2) is rounded up, never down: a bigger batch, never an empty one.
if gradient_accumulation_steps % world_size:
    rounded = -(-gradient_accumulation_steps // world_size) * world_size
    if master:
        print(f"note: gradient_accumulation_steps={gradient_accumulation_steps} is not a multiple of the {world_size} "
              f"processes; using {rounded}, {rounded // world_size} micro-step(s) per process")
    gradient_accumulation_steps = rounded
accum_steps = gradient_accumulation_steps // world_size
device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
if device_type == 'cuda' and dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
    dtype = 'float16'  # older GPUs
if device_type != 'cuda':
    dtype = 'float32'  # autocast on a CPU is slower than float32 and gains nothing here
torch.manual_seed(seed + rank)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ctx = torch.autocast(device_type='cuda', dtype=getattr(torch, dtype)) if dtype != 'float32' else nullcontext()

# ----------------------------------------------------------------------------- model
data_dir = data_dir or os.path.join('data', dataset)
try:
    meta = data_utils.read_meta(data_dir)  # checked: kind, block_size and the tokenizer fields are there and typed
except (FileNotFoundError, ValueError) as e:
    stop(e)
try:
    tok = data_utils.data_tokenizer(meta, data_dir)  # the model is built for, and its checkpoint carries, this tokenizer
except (FileNotFoundError, ValueError) as e:
    stop(e)
shape_keys = ('n_layer', 'n_head', 'n_embd', 'block_size')
checkpoint, iter_num, best_val_loss, tokens_seen, elapsed_before = None, 0, float('inf'), 0, 0.0
if init_from == 'scratch':
    if block_size != meta['block_size']:  # before building a model of the wrong size, which may not even fit
        stop(f"{data_dir}/meta.json has block_size={meta['block_size']} but the config asks for block_size={block_size}; "
             f"set --block_size={meta['block_size']} or prepare the data again")
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      vocab_size=tok.vocab_size, dropout=dropout, bias=False)
    model = GPT(GPTConfig(**model_args))
else:
    folder = out_dir if init_from == 'resume' else init_from
    try:
        model, ckpt_tok, checkpoint = load_checkpoint(folder, device)
    except (FileNotFoundError, ValueError) as e:
        stop(e)
    model.train()
    model_args = checkpoint['model_args']
    try:  # fine-tuning on, or resuming with, data of another tokenizer would train on meaningless ids
        same_tokenizer(ckpt_tok.facts(), tok.facts(), f"{folder}/ckpt.pt", f"{data_dir}/meta.json")
    except ValueError as e:
        stop(e)
    if init_from == 'resume':
        given = given_settings(sys.argv[1:])
        for k in shape_keys:
            if k in given and globals()[k] != model_args[k]:
                stop(f"{folder}/ckpt.pt was trained with {k}={model_args[k]}, but the config gives {k}={globals()[k]}; "
                     f"resume with the checkpoint's shape, or start afresh in another --out_dir")
        if 'optimizer' not in checkpoint:
            stop(f"{folder}/ckpt.pt has no optimizer state to resume from; fine-tune from it with --init_from={folder}")
        if not isinstance(checkpoint.get('iter_num'), int) or not isinstance(checkpoint.get('best_val_loss'), float):
            stop(f"{folder}/ckpt.pt has no iter_num/best_val_loss to resume from (not written by train.py?)")
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        tokens_seen, elapsed_before = checkpoint.get('tokens_seen', 0), checkpoint.get('elapsed', 0.0)
    else:  # fine-tuning: the weights and shape only; the data, optimizer and schedule start afresh
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
    data = data_utils.init_data(data_dir, block_size)
except (FileNotFoundError, ValueError) as e:
    stop(e)
n_train = len(data['train'])
if epochs > 0:
    max_iters = math.ceil(epochs * n_train / (batch_size * gradient_accumulation_steps))
lr_decay_iters = min(lr_decay_iters, max_iters)
tokens_per_iter = batch_size * (block_size - 1) * gradient_accumulation_steps  # trained positions, all processes
lengths = data_utils.row_lengths(data['train'], tok.pad) if sample_mode == 'bucket' else None
order = data_utils.RowOrder(n_train, seed, rank, world_size, lengths, batch_size) if sample_mode != 'random' else None
batch_rng = torch.Generator().manual_seed(seed + rank)  # random rows; its own generator so resume can restore it
config = {k: globals()[k] for k in config_keys}  # the settings as this run resolved them
if master:
    print(f"{data_dir}: {meta['kind']} rows of {block_size} tokens, {n_train} train / {len(data['val'])} val; "
          f"{max_iters} iterations of {tokens_per_iter} tokens ({max_iters * batch_size * gradient_accumulation_steps / n_train:.2f} epochs)")
    print(f"{tok.describe()}; model: {raw_model.num_params() / 1e6:.2f}M parameters (without position embeddings); "
          f"device {device}, {dtype}, {world_size} process(es), {accum_steps} micro-step(s) each")

# ----------------------------------------------------------------------------- optimizer and wrappers
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler('cuda', enabled=dtype == 'float16') if device_type == 'cuda' else None
if init_from == 'resume':
    try:  # a checkpoint train.py did not write, or one edited by hand: its own fault, said as such
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
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        stop(f"{out_dir}/ckpt.pt: its optimizer or sampler state cannot be restored ({type(e).__name__}: {e})")
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
            x, y, mask = data_utils.get_batch(data, split, batch_size, device, generator=rng)
            with ctx:
                _, loss = eval_model(x, y, mask)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    eval_model.train()
    return out


def diverged(what):
    """
    Stops every process on a non-finite loss, before the optimizer step and before any save, so that out_dir/ckpt.pt
    keeps the last good model. One NaN micro-batch is enough: its gradient is already summed into the iteration's
    (and, under DDP, averaged into every process's), Adam would carry it into every later step, and skipping it
    would hide a run that diverges (too high a learning rate) or reads bad rows.
    """
    if master:
        kept = (f"{out_dir}/ckpt.pt still holds iteration {last_saved}; resume from it with --init_from=resume and "
                if last_saved is not None else "this run saved no checkpoint; start again with ")
        print(f"error: {what}: the training diverged and stopped without saving; {kept}"
              f"a lower --learning_rate (now {learning_rate})", file=sys.stderr)
    if ddp:
        torch.distributed.barrier()  # every process got here (the losses were shared): leave together, as at the end
        destroy_process_group()
    sys.exit(1)


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
last_saved = iter_num if init_from == 'resume' else None  # the iteration out_dir/ckpt.pt holds from this run
t_log, iters_since_log, running_mfu = time.time(), 0, -1.0
while True:
    # evaluate every eval_interval and at the end; a resumed run already evaluated the iteration it starts at
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and not (init_from == 'resume' and iter_num == start_iter):
        states = sampler_state()  # all processes take part
        losses = estimate_loss() if master else {'train': 0.0, 'val': 0.0}
        if ddp:  # every process learns the master's losses, so that a diverged run stops everywhere at once
            shared = torch.tensor([losses['train'], losses['val']], dtype=torch.float64, device=device)
            torch.distributed.broadcast(shared, src=0)
            losses = dict(zip(('train', 'val'), shared.tolist()))
        if not all(math.isfinite(v) for v in losses.values()):
            diverged(f"iteration {iter_num}: train loss {losses['train']}, val loss {losses['val']}")
        if master:
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            log('val', losses['val'], get_lr(iter_num))
            improved = losses['val'] < best_val_loss
            best_val_loss = min(best_val_loss, losses['val'])
            if iter_num > start_iter and (improved or always_save_checkpoint or iter_num == max_iters):
                try:
                    save_checkpoint(out_dir, {
                        'model_args': model_args, 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                        'model': {k.removeprefix('_orig_mod.'): v for k, v in raw_model.state_dict().items()},
                        'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
                        'config': config, 'tokenizer': tok.for_checkpoint(), 'world_size': world_size,
                        'rng': [s for s, _ in states], 'row_order': [o for _, o in states],
                        'tokens_seen': tokens_seen, 'elapsed': elapsed_before + time.time() - t_start})
                except OSError as e:  # a full disk, say: the previous ckpt.pt is still whole
                    stop(f"could not write {out_dir}/ckpt.pt ({e}); the previous checkpoint, if any, is unchanged")
                last_saved = iter_num
                print(f"saved {out_dir}/ckpt.pt at iteration {iter_num}")
    if iter_num >= max_iters:
        break

    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr
    micro_losses = []
    for micro_step in range(accum_steps):
        x, y, mask = data_utils.get_batch(data, 'train', batch_size, device, order=order, generator=batch_rng)
        if ddp:  # average gradients across processes only after the last micro-step
            model.require_backward_grad_sync = micro_step == accum_steps - 1
        with ctx:
            _, loss = model(x, y, mask)
            loss = loss / accum_steps
        (scaler.scale(loss) if scaler else loss).backward()
        micro_losses.append(loss.detach())
    micro_losses = torch.stack(micro_losses)
    if ddp:  # the mean over processes: each then sees a NaN of any other, and the log the loss of the whole batch
        torch.distributed.all_reduce(micro_losses)
        micro_losses /= world_size
    bad = (~torch.isfinite(micro_losses)).nonzero()  # waits for the device once per iteration: the price of the check
    if len(bad):
        k = int(bad[0])
        diverged(f"iteration {iter_num + 1}: the loss of micro-step {k + 1} of {accum_steps} is "
                 f"{float(micro_losses[k] * accum_steps)}")
    loss_sum = micro_losses.sum()
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

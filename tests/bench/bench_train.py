"""
Training speed: tokens per second and MFU (model FLOPs utilisation) of train.py's step, for a config, on whatever
device this machine has.

    python tests/bench/bench_train.py                             # a GPU: the 124M config; otherwise the CPU config
    python tests/bench/bench_train.py config/train_config.py      # the 124M config wherever (slow on a CPU)
    python tests/bench/bench_train.py config/train_config_cpu.py --compile=True --dtype=bfloat16   # another trial
    python tests/bench/bench_train.py --device=cuda --batch_size=32 --iters=50

The step is train.py's: the config's model shape, batch, gradient accumulation, autocast dtype, torch.compile,
AdamW (fused on CUDA) and gradient clipping, on random token ids in full rows (no PAD, so nothing is trimmed
off a batch: the GPU case; the CPU config's rows are about half PAD, which train.py cuts off). Without a config
file it takes config/train_config.py on CUDA with GPT-2's 50,304-row output layer (the 124M model), and
config/train_config_cpu.py elsewhere with the 8,192-id tokenizer's 8,256 rows.
tokens/s counts every trained position of every row, as train.py's tokens_per_iter does. MFU is 6N + 12LHQT
FLOPs per token (model.estimate_mfu, the PaLM paper's count) against a peak: by default the speed of a large
matmul in the training dtype measured here, or --peak_flops (e.g. 989e12 for an H100's bfloat16 datasheet).
"""
import os
import statistics
import sys
import time
from contextlib import nullcontext

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from model import GPT, GPTConfig, pick_device  # noqa: E402

# the settings a train config sets (defaults: train.py's), then the benchmark's own
device = 'auto'  # 'auto' (cuda, mps, cpu), 'cpu', 'cuda', ...
n_layer = 12
n_head = 12
n_embd = 768
block_size = 512
dropout = 0.0
batch_size = 16
gradient_accumulation_steps = 8  # one process here: all micro-steps run in it
learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dtype = 'bfloat16'  # 'float32', 'bfloat16' (CUDA, CPU), 'float16' (CUDA)
compile = True
vocab_size = 8256  # rows of the output layer: 8,256 for the 8,192-id trained tokenizer, 50,304 for GPT-2's
warmup = 3  # iterations run first and not timed (compiling, allocator warm-up)
iters = 10  # iterations timed, one by one; the median is reported
threads = 0  # torch threads on a CPU; 0 = torch's default
peak_flops = 0.0  # the peak MFU is measured against; 0 = a large matmul's speed, measured here
seed = 1337

# no config file named: the device's own (the 124M config on a GPU, the CPU config elsewhere)
_device = pick_device(next((a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--device=')), device))
if not any(not a.startswith('-') for a in sys.argv[1:]):
    sys.argv[1:1] = ([os.path.join(ROOT, 'config', 'train_config.py'), '--vocab_size=50304']
                     if _device.startswith('cuda') else [os.path.join(ROOT, 'config', 'train_config_cpu.py')])
exec(open(os.path.join(ROOT, 'configurator.py')).read())


def sync(device_type):
    if device_type == 'cuda':
        torch.cuda.synchronize()


def matmul_peak(device, dtype, device_type):
    """FLOP/s of a large square matmul in dtype: what this device reaches on the step's main operation."""
    n = 8192 if device_type == 'cuda' else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device_type)
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        a @ b
        runs += 1
        sync(device_type)  # the loop's clock must see the device finish each product
    return 2 * n ** 3 * runs / (time.perf_counter() - t0)


def main():
    dev = pick_device(device)
    device_type = 'cuda' if dev.startswith('cuda') else dev.split(':')[0]
    run_dtype = dtype
    if device_type == 'cuda' and run_dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        run_dtype = 'float16'
    if device_type == 'mps' or (device_type == 'cpu' and run_dtype == 'float16'):
        run_dtype = 'float32'  # as train.py does
    if threads and device_type == 'cpu':
        torch.set_num_threads(threads)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    ctx = (torch.autocast(device_type=device_type, dtype=getattr(torch, run_dtype)) if run_dtype != 'float32'
           else nullcontext())
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                          vocab_size=vocab_size, dropout=dropout, bias=False)).to(dev)
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    scaler = torch.amp.GradScaler('cuda', enabled=run_dtype == 'float16') if device_type == 'cuda' else None
    step_model = torch.compile(model) if compile else model
    rows = torch.randint(vocab_size - 64, (gradient_accumulation_steps, batch_size, block_size), device=dev)
    mask = torch.ones(batch_size, block_size - 1, device=dev)
    tokens_per_iter = batch_size * (block_size - 1) * gradient_accumulation_steps

    def step():
        for micro in range(gradient_accumulation_steps):
            x, y = rows[micro, :, :-1], rows[micro, :, 1:]
            with ctx:
                _, loss = step_model(x, y, mask)
            loss = loss / gradient_accumulation_steps
            (scaler.scale(loss) if scaler else loss).backward()
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
        return loss.detach()

    print(f"device {dev} ({torch.cuda.get_device_name(dev) if device_type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}; {n_layer} x {n_embd} ({n_head} heads), block {block_size}, "
          f"{vocab_size} output rows: {model.num_params() / 1e6:.2f}M parameters (without position embeddings)")
    print(f"batch {batch_size} x {gradient_accumulation_steps} micro-steps = {tokens_per_iter:,} tokens per iteration; "
          f"{run_dtype}, compile={compile}")
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device_type)
    print(f"{warmup} warm-up iteration(s) (compiling included): {time.perf_counter() - t0:.1f}s")
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        loss = step()
        sync(device_type)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    peak = peak_flops or matmul_peak(dev, getattr(torch, run_dtype), device_type)
    mfu = model.estimate_mfu(tokens_per_iter, dt, peak_flops=peak)
    print(f"{dt * 1000:.1f} ms per iteration (median of {iters}; {min(times) * 1000:.1f}-{max(times) * 1000:.1f}), "
          f"loss {float(loss) * gradient_accumulation_steps:.3f}")
    print(f"{tokens_per_iter / dt:,.0f} tokens/s; MFU {mfu * 100:.1f}% of {peak / 1e12:.3g} TFLOP/s "
          f"({'given' if peak_flops else f'a {run_dtype} matmul measured here'})")


if __name__ == '__main__':
    main()

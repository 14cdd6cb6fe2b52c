# The GPU run: GPT-2 small's shape (124M) on one GPU or several (DDP). Token ids belong to tokenizer.py, not to a config.
# python train.py config/train_config.py
# torchrun --standalone --nproc_per_node=8 train.py config/train_config.py

# --- the GPU run ---
out_dir = 'out/pretrain'
dataset = 'sample'  # data/<dataset>/{train,val}.bin from data/prepare.py
block_size = 512  # tokens per row, as prepared
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
batch_size = 16  # rows per micro-step
gradient_accumulation_steps = 8  # all processes together: 1 per GPU on 8 GPUs (rounded up to a multiple of them)
max_iters = 20000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 1000
lr_decay_iters = 20000
eval_interval = 500
eval_iters = 100
log_interval = 10
dtype = 'bfloat16'
compile = True

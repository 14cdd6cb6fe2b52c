# A tiny GPT that visibly learns Chinese on a laptop CPU in a few minutes.
# python train.py config/train_config_cpu.py
out_dir = 'out/pretrain'
dataset = 'sample'
device = 'cpu'
block_size = 128  # rows are prepared at this size: data/prepare.py --block_size=128
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
batch_size = 16  # the 50304-way output layer dominates the cost on a CPU
gradient_accumulation_steps = 1
max_iters = 500  # ~0.8 s per iteration on 2 free cores: about 7 minutes, about one epoch
learning_rate = 2e-3  # a small model tolerates a high rate
min_lr = 2e-4
warmup_iters = 30
lr_decay_iters = 500
eval_interval = 250
eval_iters = 10
log_interval = 10
dtype = 'float32'
compile = False  # compiling costs more than it saves on a short CPU run

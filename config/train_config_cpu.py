# A tiny GPT that learns to write in the corpus's style on a laptop CPU in ~8 minutes (2 cores).
# python data/train_tokenizer.py --input_dir=data/people_daily --vocab_size=8192
# python data/prepare.py --input_dir=data/people_daily --block_size=128
# python train.py config/train_config_cpu.py
# Chosen by measurement (README, "The CPU recipe"): with the same wall-clock budget, 2 layers of 128 reached the
# lowest validation bits per character (5.71) of 14 candidates: deeper, wider, 256-token rows, 4,096 or 16,384
# token vocabularies and other rates and batches all did worse in 8 minutes.
out_dir = 'out/pretrain'
dataset = 'sample'
device = 'cpu'
block_size = 128  # rows are prepared at this size; 256 kept 90% of the text instead of 75% but cost 1.6x a step
n_layer = 2  # on a CPU the output layer (8,192 rows) is a large share of a step: few, cheap layers train furthest
n_head = 4
n_embd = 128
dropout = 0.0
batch_size = 16
gradient_accumulation_steps = 1  # all processes together; under torchrun, rounded up to one per process
sample_mode = 'bucket'  # batches of rows of similar length: less PAD to compute, ~1.35x more steps a minute
max_iters = 4140  # ~0.11 s per iteration on 2 free cores: 7.5 minutes, about 5 passes over the rows
learning_rate = 4e-3  # a small model tolerates a high rate; 6e-3 was worse, 2e-3 slower
min_lr = 4e-4
warmup_iters = 30
lr_decay_iters = 4140
eval_interval = 100  # 42 validation points, ~4% of the time
eval_iters = 5
log_interval = 20
dtype = 'float32'
compile = False  # compiling costs more than it saves on a short CPU run

# The seed's GPU run: GPT-2 small (124M) on one GPU, and the project's shared constants.
# python train.py config/train_config.py
# torchrun --standalone --nproc_per_node=8 train.py config/train_config.py

# --- shared constants (DESIGN.md §1); every script imports these from here ---
ENCODING_NAME = 'gpt2'  # GPT-2 byte-level BPE, built offline from data/gpt2.tiktoken
EOT_TOKEN = 50256  # <|endoftext|>: ends an article or an answer
A_TOKEN = 2235  # '##': separates a question from its answer
PAD_TOKEN = 50257  # first id past the tokenizer, so encode() can never produce it
N_VOCAB = 50257  # ids the tokenizer knows; the sampler never emits more
VOCAB_SIZE = 50304  # model vocab padded up to a multiple of 64 for speed

# --- the GPU run ---
out_dir = 'out/pretrain'
dataset = 'sample'  # data/<dataset>/{train,val}.bin from data/prepare.py
block_size = 512  # tokens per row, as prepared
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
batch_size = 16  # rows per micro-step
gradient_accumulation_steps = 8  # per process; divided by the world size under DDP
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

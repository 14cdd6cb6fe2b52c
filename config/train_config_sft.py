# Fine-tunes a pretrained checkpoint on question/answer rows (loss on the answers and their EOT only).
# python sft/sft_generate.py --backend=rules --input_dir=data/people_daily   # or an LLM: see its docstring
# python data/prepare_sft.py --block_size=128                                # the checkpoint's block_size
# python train.py config/train_config_sft.py                                 # out/pretrain -> out/sft
# The model's shape (n_layer, n_head, n_embd, block_size) comes from the checkpoint; train.py stops with a
# message if the data's block_size or tokenizer facts disagree with it.
init_from = 'out/pretrain'  # the pretrained checkpoint folder
out_dir = 'out/sft'
dataset = 'sft'  # data/sft/ from data/prepare_sft.py
epochs = 3.0  # passes over the train rows (sets max_iters); a few, the answers are to be remembered
batch_size = 32
gradient_accumulation_steps = 1  # all processes together; under torchrun, rounded up to one per process
learning_rate = 3e-4  # well below pretraining's (CPU run: 2e-3); for the 124M GPU model try --learning_rate=3e-5
min_lr = 3e-5
warmup_iters = 20
lr_decay_iters = 100000  # capped at max_iters: cosine over the whole run
weight_decay = 0.0  # few rows, few steps: nothing to regularise against
eval_interval = 200
eval_iters = 20
log_interval = 10
dtype = 'bfloat16'  # autocast, on a CPU too (tests/bench/bench_train.py --dtype=... measures which is faster there)
compile = False  # a short run: compiling costs more than it saves

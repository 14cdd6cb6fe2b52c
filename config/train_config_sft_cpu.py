# Fine-tunes the tiny CPU model (config/train_config_cpu.py) until it answers the questions it is taught: ~3 min.
# python sft/sft_generate.py --backend=rules --input_dir=data/people_daily            # 688 short factual pairs
# python data/prepare_sft.py --tokenizer=out/pretrain --block_size=128
# python train.py config/train_config_sft_cpu.py                                     # out/pretrain -> out/sft
# A 2-layer model cannot learn facts it was not shown; it can memorise a few hundred short answers, and stop after
# them. So: many passes over a small set (prepare_sft.py --max_pairs caps an LLM's thousands), at a high rate.
# The model's shape and block_size come from the checkpoint.
init_from = 'out/pretrain'  # the pretrained checkpoint folder
out_dir = 'out/sft'
dataset = 'sft'  # data/sft/ from data/prepare_sft.py
device = 'cpu'
epochs = 0.0  # the length is set by max_iters: ~70 passes over the 663 train rows of the sample corpus
max_iters = 1500  # an SFT batch is cut to its longest row (~30 tokens), so a step costs ~0.1 s
batch_size = 32
gradient_accumulation_steps = 1  # all processes together; under torchrun, rounded up to one per process
learning_rate = 1e-3  # measured: median Rouge-L 1.0 on 50 trained questions with 1e-3 and with 3e-3
min_lr = 1e-4
warmup_iters = 20
lr_decay_iters = 1500
weight_decay = 0.0  # memorising is the point: nothing to regularise against
eval_interval = 100  # 16 validation points: a curve, not three dots
eval_iters = 5
log_interval = 10
dtype = 'float32'
compile = False  # a short run: compiling costs more than it saves

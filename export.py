"""
Exports a trained checkpoint to the formats other engines serve: a Hugging Face transformers folder
(GPT2LMHeadModel) or one GGUF file for llama.cpp (llama-cpp-python, LM Studio, Ollama).

    python export.py --out_dir=out/sft --format=hf --output=export/minigpt-sft
    python export.py --out_dir=out/sft --format=gguf --output=export/minigpt-sft.gguf
    python export.py --out_dir=out/sft --format=gguf --outtype=q8_0 --output=export/minigpt-sft-q8_0.gguf

hf writes config.json, model.safetensors, tokenizer.json (+ tokenizer_config.json, chat_template.jinja),
generation_config.json and a README.md model card; it needs `transformers` for its tiktoken converter.
gguf writes the .gguf and an Ollama Modelfile beside it (<name>.Modelfile); it needs only `gguf`. Then:

    python -m llama_cpp.server --model export/minigpt-sft.gguf --n_ctx 128 --host 127.0.0.1 --port 8080
    ollama create minigpt-sft -f export/minigpt-sft.Modelfile && ollama run minigpt-sft 中国的首都是哪里？

Our GPT is GPT-2's architecture, so nothing is invented: the tensors map one to one onto GPT2LMHeadModel and
llama.cpp's `gpt2`. Where they differ:
- Biases: we train without them; GPT-2 in both runtimes always has them, so they are written as zeros.
- GELU: ours is exact (erf). HF's config says `gelu` (exact), not GPT-2's `gelu_new` (tanh), so its logits equal
  ours. llama.cpp's gpt2 graph has only the tanh form and no key to change it: its logits differ slightly, and
  tests/bench/bench_export.py measures whether greedy tokens still agree.
- Vocabulary rows: our embedding has n_vocab + 1 rows rounded up to 64 (PAD and padding, never emitted by our
  sampler). Only the n_vocab rows the tokenizer can name are exported, so the runtimes' vocab sizes equal their
  tokenizers' (llama.cpp refuses a mismatch) and, like our sampler, they can never emit PAD or a padding id.
- Tokenizer: tiktoken ranks become a byte-level BPE (GPT-2's byte-to-character table, and one merge per split
  of a token into two tokens, by rank); <|endoftext|> (and a trained tokenizer's <|answer|>) are special
  (llama.cpp: CONTROL). GPT-2's answer separator '##' is an ordinary token, so a question is text + '##'.
  Our engine reads a special's text typed by a user as text; so does the HF tokenizer, except where its chat
  template must write a special itself (a trained tokenizer's <|answer|>): see model_card.
What cannot be mapped (an architecture field or tensor this file does not know, untied output weights, a
split pattern llama.cpp has no pre-tokenizer for) is refused with a message. An existing --output (or the
Modelfile beside a GGUF) is replaced only if export.py wrote it (MARK_FILE, GGUF_MARK, MODELFILE_MARK).
"""
import dataclasses
import json
import math
import os
import shutil
import sys

import torch

from checkpoint import checkpoint_path, load_checkpoint, read_checkpoint
from engine import Sampling
from model import GPTConfig
from tokenizer import ANSWER_TEXT, EOT_TEXT, GPT2_PATTERN, PATTERNS

# -----------------------------------------------------------------------------
out_dir = 'out/sft'  # checkpoint folder (holds ckpt.pt)
format = 'hf'  # hf (a transformers folder) or gguf (a llama.cpp file, plus an Ollama Modelfile beside it)
output = ''  # the folder (hf) or .gguf file (gguf); '' = export/<out_dir's name>, + .gguf for gguf
outtype = 'f32'  # weight type: f32 (exact), f16 (half the size), q8_0 (gguf only; about a quarter)
# -----------------------------------------------------------------------------

MAPPED_ARGS = {'block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd', 'dropout', 'bias'}  # GPTConfig fields
# our layer module -> llama.cpp's tensor name; HF's names are ours ('transformer.h.N.<module>')
LAYER_TENSORS = [('ln_1', 'attn_norm'), ('attn.c_attn', 'attn_qkv'), ('attn.c_proj', 'attn_output'),
                 ('ln_2', 'ffn_norm'), ('mlp.c_fc', 'ffn_up'), ('mlp.c_proj', 'ffn_down')]
LLAMA_PRE_TOKENIZERS = {GPT2_PATTERN: 'gpt-2'}  # split pattern -> llama.cpp's pre-tokenizer of the same regex
MARK_FILE = 'minigpt_export.json'  # in an HF folder: export.py wrote this folder, so a rerun may replace it
HF_FILES = {'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
            'chat_template.jinja', 'README.md', MARK_FILE}
GGUF_MARK = 'minigpt_zh.exported_by'  # in a GGUF: the same, as a metadata key (value 'export.py')
MODELFILE_MARK = '# Ollama Modelfile written by export.py'  # a Modelfile's first line: the same
OUTTYPES = {'hf': ('f32', 'f16'), 'gguf': ('f32', 'f16', 'q8_0')}


def load(out_dir):
    """(model, tokenizer, checkpoint), refusing a model whose architecture fields this file does not map."""
    path = checkpoint_path(out_dir)
    if os.path.isfile(path):  # read model_args first (mmap: cheap), so an unknown field gets a clear message
        peek = read_checkpoint(path, mmap=True)
        args = peek['model_args']
        fields = set(args) | {f.name for f in dataclasses.fields(GPTConfig)}  # a field model.py grew counts too
        unknown = sorted(fields - MAPPED_ARGS)
        if unknown:
            raise ValueError(f"{path}: architecture field(s) {', '.join(unknown)} have no GPT-2 equivalent that "
                             f"export.py knows; it maps only {', '.join(sorted(MAPPED_ARGS))}")
        facts = peek.get('tokenizer')
        if isinstance(facts, dict) and facts.get('kind') == 'trained' and not facts.get('ranks_sha256'):
            raise ValueError(f"{path}: its trained tokenizer has no 'ranks_sha256' (the checksum of its ranks, which "
                             f"train.py always writes), so the ranks cannot be checked: the file was edited or "
                             f"comes from elsewhere; retrain, or restore the original")
    return load_checkpoint(out_dir, 'cpu')


def gpt2_tensors(model, n_vocab):
    """
    [(HF name, llama.cpp name, tensor)] for every GPT-2 tensor, float32, matrices as nn.Linear keeps them
    (out, in), missing biases as zeros, token rows cut to n_vocab. Any tensor left unmapped is refused.
    """
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if not torch.equal(sd['lm_head.weight'], sd['transformer.wte.weight']):
        raise ValueError("lm_head is not tied to the token embedding: export.py maps tied GPT-2 weights only")
    del sd['lm_head.weight']

    def take(name, bias_of=None):
        if name in sd:
            return sd.pop(name)
        if bias_of is not None:  # a model trained with bias=False: GPT-2 adds zero
            return torch.zeros(bias_of.shape[0])
        raise ValueError(f"the checkpoint has no tensor {name!r}, which GPT-2 needs")

    out = [('transformer.wte.weight', 'token_embd.weight', take('transformer.wte.weight')[:n_vocab].contiguous()),
           ('transformer.wpe.weight', 'position_embd.weight', take('transformer.wpe.weight'))]
    for i in range(model.config.n_layer):
        for ours, theirs in LAYER_TENSORS:
            w = take(f'transformer.h.{i}.{ours}.weight')
            out.append((f'transformer.h.{i}.{ours}.weight', f'blk.{i}.{theirs}.weight', w))
            out.append((f'transformer.h.{i}.{ours}.bias', f'blk.{i}.{theirs}.bias',
                        take(f'transformer.h.{i}.{ours}.bias', bias_of=w)))
    w = take('transformer.ln_f.weight')
    out += [('transformer.ln_f.weight', 'output_norm.weight', w),
            ('transformer.ln_f.bias', 'output_norm.bias', take('transformer.ln_f.bias', bias_of=w))]
    if sd:
        raise ValueError(f"tensor(s) {', '.join(sorted(sd))} have no place in GPT-2: export.py cannot map them")
    return out


def byte_chars():
    """GPT-2's byte -> character table: printable bytes stand for themselves, the other 68 for chr(256 + n), so a
    byte-level token is a printable string (how HF tokenizers and llama.cpp store one)."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    table, extra = {}, 0
    for b in range(256):
        table[b] = chr(b) if b in printable else chr(256 + extra)
        extra += b not in printable
    return table


def bpe_vocab(tok):
    """
    (tokens, special flags, merges) of the byte-level BPE that tiktoken's ranks define: token strings by id, and
    'a b' for every split of a token into two tokens, ordered by the token's rank (then the parts' ranks).
    Merging the lowest-ranked pair, as llama.cpp does, then makes the same tokens as tiktoken, which merges the
    pair whose result has the lowest rank. transformers' converter derives the same list (the tests compare).
    """
    chars = byte_chars()

    def text(b):
        return ''.join(chars[x] for x in b)
    by_id = {rank: token for token, rank in tok.ranks.items()}
    specials = {i: name for name, i in tok.special_tokens.items()}
    missing = [i for i in range(tok.n_vocab) if i not in by_id and i not in specials]
    if missing:
        raise ValueError(f"{tok.describe()}: ids {missing[:5]} are neither ranks nor specials, no BPE token to write")
    tokens = [text(by_id[i]) if i in by_id else specials[i] for i in range(tok.n_vocab)]
    found = []
    for token, rank in tok.ranks.items():
        for k in range(1, len(token)):
            left, right = token[:k], token[k:]
            if left in tok.ranks and right in tok.ranks:
                found.append((rank, tok.ranks[left], tok.ranks[right], f'{text(left)} {text(right)}'))
    merges = [m[-1] for m in sorted(found)]
    return tokens, [i in specials for i in range(tok.n_vocab)], merges


def question_separator(tok):
    """What a chat template appends to a question: the answer separator's text (GPT-2's is the ordinary '##')."""
    return ANSWER_TEXT if ANSWER_TEXT in tok.special_tokens else tok.token_bytes(tok.a_token).decode('utf-8')


def chat_template(tok):
    """Jinja chat template (HF, llama.cpp): the last user message + the answer separator, as server.py builds it."""
    return ("{%- set ns = namespace(question='') -%}{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
            "{%- set ns.question = m['content'] -%}{%- endif -%}{%- endfor -%}{{ ns.question | trim }}"
            + question_separator(tok))


def figures(model, tok, checkpoint):
    """The training figures a model card or a GGUF description reports."""
    loss = checkpoint.get('best_val_loss')
    return {'parameters': sum(p.numel() for p in model.parameters()), 'iter_num': checkpoint.get('iter_num'),
            'best_val_loss': round(float(loss), 4) if isinstance(loss, (int, float)) else None,
            'tokenizer': tok.describe()}


def model_card(path, model, tok, checkpoint, source):
    c, f = model.config, figures(model, tok, checkpoint)
    ppl = f" (perplexity {math.exp(f['best_val_loss']):.2f})" if f['best_val_loss'] is not None else ''
    settings = {k: v for k, v in (checkpoint.get('config') or {}).items() if isinstance(v, (int, float, str, bool))}
    sep = question_separator(tok)
    template_special = sep in tok.special_tokens
    typed = ("Special tokens' text typed in a question (`<|endoftext|>`, `<|answer|>`) is text to our engine. The "
             "chat template writes `<|answer|>` itself, so this tokenizer matches specials in text: "
             "`sanitize_control_tokens=True` keeps a user's typed ones text in a chat (their ids may split "
             "differently at their edges), and `tok.encode(text, split_special_tokens=True)` encodes plain text "
             "as our engine does." if template_special else
             "Special tokens' text typed by a user (`<|endoftext|>`) is text, as in our engine.")
    lines = ['---', 'language: zh', 'library_name: transformers', 'pipeline_tag: text-generation',
             'tags: [minigpt-zh, gpt2]', '---', '', f'# {os.path.basename(path)}', '',
             f'A MiniGPT-zh model exported by `export.py` from `{source}`: GPT-2\'s architecture (`GPT2LMHeadModel`), '
             f'{c.n_layer} layers x {c.n_embd} wide, {c.n_head} heads, {c.block_size} positions, '
             f"{f['parameters']:,} parameters.", '', '## Training', '', '| | |', '|---|---|',
             f"| iterations | {f['iter_num']} |", f"| best validation loss | {f['best_val_loss']}{ppl} |",
             f"| tokenizer | {f['tokenizer']}, end of text {tok.eot}, answer separator {tok.a_token} (`{sep}`) |",
             '', '<details><summary>training settings</summary>', '', '| setting | value |', '|---|---|',
             *[f'| {k} | `{v}` |' for k, v in settings.items()], '', '</details>', '', '## Use', '', '```python',
             'from transformers import AutoModelForCausalLM, AutoTokenizer',
             f"tok = AutoTokenizer.from_pretrained('{path}')",
             f"model = AutoModelForCausalLM.from_pretrained('{path}')",
             "question = [{'role': 'user', 'content': '中国的首都是哪里？'}]",
             "inputs = tok.apply_chat_template(question, return_tensors='pt', return_dict=True"
             + (', sanitize_control_tokens=True)' if template_special else ')'),
             'out = model.generate(**inputs, max_new_tokens=60, do_sample=False)',
             "print(tok.decode(out[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))", '```', '',
             f'A question is its text followed by `{sep}` (the chat template adds it); generation stops at '
             f'`{EOT_TEXT}`. Keep prompt + new tokens within {c.block_size} positions. {typed}', '',
             'Differences from the PyTorch checkpoint: none in the logits in float32 (zero biases, exact `gelu`); '
             f'the embedding keeps only the {tok.n_vocab} ids of the tokenizer (the checkpoint pads to '
             f'{c.vocab_size}).', '']
    return '\n'.join(lines)


def modelfile_path(output):
    return os.path.splitext(output)[0] + '.Modelfile'


def gguf_exported(path):
    """Whether the file at path is a GGUF that export.py wrote (GGUF_MARK in its metadata)."""
    import gguf
    with open(path, 'rb') as f:
        if f.read(4) != b'GGUF':
            return False
    try:
        field = gguf.GGUFReader(path).fields.get(GGUF_MARK)
        return field is not None and field.contents() == 'export.py'
    except Exception:  # a truncated or foreign file the reader cannot parse: not ours either way
        return False


def check_output(output, format):
    """Refuses an --output (and, for a GGUF, the Modelfile beside it) that exists and export.py did not write."""
    if format == 'gguf' and os.path.isdir(output):
        raise ValueError(f"--output={output} is a folder: give the .gguf file's path")
    if format == 'hf' and os.path.isfile(output):
        raise ValueError(f"--output={output} is a file: give a folder for the HF export")
    files = set(os.listdir(output)) if format == 'hf' and os.path.isdir(output) else set()
    foreign = sorted(files - HF_FILES)
    if foreign:
        raise ValueError(f"{output} holds files an export does not write ({', '.join(foreign[:5])}): "
                         f"choose another --output")
    if files and MARK_FILE not in files:
        raise ValueError(f"{output} was not written by export.py (it has no {MARK_FILE}): choose another --output, "
                         f"or delete the folder yourself")
    if format == 'gguf' and os.path.exists(output) and not gguf_exported(output):
        raise ValueError(f"{output} exists and is not a GGUF written by export.py: choose another --output, or "
                         f"delete the file yourself")
    beside = modelfile_path(output)
    if format == 'gguf' and os.path.exists(beside):
        with open(beside, 'rb') as f:
            first = f.readline()
        if not first.startswith(MODELFILE_MARK.encode()):
            raise ValueError(f"{beside} (where the Ollama Modelfile goes) exists and export.py did not write it: "
                             f"choose another --output, or move the file")


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def export_hf(model, tok, checkpoint, folder, name, outtype='f32', source=''):
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    c = model.config
    os.makedirs(folder)
    with open(os.path.join(folder, MARK_FILE), 'w', encoding='utf-8') as fh:  # first: even a partial folder is ours
        json.dump({'exported_by': 'export.py', 'source': source, 'format': 'hf', 'outtype': outtype}, fh, indent=2)
    dtype = {'f32': torch.float32, 'f16': torch.float16}[outtype]
    tensors = {}
    for hf_name, _, t in gpt2_tensors(model, tok.n_vocab):
        if t.dim() == 2 and hf_name.endswith(('c_attn.weight', 'c_proj.weight', 'c_fc.weight')):
            t = t.t()  # HF's Conv1D keeps (in, out), nn.Linear (out, in)
        tensors[hf_name] = t.to(dtype).contiguous()
    save_file(tensors, os.path.join(folder, 'model.safetensors'), metadata={'format': 'pt'})
    config = {'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2', 'vocab_size': tok.n_vocab,
              'n_positions': c.block_size, 'n_embd': c.n_embd, 'n_layer': c.n_layer, 'n_head': c.n_head,
              'n_inner': 4 * c.n_embd, 'activation_function': 'gelu', 'layer_norm_epsilon': model.transformer.ln_f.eps,
              'resid_pdrop': 0.0, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0, 'scale_attn_weights': True,
              'tie_word_embeddings': True, 'bos_token_id': tok.eot, 'eos_token_id': tok.eot,
              'dtype': {'f32': 'float32', 'f16': 'float16'}[outtype]}
    generation = {'bos_token_id': tok.eot, 'eos_token_id': tok.eot, 'pad_token_id': tok.eot}  # no PAD in the vocab
    for file, obj in (('config.json', config), ('generation_config.json', generation)):
        with open(os.path.join(folder, file), 'w', encoding='utf-8') as fh:
            json.dump(obj, fh, indent=2)
    # transformers' converter reads ranks through tiktoken's loader, which caches a local file by its path (a
    # later export to the same place would get stale ranks): hand it our ranks directly instead
    converter = TikTokenConverter(vocab_file=tok.name, pattern=PATTERNS[tok.pattern_name],
                                  extra_special_tokens=tok.special_tokens)
    converter.load_tiktoken_bpe = lambda _: tok.ranks
    backend = converter.converted()
    wrong = {k: backend.token_to_id(k) for k, i in tok.special_tokens.items() if backend.token_to_id(k) != i}
    if wrong:
        raise ValueError(f"transformers' converter numbered the specials {wrong}, the model wants {tok.special_tokens}")
    extra = [k for k in tok.special_tokens if k != EOT_TEXT]
    # our engine encodes a special's text typed by a user as text (split_special_tokens). But a chat template that
    # writes a special itself (a trained tokenizer's <|answer|>) needs it matched in the rendered chat, which
    # transformers tokenizes as one string: there specials stay matched, and apply_chat_template(...,
    # sanitize_control_tokens=True) keeps the user's typed ones text
    split = question_separator(tok) not in tok.special_tokens
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOT_TEXT, bos_token=EOT_TEXT,
                                   model_max_length=c.block_size, split_special_tokens=split,
                                   **({'extra_special_tokens': extra} if extra else {}))
    fast.chat_template = chat_template(tok)
    fast.save_pretrained(folder)
    with open(os.path.join(folder, 'README.md'), 'w', encoding='utf-8') as fh:
        fh.write(model_card(name, model, tok, checkpoint, source))


def export_gguf(model, tok, checkpoint, path, name, outtype='f32', source=''):
    import gguf
    import numpy as np
    c = model.config
    pattern = PATTERNS.get(tok.pattern_name)
    if pattern not in LLAMA_PRE_TOKENIZERS:
        raise ValueError(f"{tok.describe()} splits text with pattern {tok.pattern_name!r}, which llama.cpp has no "
                         f"pre-tokenizer for; it knows GPT-2's ('gpt2')")
    qtype = {'f32': gguf.GGMLQuantizationType.F32, 'f16': gguf.GGMLQuantizationType.F16,
             'q8_0': gguf.GGMLQuantizationType.Q8_0}[outtype]
    w = gguf.GGUFWriter(path, 'gpt2')
    f = figures(model, tok, checkpoint)
    w.add_string(GGUF_MARK, 'export.py')
    w.add_name(name)
    w.add_description(f"MiniGPT-zh from {source}: {f['iter_num']} iterations, best val loss {f['best_val_loss']}, "
                      f"{f['tokenizer']}")
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.n_embd)
    w.add_feed_forward_length(4 * c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(model.transformer.ln_f.eps)
    w.add_file_type({'f32': gguf.LlamaFileType.ALL_F32, 'f16': gguf.LlamaFileType.MOSTLY_F16,
                     'q8_0': gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, special, merges = bpe_vocab(tok)
    w.add_tokenizer_model('gpt2')
    w.add_tokenizer_pre(LLAMA_PRE_TOKENIZERS[pattern])
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if s else gguf.TokenType.NORMAL for s in special])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.eot)  # never added (add_bos False), but llama.cpp wants one: GPT-2's choice
    w.add_eos_token_id(tok.eot)
    w.add_add_bos_token(False)  # rows were trained without a leading token
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template(tok))
    for _, gguf_name, t in gpt2_tensors(model, tok.n_vocab):
        data = t.numpy()
        kind = qtype
        # as llama.cpp's converter does: vectors and position embeddings stay f32, matrices take the outtype
        if data.ndim == 1 or gguf_name == 'position_embd.weight':
            kind = gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
            print(f"note: {gguf_name} rows of {data.shape[-1]} are not whole q8_0 blocks of 32: written as f16")
            kind = gguf.GGMLQuantizationType.F16
        w.add_tensor(gguf_name, gguf.quants.quantize(np.ascontiguousarray(data), kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sampling_defaults():
    """The engine's default sampling settings (engine.Sampling()), as the Ollama Modelfile names them, so that
    `ollama run` samples as the demo does."""
    demo = Sampling()
    return {k: getattr(demo, k) for k in ('temperature', 'top_k', 'top_p', 'presence_penalty', 'frequency_penalty')}


def modelfile(gguf_file, tok, block_size, sampling):
    """Ollama's recipe: the question template, the stop token, our sampler's settings, no repeat penalty (ours has
    only OpenAI's presence and frequency penalties, which Ollama also takes)."""
    name = os.path.splitext(gguf_file)[0]
    return (f'{MODELFILE_MARK} for {gguf_file}\n'
            f'# ollama create {name} -f <this file>; then: ollama run {name} 中国的首都是哪里？\n'
            f'FROM ./{gguf_file}\nTEMPLATE """{{{{ .Prompt }}}}{question_separator(tok)}"""\n'
            f'PARAMETER stop "{EOT_TEXT}"\nPARAMETER num_ctx {block_size}\n'
            + ''.join(f'PARAMETER {k} {v}\n' for k, v in sampling.items()) + 'PARAMETER repeat_penalty 1.0\n')


def export(out_dir, format, output='', outtype='f32'):
    """Exports the checkpoint in out_dir; returns the path written. A failed export leaves no partial output."""
    if format not in OUTTYPES:
        raise ValueError(f"--format={format!r}: expected 'hf' or 'gguf'")
    if outtype not in OUTTYPES[format]:
        raise ValueError(f"--outtype={outtype!r} with --format={format}: expected one of {', '.join(OUTTYPES[format])}")
    output = os.path.normpath(output or os.path.join('export', os.path.basename(os.path.normpath(out_dir))
                                                     + ('.gguf' if format == 'gguf' else '')))
    check_output(output, format)
    model, tok, checkpoint = load(out_dir)
    name = os.path.splitext(os.path.basename(output))[0] if format == 'gguf' else output  # HF: the folder to load
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    # fixed names, not per process: a killed export's leftovers are removed by the next run
    tmp, recipe = output + '.partial', modelfile_path(output) + '.partial'
    partials = [tmp, recipe] if format == 'gguf' else [tmp]
    try:
        for path in partials:
            remove(path)
        fn = export_hf if format == 'hf' else export_gguf
        fn(model, tok, checkpoint, tmp, name, outtype, source=os.path.join(out_dir, 'ckpt.pt'))
        if format == 'gguf':
            with open(recipe, 'w', encoding='utf-8') as fh:
                fh.write(modelfile(os.path.basename(output), tok, model.config.block_size, sampling_defaults()))
        check_output(output, format)  # again: something may have appeared there while the export ran
        if os.path.isdir(output):
            shutil.rmtree(output)  # an earlier export (check_output made sure)
        os.replace(tmp, output)
        if format == 'gguf':
            os.replace(recipe, modelfile_path(output))
    finally:
        for path in partials:
            remove(path)
    return output


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    try:
        path = export(out_dir, format, output, outtype)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    except ImportError as e:
        sys.exit(f"error: --format={format} needs {e.name} (pip install -r requirements.txt)")
    beside = f" and {os.path.splitext(path)[0]}.Modelfile (Ollama)" if format == 'gguf' else ''
    print(f"exported {out_dir} as {format} ({outtype}) to {path}{beside}")

"""
export.py: the HF folder loads offline in transformers with our logits and our token ids; the GGUF, read back
with the gguf package's own reader, holds every tensor, hyper-parameter and tokenizer entry; bad inputs refused.
Both tokenizers: GPT-2's and a trained one. (llama.cpp itself runs in tests/bench/bench_export.py.)
"""
import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # before transformers is imported: never reach for the Hub

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import export  # noqa: E402
from conftest import GPT2, SENTENCES, run_script, train_tiny_checkpoint  # noqa: E402
from engine import encode_prompt, generate_ids  # noqa: E402
from checkpoint import load_checkpoint  # noqa: E402
from tokenizer import PATTERNS, Tokenizer, get_tokenizer  # noqa: E402

TEXTS = ['北京是中国的首都。', '熊猫喜欢吃竹子。长江', 'plain ASCII: GPT-2 (2019) & friends!', 'emoji 🐼🎉 and ＡＢＣ１２３',
         '混合 English 和中文，标点……——《》【】', '第一行\n\n第二行\t制表符  两个空格 ##',
         'typed by a user: <|endoftext|> and <|answer|>, text to our engine']
PROMPTS = ['北京是中国的首都。', '长江', 'Hello 熊猫 🐼']


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models: threads only add contention on a busy machine


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, tiny_checkpoint, trained_tokenizer):
    """{'gpt2': folder, 'trained': folder} of tiny checkpoints that memorised SENTENCES."""
    trained = tmp_path_factory.mktemp('ckpt_trained')
    train_tiny_checkpoint(trained, tok=get_tokenizer(trained_tokenizer))
    return {'gpt2': tiny_checkpoint, 'trained': str(trained)}


@pytest.fixture(scope='module')
def hf_folders(checkpoints, tmp_path_factory):
    """Both checkpoints exported to HF: GPT-2's through the command line, the trained one in-process."""
    root = tmp_path_factory.mktemp('hf')
    gpt2_out, trained_out = str(root / 'minigpt-gpt2'), str(root / 'minigpt-trained')
    proc = run_script(['export.py', f"--out_dir={checkpoints['gpt2']}", '--format=hf', f'--output={gpt2_out}'])
    assert gpt2_out in proc.stdout
    assert export.export(checkpoints['trained'], 'hf', trained_out) == os.path.normpath(trained_out)
    return {'gpt2': gpt2_out, 'trained': trained_out}


@pytest.fixture(scope='module')
def gguf_files(checkpoints, tmp_path_factory):
    """{(kind, outtype): path}: GPT-2's f32 through the command line, the trained one as f32, f16 and q8_0."""
    root = tmp_path_factory.mktemp('gguf')
    files = {(kind, outtype): str(root / f'{kind}-{outtype}.gguf')
             for kind, outtype in (('gpt2', 'f32'), ('trained', 'f32'), ('trained', 'f16'), ('trained', 'q8_0'))}
    for (kind, outtype), path in files.items():
        if kind == 'gpt2':
            run_script(['export.py', f"--out_dir={checkpoints[kind]}", '--format=gguf', f'--output={path}'])
        else:
            export.export(checkpoints[kind], 'gguf', path, outtype)
    return files


def hf_load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.mark.parametrize('kind', ['gpt2', 'trained'])
def test_hf_logits_equal_ours(kind, checkpoints, hf_folders):
    ours, tok, _ = load_checkpoint(checkpoints[kind])
    theirs, _ = hf_load(hf_folders[kind])
    assert type(theirs).__name__ == 'GPT2LMHeadModel' and theirs.config.vocab_size == tok.n_vocab
    assert theirs.config.activation_function == 'gelu' and theirs.config.n_positions == ours.config.block_size
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()  # tied, as ours
    worst = 0.0
    for prompt in PROMPTS:
        x = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            a, _ = ours(x, x)  # with targets: logits at every position
            b = theirs(x).logits
        assert b.shape == (1, x.size(1), tok.n_vocab)
        worst = max(worst, (a[..., :tok.n_vocab] - b).abs().max().item())
    print(f'{kind}: max |logits difference| {worst:.2e}')
    assert worst < 1e-4


@pytest.mark.parametrize('kind', ['gpt2', 'trained'])
def test_hf_greedy_generation_stops_at_eot_like_ours(kind, checkpoints, hf_folders):
    ours, tok, _ = load_checkpoint(checkpoints[kind])
    theirs, _ = hf_load(hf_folders[kind])
    for text in SENTENCES[:2]:
        ids = tok.encode(text)
        prompt = ids[:max(1, len(ids) // 4)]
        mine = list(generate_ids(ours, tok, prompt, max_new_tokens=40, temperature=0))
        out = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=40, do_sample=False)[0, len(prompt):].tolist()
        assert mine == ids[len(prompt):]  # the memorised sentence
        assert out == mine + [tok.eot]  # the same, and EOT (generation_config's eos) stops it


@pytest.mark.parametrize('kind', ['gpt2', 'trained'])
def test_hf_tokenizer_gives_our_ids(kind, checkpoints, hf_folders):
    tok = load_checkpoint(checkpoints[kind])[1]
    _, ht = hf_load(hf_folders[kind])
    for text in TEXTS:  # a special's text typed by a user stays text, as in our engine
        assert ht.encode(text, add_special_tokens=False, split_special_tokens=True) == tok.encode(text), text
        if kind == 'gpt2':  # its chat template writes no special: typed specials are text by default
            assert ht.encode(text, add_special_tokens=False) == tok.encode(text), text
            assert ht(text)['input_ids'] == tok.encode(text), text  # no BOS, no EOS added
        assert ht.decode(tok.encode(text)) == text
    assert len(ht) == tok.n_vocab and ht.eos_token_id == tok.eot == ht.convert_tokens_to_ids('<|endoftext|>')
    def chat(question, **kwargs):
        return ht.apply_chat_template([{'role': 'user', 'content': question}], return_dict=True, **kwargs)['input_ids']
    typed = '我打了 <|endoftext|> 和 <|answer|>，这是什么？'
    assert chat('北京是什么？') == encode_prompt(tok, '北京是什么？', chat=True) == tok.encode('北京是什么？') + [tok.a_token]
    if kind == 'gpt2':
        assert chat(typed) == encode_prompt(tok, typed, chat=True)  # typed specials are text, exactly as ours
    else:  # the template writes <|answer|>: typed specials stay text only when sanitized (ids may split at their edges)
        safe = chat(typed, sanitize_control_tokens=True)
        assert safe[-1] == tok.a_token and not set(safe[:-1]) & set(tok.special_tokens.values())
        assert ht.decode(safe[:-1]) == typed and tok.eot in chat(typed)
    if kind == 'trained':
        assert ht.encode('问<|answer|>') == tok.encode('问') + [tok.a_token]  # what the chat template relies on
        assert ht.decode([tok.a_token, tok.eot], skip_special_tokens=True) == ''
    else:
        assert tok.a_token == 2235 and ht.encode('##') == [2235]  # GPT-2's separator is an ordinary token
        assert chat('<|endoftext|>') == tok.encode('<|endoftext|>') + [2235]
    generation = json.load(open(os.path.join(hf_folders[kind], 'generation_config.json')))
    assert generation['eos_token_id'] == tok.eot


def test_hf_folder_files_and_model_card(checkpoints, hf_folders):
    folder = hf_folders['trained']
    assert set(os.listdir(folder)) == export.HF_FILES
    card = open(os.path.join(folder, 'README.md'), encoding='utf-8').read()
    ckpt = torch.load(os.path.join(checkpoints['trained'], 'ckpt.pt'), weights_only=True)
    assert f"| iterations | {ckpt['iter_num']} |" in card and f"{round(ckpt['best_val_loss'], 4)}" in card
    assert "trained tokenizer" in card and '<|answer|>' in card and folder in card
    config = json.load(open(os.path.join(folder, 'config.json')))
    assert config['tie_word_embeddings'] and config['model_type'] == 'gpt2'


def test_hf_f16_weights_are_the_cast_checkpoint(checkpoints, tmp_path):
    from safetensors import safe_open
    out = str(tmp_path / 'f16')
    export.export(checkpoints['trained'], 'hf', out, 'f16')
    model, tok, _ = load_checkpoint(checkpoints['trained'])
    with safe_open(os.path.join(out, 'model.safetensors'), 'pt') as f:
        qkv = f.get_tensor('transformer.h.0.attn.c_attn.weight')
    assert qkv.dtype == torch.float16
    assert torch.equal(qkv, model.transformer.h[0].attn.c_attn.weight.detach().t().half())  # Conv1D: (in, out)


def reader_fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {k: f.contents() for k, f in reader.fields.items() if not k.startswith('GGUF.')}


def expected_tensors(model, tok):
    """llama.cpp name -> our tensor (token rows cut to n_vocab, zero biases), built here independently of export.py."""
    sd, n_vocab, n = model.state_dict(), tok.n_vocab, model.config.n_embd
    want = {'token_embd.weight': sd['transformer.wte.weight'][:n_vocab],
            'position_embd.weight': sd['transformer.wpe.weight'], 'output_norm.weight': sd['transformer.ln_f.weight'],
            'output_norm.bias': torch.zeros(n)}
    names = {'ln_1': 'attn_norm', 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', 'ln_2': 'ffn_norm',
             'mlp.c_fc': 'ffn_up', 'mlp.c_proj': 'ffn_down'}
    for i in range(model.config.n_layer):
        for ours, theirs in names.items():
            w = sd[f'transformer.h.{i}.{ours}.weight']
            want[f'blk.{i}.{theirs}.weight'], want[f'blk.{i}.{theirs}.bias'] = w, torch.zeros(w.shape[0])
    return {k: v.float().numpy() for k, v in want.items()}


@pytest.mark.parametrize('kind', ['gpt2', 'trained'])
def test_gguf_tensors_and_hyperparameters(kind, checkpoints, gguf_files):
    model, tok, ckpt = load_checkpoint(checkpoints[kind])
    c, want = model.config, expected_tensors(model, tok)
    reader, fields = reader_fields(gguf_files[kind, 'f32'])
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(want)  # no output.weight: llama.cpp reuses token_embd (tied)
    for name, t in got.items():
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(t.data, want[name]), name
    assert fields['general.architecture'] == 'gpt2' and fields['general.file_type'] == gguf.LlamaFileType.ALL_F32
    assert (fields['gpt2.context_length'], fields['gpt2.embedding_length'], fields['gpt2.feed_forward_length'],
            fields['gpt2.block_count'], fields['gpt2.attention.head_count']) == (c.block_size, c.n_embd, 4 * c.n_embd,
                                                                                 c.n_layer, c.n_head)
    assert abs(fields['gpt2.attention.layer_norm_epsilon'] - 1e-5) < 1e-9
    assert str(ckpt['iter_num']) in fields['general.description']


def test_gguf_f16_and_q8_0(checkpoints, gguf_files):
    want = expected_tensors(*load_checkpoint(checkpoints['trained'])[:2])
    for outtype, qtype, ftype in (('f16', gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
                                  ('q8_0', gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)):
        reader, fields = reader_fields(gguf_files['trained', outtype])
        assert fields['general.file_type'] == ftype
        for t in reader.tensors:
            w = want[t.name]
            data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
            # as llama.cpp's converter: vectors and position embeddings stay exact f32, matrices take the outtype
            exact = t.name.endswith(('_norm.weight', '.bias')) or t.name == 'position_embd.weight'
            assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if exact else qtype), t.name
            if exact or qtype == gguf.GGMLQuantizationType.F16:
                assert np.array_equal(data, w if exact else w.astype(np.float16).astype(np.float32)), t.name
            else:  # 8-bit steps of a 32-value block's largest magnitude / 127
                assert np.abs(data - w).max() <= np.abs(w).max() / 127, t.name


@pytest.mark.parametrize('kind', ['gpt2', 'trained'])
def test_gguf_tokenizer_metadata(kind, checkpoints, gguf_files, hf_folders):
    tok = load_checkpoint(checkpoints[kind])[1]
    _, fields = reader_fields(gguf_files[kind, 'f32'])
    assert fields['tokenizer.ggml.model'] == 'gpt2' and fields['tokenizer.ggml.pre'] == 'gpt-2'
    tokens, types = fields['tokenizer.ggml.tokens'], fields['tokenizer.ggml.token_type']
    assert len(tokens) == len(types) == tok.n_vocab
    chars = {c: b for b, c in export.byte_chars().items()}
    specials = set(tok.special_tokens.values())
    for i, token in enumerate(tokens):
        if i in specials:
            assert types[i] == gguf.TokenType.CONTROL and tok.special_tokens[token] == i
        else:
            assert types[i] == gguf.TokenType.NORMAL and bytes(chars[c] for c in token) == tok.token_bytes(i), i
    assert (fields['tokenizer.ggml.bos_token_id'], fields['tokenizer.ggml.eos_token_id']) == (tok.eot, tok.eot)
    assert fields['tokenizer.ggml.add_bos_token'] is False
    hf_merges = json.load(open(os.path.join(hf_folders[kind], 'tokenizer.json'), encoding='utf-8'))['model']['merges']
    assert fields['tokenizer.ggml.merges'] == [' '.join(m) if isinstance(m, list) else m for m in hf_merges]
    assert fields['tokenizer.chat_template'].endswith(export.question_separator(tok))
    modelfile = open(gguf_files[kind, 'f32'][:-len('.gguf')] + '.Modelfile', encoding='utf-8').read()
    assert f"FROM ./{kind}-f32.gguf" in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile
    assert export.question_separator(tok) + '"""' in modelfile


def test_bad_inputs_refused(checkpoints, tmp_path):
    ckpt = checkpoints['trained']

    def refused(match, *args):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            export.export(*args)
    refused('no checkpoint', str(tmp_path / 'none'), 'gguf')
    refused("expected 'hf' or 'gguf'", ckpt, 'onnx')
    refused('expected one of f32, f16$', ckpt, 'hf', '', 'q8_0')
    refused('is a folder', ckpt, 'gguf', str(tmp_path))
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    refused('notes.txt', ckpt, 'hf', str(tmp_path / 'mine'))
    assert (tmp_path / 'mine' / 'notes.txt').exists()
    # a model.py field export.py does not know how to map; through the command line: a message, no traceback
    data = torch.load(os.path.join(ckpt, 'ckpt.pt'), weights_only=True)
    data['model_args']['rotary'] = True
    os.makedirs(tmp_path / 'rotary')
    torch.save(data, tmp_path / 'rotary' / 'ckpt.pt')
    proc = run_script(['export.py', f'--out_dir={tmp_path}/rotary', '--format=gguf', f'--output={tmp_path}/r.gguf'],
                      check=False)
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and 'rotary' in proc.stderr, proc.stderr
    assert not any(p.name.startswith('r.') for p in tmp_path.iterdir())  # nothing half-written


def test_unmappable_models_and_tokenizers_refused(checkpoints, tmp_path, monkeypatch):
    model, tok, ckpt = load_checkpoint(checkpoints['trained'])
    # a split pattern llama.cpp has no pre-tokenizer for (HF could take any regex; GGUF cannot)
    monkeypatch.setitem(PATTERNS, 'digits3', r"\p{N}{1,3}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+")
    digits = Tokenizer('trained', 'digits', tok.ranks, tok.ranks_sha256, 'digits3')
    with pytest.raises(ValueError, match="pattern 'digits3'.*no pre-tokenizer"):
        export.export_gguf(model, digits, ckpt, str(tmp_path / 'x.gguf'), 'x')
    model.register_buffer('rotary_freqs', torch.ones(4))  # a tensor GPT-2 has no place for
    with pytest.raises(ValueError, match='rotary_freqs'):
        export.gpt2_tensors(model, tok.n_vocab)
    model, tok, _ = load_checkpoint(checkpoints['gpt2'])
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1)  # untied output layer
    with pytest.raises(ValueError, match='not tied'):
        export.gpt2_tensors(model, tok.n_vocab)
    rows = export.gpt2_tensors(load_checkpoint(checkpoints['gpt2'])[0], GPT2.n_vocab)[0][2].shape[0]
    assert (GPT2.vocab_size, rows) == (50304, 50257)  # PAD and padding rows are not exported


def test_an_export_replaces_only_what_an_export_wrote(checkpoints, tmp_path, monkeypatch):
    ckpt = checkpoints['trained']
    notes, script = tmp_path / 'notes.gguf', tmp_path / 'model.Modelfile'
    notes.write_text('my notes')
    script.write_text('FROM llama3\n')  # a Modelfile of the user's, where ours would go for model.gguf
    with pytest.raises(ValueError, match='notes.gguf exists and is not a GGUF written by export.py'):
        export.export(ckpt, 'gguf', str(notes))
    with pytest.raises(ValueError, match='model.Modelfile .where the Ollama Modelfile goes. exists and export.py'):
        export.export(ckpt, 'gguf', str(tmp_path / 'model.gguf'))
    assert notes.read_text() == 'my notes' and script.read_text() == 'FROM llama3\n'
    assert not (tmp_path / 'model.gguf').exists()
    mine = tmp_path / 'mine'  # a user's folder whose files happen to have export names
    mine.mkdir()
    (mine / 'README.md').write_text('# my project')
    (mine / 'config.json').write_text('{}')
    with pytest.raises(ValueError, match='mine was not written by export.py .it has no minigpt_export.json'):
        export.export(ckpt, 'hf', str(mine))
    assert (mine / 'README.md').read_text() == '# my project'
    # what an export wrote is replaced; a killed export's leftovers go; the sampling settings come from one place
    monkeypatch.setattr(export, 'sampling_defaults', lambda: {'temperature': 0.35, 'top_k': 7})
    for path, format in ((tmp_path / 'x.gguf', 'gguf'), (tmp_path / 'x-hf', 'hf')):
        (tmp_path / f'{path.name}.partial').mkdir()
        if format == 'gguf':
            (tmp_path / 'x.Modelfile.partial').write_text('half')
        export.export(ckpt, format, str(path))
        export.export(ckpt, format, str(path))
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('x')) == sorted(
            ['x.gguf', 'x.Modelfile'] + (['x-hf'] if format == 'hf' else []))
    modelfile = (tmp_path / 'x.Modelfile').read_text(encoding='utf-8').splitlines()
    assert modelfile[0] == '# Ollama Modelfile written by export.py for x.gguf'
    assert modelfile[-3:] == ['PARAMETER temperature 0.35', 'PARAMETER top_k 7', 'PARAMETER repeat_penalty 1.0']
    assert set(os.listdir(tmp_path / 'x-hf')) == export.HF_FILES
    assert reader_fields(str(tmp_path / 'x.gguf'))[1][export.GGUF_MARK] == 'export.py'


def test_a_checkpoint_without_its_ranks_checksum_is_one_line(checkpoints, tmp_path):
    data = torch.load(os.path.join(checkpoints['trained'], 'ckpt.pt'), weights_only=True)
    del data['tokenizer']['ranks_sha256']
    os.makedirs(tmp_path / 'nosha')
    torch.save(data, tmp_path / 'nosha' / 'ckpt.pt')
    proc = run_script(['export.py', f'--out_dir={tmp_path}/nosha', '--format=gguf', f'--output={tmp_path}/n.gguf'],
                      check=False)
    assert proc.returncode == 1 and proc.stderr.count('\n') == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path}/nosha/ckpt.pt: its trained tokenizer has no 'ranks_sha256'")
    proc = run_script(['sample.py', f'--out_dir={tmp_path}/nosha', '--max_new_tokens=5'], check=False)  # and sampling
    assert proc.returncode == 1 and proc.stderr.count('\n') == 1, proc.stderr
    assert proc.stderr == (f"error: {tmp_path}/nosha/ckpt.pt: the trained tokenizer's facts have no 'ranks_sha256' "
                           "field (a string): which ranks made these ids is unknown\n")

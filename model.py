"""
A GPT in one file, after nanoGPT: pre-LayerNorm blocks, GELU MLP, tied input/output embeddings,
causal attention on torch's scaled_dot_product_attention (flash attention where the device has it).
The loss honours a loss mask: the mean cross-entropy over masked-in targets only.

The network and its KV cache only: checkpoint.py turns a ckpt.pt into a model and its tokenizer.
"""
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 512
    vocab_size: int = 50304  # the tokenizer's ids + PAD, padded up to a multiple of 64 (tokenizer.vocab_size)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False  # no biases: a little faster, no worse


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, f"n_embd={config.n_embd} must be a multiple of n_head={config.n_head}"
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x, kv_cache=None, layer=0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, causal = None, True
        if kv_cache is not None:  # attend to the cached positions 0..pos-1 plus these T new ones
            k, v = kv_cache.insert(layer, k, v)
            pos = kv_cache.pos
            if kv_cache.positions is not None:  # one token per row, each at its own position: row b sees 0..pos[b]
                mask, causal = kv_cache.mask, False
            elif T == 1:  # one new token sees everything before it: no mask at all
                causal = False
            elif pos > 0:  # a chunk after cached tokens: query i sees keys up to pos + i
                mask, causal = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal)
        y = self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return self.resid_dropout(y) if self.training else y  # a module call less per layer in a decode step


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        y = self.c_proj(F.gelu(self.c_fc(x)))
        return self.dropout(y) if self.training else y


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):  # GPT-2's scaled init of residual projections
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, loss_mask=None, kv_cache=None):
        """With a kv_cache (generation only), idx holds the tokens after the kv_cache.pos cached ones."""
        B, T = idx.size()
        if kv_cache is not None and kv_cache.positions is not None:  # a batch of rows at different positions
            assert T == 1, 'rows at their own positions take one token each'
            pos = kv_cache.positions[:, None]
        else:
            start = kv_cache.pos if kv_cache is not None else 0
            assert start + T <= self.config.block_size, f"sequence of {start + T} tokens, block_size is {self.config.block_size}"
            pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        x = self.transformer.drop(x) if self.training else x
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i)
        x = self.transformer.ln_f(x)
        if kv_cache is not None and kv_cache.positions is None:
            kv_cache.pos += T
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # generation needs the last position only
        if loss_mask is None:
            logits = self.lm_head(x)
            return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        # Only masked-in positions reach the 50304-way output layer, the bulk of a small model's cost: PAD tails
        # and SFT questions are a third to a half of the positions. So with a mask, logits are (kept, vocab).
        mask = loss_mask.reshape(-1)
        keep = mask > 0
        logits = self.lm_head(x.reshape(B * T, -1)[keep])
        losses = F.cross_entropy(logits.float(), targets.reshape(-1)[keep], reduction='none')
        return logits, (losses * mask[keep].float()).sum() / mask.float().sum().clamp(min=1.0)

    def decode(self, idx, kv_cache):
        """
        forward(idx, kv_cache=kv_cache)[0][:, -1] for one new token per row (idx is (B, 1)): the same operations on
        the same weights, bit for bit, written with torch.nn.functional so that a generation step skips nn.Module's
        call machinery (hooks, attribute lookups), about a sixth of a small model's step on a CPU.
        """
        tr, cfg = self.transformer, self.config
        B, C, H = idx.size(0), cfg.n_embd, cfg.n_head
        if kv_cache.positions is not None:
            x = F.embedding(idx, tr.wte.weight) + F.embedding(kv_cache.positions[:, None], tr.wpe.weight)
            mask = kv_cache.mask
        else:
            assert kv_cache.pos < cfg.block_size, f"position {kv_cache.pos}, block_size is {cfg.block_size}"
            x = F.embedding(idx, tr.wte.weight) + tr.wpe.weight[kv_cache.pos]
            mask = None  # one new token sees everything before it
        for i, (ln1, ln1b, wqkv, bqkv, wo, bo, ln2, ln2b, wfc, bfc, wp, bp) in enumerate(self._layer_weights()):
            h = F.layer_norm(x, (C,), ln1, ln1b)
            q, k, v = F.linear(h, wqkv, bqkv).split(C, dim=2)
            q, k, v = (t.view(B, 1, H, C // H).transpose(1, 2) for t in (q, k, v))
            k, v = kv_cache.insert(i, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).contiguous().view(B, 1, C), wo, bo)
            h = F.layer_norm(x, (C,), ln2, ln2b)
            x = x + F.linear(F.gelu(F.linear(h, wfc, bfc)), wp, bp)
        if kv_cache.positions is None:
            kv_cache.pos += 1
        x = F.layer_norm(x, (C,), tr.ln_f.weight, tr.ln_f.bias)
        return F.linear(x[:, -1], self.lm_head.weight)

    def _layer_weights(self):
        """Each block's parameters in decode's order, looked up once (nn.Module's attribute lookup is slow); the
        Parameter objects stay the same when weights are loaded or moved, so the list stays valid."""
        if '_decode_weights' not in self.__dict__:
            self.__dict__['_decode_weights'] = [
                (b.ln_1.weight, b.ln_1.bias, b.attn.c_attn.weight, b.attn.c_attn.bias, b.attn.c_proj.weight,
                 b.attn.c_proj.bias, b.ln_2.weight, b.ln_2.bias, b.mlp.c_fc.weight, b.mlp.c_fc.bias,
                 b.mlp.c_proj.weight, b.mlp.c_proj.bias) for b in self.transformer.h]
        return self.__dict__['_decode_weights']

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},  # matrices
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]  # norms, biases
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops=989e12):
        """Model FLOPs utilisation against a peak (default: H100 bf16 dense), from the PaLM paper's 6N+12LHQT."""
        cfg = self.config
        flops_per_token = 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
        return flops_per_token * tokens_per_iter / dt / peak_flops


class KVCache:
    """
    Keys and values of every layer for the first `pos` positions of a batch, so that generation runs the
    prompt once (prefill) and then one new position per step instead of recomputing the whole context.
    A batch whose rows stand at different positions (a serving batch) sets them with at() before each
    one-token forward; the forward then uses the first len(positions) rows of the cache.
    """
    def __init__(self, config, batch_size=1, device='cpu', dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.block_size = config.block_size
        self.pos = 0  # positions filled; GPT.forward advances it after all layers have inserted
        self.positions = None  # or, per row, the position its next token goes to (at())
        self.rows = None  # 0..B-1 for the rows of an at() forward

    def at(self, positions):
        """Per-row positions (a list of ints) for the next one-token forward; the caller advances them."""
        span = max(positions) + 1
        assert span <= self.block_size, f"position {span - 1}, block_size is {self.block_size}"
        device = self.k.device
        self.positions = torch.tensor(positions, dtype=torch.long, device=device)
        if getattr(self, 'rows', None) is None or len(self.rows) != len(positions):
            self.rows = torch.arange(len(positions), device=device)
        self.span = span
        self.mask = (torch.arange(span, device=device)[None] <= self.positions[:, None])[:, None, None, :]
        return self

    def slot(self, i):
        """Row i alone, from position 0: a cache over the same memory, for prefilling that row."""
        view = KVCache.__new__(KVCache)
        view.k, view.v = self.k[:, i:i + 1], self.v[:, i:i + 1]
        view.block_size, view.pos, view.positions, view.rows = self.block_size, 0, None, None
        return view

    def insert(self, layer, k, v):
        """Stores this layer's new keys/values (at pos.., or at each row's position) and returns all keys/values so far."""
        B = k.size(0)
        if self.positions is not None:
            self.k[layer, self.rows, :, self.positions] = k[:, :, 0]
            self.v[layer, self.rows, :, self.positions] = v[:, :, 0]
            return self.k[layer, :B, :, :self.span], self.v[layer, :B, :, :self.span]
        end = self.pos + k.size(2)
        self.k[layer, :B, :, self.pos:end] = k
        self.v[layer, :B, :, self.pos:end] = v
        return self.k[layer, :B, :, :end], self.v[layer, :B, :, :end]


def pick_device(device='auto'):
    if device != 'auto':
        return device
    if torch.cuda.is_available():
        return 'cuda'
    if getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'

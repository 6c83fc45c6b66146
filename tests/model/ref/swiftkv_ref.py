"""swiftkv_ref.py: a plain PyTorch reference forward for Llama and SwiftKV checkpoints.

Written from the math in docs SWIFTKV.md, not from any public SwiftKV code. It reads an HF
model folder (config.json + *.safetensors, any dtype; computed in float32) and returns the
logits of every position of one causal forward:

  layers 0..Lk-1: ordinary Llama layers (RMSNorm, q/k/v, RoPE on q and k, causal GQA
                  attention, o_proj, residual, RMSNorm, SwiGLU MLP, residual)
  s = RMSNorm(x_Lk, model.norm_swiftkv.weight)         x_Lk = residual entering layer Lk
  per group start j (j = Lk, Lk+G, ...): K_j = RoPE(s W_k_swiftkv[j]), V_j = s W_v_swiftkv[j]
  layers i >= Lk: q = RoPE(RMSNorm(x, input_layernorm[i]) W_q_swiftkv[i]); causal attention to
                  the K/V of i's group; then the original o_proj, post-attention norm and MLP.
  logits = lm_head(RMSNorm(x, model.norm.weight))

With swiftkv=False (or Lk = 0 / Lk = L) it is the plain Llama forward, which make_goldens.py
checks against Hugging Face's LlamaForCausalLM. RoPE uses the HF checkpoint layout
(rotate_half: dimension d pairs with d + head_dim/2), with the default, linear and llama3
frequency rules.
"""
import glob
import json
import math
import os

import torch
from safetensors.torch import load_file


def _rope_inv_freq(cfg):
    """Per-pair inverse frequencies after the config's rope_scaling rule."""
    hd = cfg["head_dim"]
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        inv = inv / float(rs["factor"])
    elif kind == "llama3":
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        orig = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        low_wavelen, high_wavelen = orig / low, orig / high
        smooth = (orig / wavelen - low) / (high - low)
        mid = (1 - smooth) * inv / factor + smooth * inv
        inv = torch.where(wavelen < high_wavelen, inv,
                          torch.where(wavelen > low_wavelen, inv / factor, mid))
    elif kind not in ("default",):
        raise ValueError(f"unsupported rope_type {kind}")
    return inv


class SwiftKVRef:
    """Loads a folder once; forward(ids, swiftkv) gives float32 logits [T, vocab]."""

    def __init__(self, folder):
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        self.cfg = cfg
        self.w = {}
        for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
            for name, t in load_file(path).items():
                self.w[name] = t.to(torch.float32)
        self.n_layers = cfg["num_hidden_layers"]
        self.lk = int(cfg.get("num_key_value_layers", 0)) if cfg.get("swiftkv") else 0
        self.group = int(cfg.get("key_value_group_size", 1))
        self.inv_freq = _rope_inv_freq(cfg)

    # -- building blocks -------------------------------------------------------------------
    def _norm(self, x, weight):
        eps = self.cfg["rms_norm_eps"]
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    def _rope(self, x, n_heads):
        """x [T, n_heads*hd] -> rotated [T, n_heads, hd] at positions 0..T-1."""
        hd = self.cfg["head_dim"]
        t = x.shape[0]
        x = x.view(t, n_heads, hd)
        ang = torch.arange(t, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1).to(torch.float32)[:, None, :]
        sin = torch.cat([ang.sin(), ang.sin()], -1).to(torch.float32)[:, None, :]
        rot = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        return x * cos + rot * sin

    def _attend(self, q, k, v):
        """q [T, H, hd], k/v [T, Hkv, hd] -> [T, H*hd], causal, GQA by head repetition."""
        t, h, hd = q.shape
        rep = h // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
        return out.reshape(t, h * hd)

    def _mlp_block(self, i, x):
        p = f"model.layers.{i}."
        h = self._norm(x, self.w[p + "post_attention_layernorm.weight"])
        g = h @ self.w[p + "mlp.gate_proj.weight"].T
        u = h @ self.w[p + "mlp.up_proj.weight"].T
        return x + (torch.nn.functional.silu(g) * u) @ self.w[p + "mlp.down_proj.weight"].T

    def _layer(self, i, x):
        """An ordinary Llama layer over all T tokens."""
        p = f"model.layers.{i}.self_attn."
        hq, hkv = self.cfg["num_attention_heads"], self.cfg["num_key_value_heads"]
        h = self._norm(x, self.w[f"model.layers.{i}.input_layernorm.weight"])
        q = self._rope(h @ self.w[p + "q_proj.weight"].T, hq)
        k = self._rope(h @ self.w[p + "k_proj.weight"].T, hkv)
        v = (h @ self.w[p + "v_proj.weight"].T).view(x.shape[0], hkv, -1)
        x = x + self._attend(q, k, v) @ self.w[p + "o_proj.weight"].T
        return self._mlp_block(i, x)

    def _swiftkv_layer(self, i, x, k, v):
        """A SwiftKV layer: own swiftkv query, the group's SingleInputKV keys/values."""
        p = f"model.layers.{i}.self_attn."
        h = self._norm(x, self.w[f"model.layers.{i}.input_layernorm.weight"])
        q = self._rope(h @ self.w[p + "q_proj_swiftkv.weight"].T, self.cfg["num_attention_heads"])
        x = x + self._attend(q, k, v) @ self.w[p + "o_proj.weight"].T
        return self._mlp_block(i, x)

    def _single_input_kv(self, x):
        """K/V of every group start j >= Lk from s = RMSNorm(x_Lk, norm_swiftkv)."""
        hkv = self.cfg["num_key_value_heads"]
        s = self._norm(x, self.w["model.norm_swiftkv.weight"])
        kv = {}
        for j in range(self.lk, self.n_layers, self.group):
            p = f"model.layers.{j}.self_attn."
            k = self._rope(s @ self.w[p + "k_proj_swiftkv.weight"].T, hkv)
            v = (s @ self.w[p + "v_proj_swiftkv.weight"].T).view(x.shape[0], hkv, -1)
            kv[j] = (k, v)
        return kv

    # -- forward -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, ids, swiftkv=True):
        """Logits [T, vocab] (float32) for token ids (list of ints), one causal forward."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        x = self.w["model.embed_tokens.weight"][ids]
        lk = self.lk if (swiftkv and self.lk > 0) else self.n_layers
        for i in range(lk):
            x = self._layer(i, x)
        if lk < self.n_layers:
            kv = self._single_input_kv(x)
            for i in range(lk, self.n_layers):
                start = lk + ((i - lk) // self.group) * self.group
                x = self._swiftkv_layer(i, x, *kv[start])
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        return self._norm(x, self.w["model.norm.weight"]) @ head.T

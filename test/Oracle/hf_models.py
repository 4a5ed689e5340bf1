# Independent numpy oracle for moe-opt: Hugging Face style MoE model folders
# and float64 implementations of each architecture's MoE block.
#
# Nothing here reads or imports the C++ sources under test. Each block is
# written from the Hugging Face / DeepSeek reference code (see README.md for
# the pointers) and from the routing rules written down in docs/hf-layouts.md.
#
# Only Debian's python3 with python3-numpy is needed: safetensors files are
# written and read by the few lines below, and bf16 rounding is done on the
# float32 bit patterns (round to nearest, ties to even).

import json
import math
import os
import struct

import numpy as np

# --------------------------------------------------------------------------
# bf16 and safetensors
# --------------------------------------------------------------------------


def bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_to_f32(bits):
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_round(a):
    """The float32 values that survive a trip through bf16."""
    return bf16_to_f32(bf16_bits(a)).reshape(np.shape(a))


def quantize(a, dtype):
    """Values as stored with `dtype` ('F32' or 'BF16'), as float32."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.copy()
    if dtype == "BF16":
        return bf16_round(a)
    raise ValueError(dtype)


def _tensor_bytes(dtype, values):
    if dtype == "F32":
        return np.ascontiguousarray(values, dtype="<f4").tobytes()
    if dtype == "BF16":
        return bf16_bits(values).astype("<u2").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype, float32 array)}, written in insertion order."""
    header = {}
    blobs = []
    offset = 0
    for name, (dtype, values) in tensors.items():
        data = _tensor_bytes(dtype, values)
        header[name] = {"dtype": dtype, "shape": list(np.shape(values)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # 8-byte alignment of the data section
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return offset


def read_safetensors(path):
    """-> ({name: float32 array}, {name: dtype}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    metadata = header.pop("__metadata__", {})
    values, dtypes = {}, {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        chunk = raw[base + begin:base + end]
        shape = tuple(info["shape"])
        if info["dtype"] == "F32":
            arr = np.frombuffer(chunk, dtype="<f4").astype(np.float32)
        elif info["dtype"] == "BF16":
            arr = bf16_to_f32(np.frombuffer(chunk, dtype="<u2"))
        else:
            raise ValueError("unsupported dtype " + info["dtype"])
        values[name] = arr.reshape(shape)
        dtypes[name] = info["dtype"]
    return values, dtypes, metadata


def write_checkpoint(directory, tensors, shards=1):
    """Writes model.safetensors, or `shards` files model-0000i-of-0000N plus
    model.safetensors.index.json. Tensors are dealt round-robin so that the
    per-expert stacks of one projection span several files."""
    os.makedirs(directory, exist_ok=True)
    if shards <= 1:
        write_safetensors(os.path.join(directory, "model.safetensors"), tensors,
                          {"format": "pt"})
        return ["model.safetensors"]
    names = list(tensors)
    files = ["model-%05d-of-%05d.safetensors" % (i + 1, shards)
             for i in range(shards)]
    parts = [dict() for _ in range(shards)]
    weight_map = {}
    for i, name in enumerate(names):
        parts[i % shards][name] = tensors[name]
        weight_map[name] = files[i % shards]
    total = 0
    for fname, part in zip(files, parts):
        total += write_safetensors(os.path.join(directory, fname), part,
                                   {"format": "pt"})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    return files


def read_checkpoint(directory):
    """Reads back every tensor of a folder written by write_checkpoint."""
    index = os.path.join(directory, "model.safetensors.index.json")
    out, dtypes = {}, {}
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        for fname in sorted(set(weight_map.values())):
            v, d, _ = read_safetensors(os.path.join(directory, fname))
            for name in v:
                if weight_map.get(name) != fname:
                    raise AssertionError("%s not mapped to %s" % (name, fname))
            out.update(v)
            dtypes.update(d)
        if set(out) != set(weight_map):
            raise AssertionError("index and shards disagree")
    else:
        out, dtypes, _ = read_safetensors(os.path.join(directory,
                                                       "model.safetensors"))
    return out, dtypes


# --------------------------------------------------------------------------
# Small numerical helpers (float64)
# --------------------------------------------------------------------------


def sigmoid(v):
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    pos = v >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-v[pos]))
    ev = np.exp(v[~pos])
    out[~pos] = ev / (1.0 + ev)
    return out


def silu(v):
    return v * sigmoid(v)


def softmax(v):
    v = np.asarray(v, dtype=np.float64)
    m = np.max(v, axis=-1, keepdims=True)
    e = np.exp(v - m)
    return e / np.sum(e, axis=-1, keepdims=True)


# A routing decision closer than this to a boundary (two scores that swap
# order, a cumulative mass that crosses p, a score that crosses a threshold)
# could legitimately go either way between float32 and float64; such tokens
# are reported as "fragile" and not compared. With continuous random draws
# this almost never happens (it is counted in the report).
MARGIN = 1e-5

# Probabilities below the smallest normal float32 (softmax logits more than
# ~87 below the row maximum) are zero or denormal in float32 depending on
# the exp implementation: such experts tie at the bottom and any of them may
# fill a slot whose weight is ~0. The comparison treats them as
# interchangeable ("tiny"), with an expected weight of 0.
TINY = 2e-38


def topk_rows(scores, k):
    """Descending top-k per row; ties go to the lower index (stable sort).
    Returns ids [T, k] (-1 where the score is -inf), values, and the margin
    between the k-th and the (k+1)-th score."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    ids = order[:, :k].copy()
    vals = np.take_along_axis(scores, ids, axis=1)
    empty = ~np.isfinite(vals)
    ids[empty] = -1
    vals = np.where(empty, 0.0, vals)
    if scores.shape[1] > k:
        kth = np.take_along_axis(scores, order[:, k - 1:k], axis=1)[:, 0]
        nxt = np.take_along_axis(scores, order[:, k:k + 1], axis=1)[:, 0]
        with np.errstate(invalid="ignore"):
            margin = np.where(np.isfinite(nxt), kth - nxt, np.inf)
        # An exact tie (identical router rows or tokens) is no float
        # accident: both sides compute the same bits and the lower index
        # must win. Only a near-tie is fragile.
        margin = np.where(margin == 0.0, np.inf, margin)
    else:
        margin = np.full(scores.shape[0], np.inf)
    return ids, vals, margin


def group_limit(scores, n_group, topk_group, how, fill=-np.inf):
    """Keeps the experts of the `topk_group` best groups (group score: max,
    or sum of the two best); the others get `fill` (-inf: never chosen).
    Returns the masked scores and the margin of the group decision."""
    t, e = scores.shape
    g = scores.reshape(t, n_group, e // n_group)
    if how == "max":
        gs = g.max(axis=2)
    elif how == "top2_sum":
        gs = -np.sort(-g, axis=2)[:, :, :2].sum(axis=2)
    else:
        raise ValueError(how)
    keep, _, margin = topk_rows(gs, topk_group)
    mask = np.zeros((t, n_group), dtype=bool)
    np.put_along_axis(mask, keep, True, axis=1)
    full = np.repeat(mask, e // n_group, axis=1)
    return np.where(full, scores, fill), margin


def glu(x, wg, wu, wd):
    """down(silu(x Wg^T) * (x Wu^T)), matrices as torch.nn.Linear stores them."""
    return (silu(x @ wg.T) * (x @ wu.T)) @ wd.T


class Routing:
    """ids [T, K] (-1 = empty), weights [T, K], fragile [T] bool, and
    optionally tiny [T, N] bool: experts interchangeable at the bottom."""

    def __init__(self, ids, weights, fragile=None, info=None, tiny=None):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.tiny = tiny
        self.weights = np.where(self.ids >= 0, weights, 0.0)
        t = self.ids.shape[0]
        self.fragile = (np.zeros(t, dtype=bool) if fragile is None
                        else np.asarray(fragile, dtype=bool))
        self.info = info or {}


def combine(x, routing, expert_fn, scale_input=False):
    """sum over slots of w * expert(x), or expert(w * x) (Llama 4)."""
    x = np.asarray(x, dtype=np.float64)
    y = None
    for e in sorted(set(int(i) for i in routing.ids.ravel() if i >= 0)):
        tok, slot = np.nonzero(routing.ids == e)
        w = routing.weights[tok, slot][:, None]
        if scale_input:
            out = expert_fn(e, x[tok] * w)
        else:
            out = expert_fn(e, x[tok]) * w
        if y is None:
            y = np.zeros((x.shape[0], out.shape[1]))
        np.add.at(y, tok, out)
    return y


# --------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------

H = 64  # hidden size of every generated model


class HFModel:
    """A random Hugging Face model folder (MoE-block tensors only) and its
    float64 oracle."""

    def __init__(self, arch, config, dtype, layout):
        self.arch = arch
        self.config = config
        self.dtype = dtype
        self.layout = layout
        self.tensors = {}  # name -> (dtype, float32 stored values)

    # -- construction -----------------------------------------------------
    def add(self, name, values, dtype=None):
        dtype = dtype or self.dtype
        self.tensors[name] = (dtype, quantize(values, dtype))

    def get(self, name):
        return self.tensors[name][1].astype(np.float64)

    def write(self, directory, shards=1):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(self.config, f, indent=2, sort_keys=True)
        return write_checkpoint(directory, self.tensors, shards)

    # -- layer structure --------------------------------------------------
    @property
    def num_layers(self):
        return self.config["num_hidden_layers"]

    def is_moe_layer(self, layer):
        c = self.config
        if self.arch in ("mixtral", "olmoe", "gpt_oss"):
            return 0 <= layer < c["num_hidden_layers"]
        if self.arch in ("qwen2_moe", "qwen3_moe"):
            return (layer not in c.get("mlp_only_layers", []) and
                    c["num_experts"] > 0 and
                    (layer + 1) % c.get("decoder_sparse_step", 1) == 0)
        if self.arch in ("deepseek_v2", "deepseek_v3"):
            return (c.get("n_routed_experts") is not None and
                    layer >= c.get("first_k_dense_replace", 0) and
                    layer % c.get("moe_layer_freq", 1) == 0)
        if self.arch == "llama4_text":
            step = c.get("interleave_moe_layer_step", 1)
            moe = c.get("moe_layers")
            if moe is None:
                moe = list(range(step - 1, c["num_hidden_layers"], step))
            return layer in moe
        raise ValueError(self.arch)

    @property
    def moe_layers(self):
        return [l for l in range(self.num_layers) if self.is_moe_layer(l)]

    def refused_layer(self):
        """A layer moe-run must refuse: the first dense one, or one past the
        last layer when every layer is an MoE layer."""
        for l in range(self.num_layers):
            if not self.is_moe_layer(l):
                return l
        return self.num_layers

    # -- oracle ---------------------------------------------------------
    def block(self, layer, x):
        """-> (y [T, H] float64, Routing) for the MoE block of `layer`."""
        assert self.is_moe_layer(layer)
        return _BLOCKS[self.arch](self, layer, np.asarray(x, dtype=np.float64))


def _rand(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _common_config(override, arch, dtype, layers, **extra):
    cfg = {
        "architectures": [{
            "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
            "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM",
            "deepseek_v2": "DeepseekV2ForCausalLM",
            "deepseek_v3": "DeepseekV3ForCausalLM",
            "gpt_oss": "GptOssForCausalLM",
            "llama4_text": "Llama4ForCausalLM"}[arch]],
        "model_type": arch,
        "hidden_size": H,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "vocab_size": 1024,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": {"F32": "float32", "BF16": "bfloat16"}[dtype],
        "use_cache": True,
    }
    cfg.update(extra)
    # override: {key: value}, None deletes the key (the loader's default applies)
    for key, value in (override or {}).items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


# Router weight scale: logits with a standard deviation of about 1.5 for
# x ~ N(0, 1), so that routing is neither uniform nor one-hot.
ROUTER_SCALE = 1.5 / math.sqrt(H)


def _expert_names(arch, layout, layer):
    """(router name, per-expert name pattern (gate, up, down) or None,
    fused names (gate_up, down) or None)."""
    if arch == "mixtral":
        if layout == "fused":
            p = "model.layers.%d.mlp" % layer
            return p + ".gate.weight", None, (p + ".experts.gate_up_proj",
                                              p + ".experts.down_proj")
        p = "model.layers.%d.block_sparse_moe" % layer
        return (p + ".gate.weight",
                (p + ".experts.%d.w1.weight", p + ".experts.%d.w3.weight",
                 p + ".experts.%d.w2.weight"), None)
    p = "model.layers.%d.mlp" % layer
    if layout == "fused":
        return p + ".gate.weight", None, (p + ".experts.gate_up_proj",
                                          p + ".experts.down_proj")
    return (p + ".gate.weight",
            (p + ".experts.%d.gate_proj.weight", p + ".experts.%d.up_proj.weight",
             p + ".experts.%d.down_proj.weight"), None)


def _add_glu_experts(m, rng, layer, n_experts, inter, router_scale=ROUTER_SCALE):
    """Per-expert gate/up/down [I, H], [I, H], [H, I], or the fused layout
    of transformers v5 (conversion_mapping.py: MergeModulelist(dim=0) then
    Concatenate(dim=1)): gate_up_proj [E, 2I, H] with gate in rows [0, I)
    and up in rows [I, 2I), down_proj [E, H, I], both [out, in] per expert."""
    router, per, fused = _expert_names(m.arch, m.layout, layer)
    m.add(router, _rand(rng, (n_experts, H), router_scale))
    g = _rand(rng, (n_experts, inter, H), 1.0 / math.sqrt(H))
    u = _rand(rng, (n_experts, inter, H), 1.0 / math.sqrt(H))
    d = _rand(rng, (n_experts, H, inter), 1.0 / math.sqrt(inter))
    if per is not None:
        for e in range(n_experts):
            m.add(per[0] % e, g[e])
            m.add(per[1] % e, u[e])
            m.add(per[2] % e, d[e])
    else:
        m.add(fused[0], np.concatenate([g, u], axis=1))
        m.add(fused[1], d)


def _glu_expert_fn(m, layer):
    _, per, fused = _expert_names(m.arch, m.layout, layer)
    if per is not None:
        def fn(e, x):
            return glu(x, m.get(per[0] % e), m.get(per[1] % e), m.get(per[2] % e))
        return fn
    gu_all = m.get(fused[0])
    d_all = m.get(fused[1])
    inter = gu_all.shape[1] // 2

    def fn_fused(e, x):
        gu = x @ gu_all[e].T
        return (silu(gu[:, :inter]) * gu[:, inter:]) @ d_all[e].T
    return fn_fused


def _softmax_topk(m, layer, x, n_experts, k, norm):
    router, _, _ = _expert_names(m.arch, m.layout, layer)
    logits = x @ m.get(router).T
    p = softmax(logits)
    ids, vals, _ = topk_rows(p, k)
    _, _, lmargin = topk_rows(logits, k)  # same order, better conditioned
    if norm:
        vals = vals / vals.sum(axis=1, keepdims=True)
    return Routing(ids, vals, lmargin < MARGIN, tiny=p < TINY)


# ---- Mixtral --------------------------------------------------------------


def build_mixtral(rng, dtype="F32", layout="per_expert", experts=8, k=2,
                  inter=96, layers=2, router_scale=ROUTER_SCALE, override=None):
    cfg = _common_config(override, "mixtral", dtype, layers, intermediate_size=inter,
                         num_local_experts=experts, num_experts_per_tok=k,
                         router_jitter_noise=0.0, rope_theta=1e6,
                         sliding_window=None, output_router_logits=False,
                         router_aux_loss_coef=0.02)
    m = HFModel("mixtral", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter, router_scale)
    return m


def _block_mixtral(m, layer, x):
    c = m.config
    r = _softmax_topk(m, layer, x, c["num_local_experts"],
                      c["num_experts_per_tok"], True)
    return combine(x, r, _glu_expert_fn(m, layer)), r


# ---- Qwen2-MoE / Qwen3-MoE / OLMoE ------------------------------------------


def build_qwen2_moe(rng, dtype="F32", layout="per_expert", experts=12, k=4,
                    inter=32, shared_inter=128, layers=6, sparse_step=2,
                    mlp_only=(3,), norm=False, override=None):
    cfg = _common_config(override, "qwen2_moe", dtype, layers, intermediate_size=176,
                         moe_intermediate_size=inter,
                         shared_expert_intermediate_size=shared_inter,
                         num_experts=experts, num_experts_per_tok=k,
                         decoder_sparse_step=sparse_step,
                         mlp_only_layers=list(mlp_only), norm_topk_prob=norm,
                         rope_theta=1e6, use_sliding_window=False,
                         router_aux_loss_coef=0.001)
    m = HFModel("qwen2_moe", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter)
        p = "model.layers.%d.mlp" % l
        m.add(p + ".shared_expert.gate_proj.weight",
              _rand(rng, (shared_inter, H), 1 / math.sqrt(H)))
        m.add(p + ".shared_expert.up_proj.weight",
              _rand(rng, (shared_inter, H), 1 / math.sqrt(H)))
        m.add(p + ".shared_expert.down_proj.weight",
              _rand(rng, (H, shared_inter), 1 / math.sqrt(shared_inter)))
        m.add(p + ".shared_expert_gate.weight", _rand(rng, (1, H), ROUTER_SCALE))
    return m


def _block_qwen2_moe(m, layer, x):
    c = m.config
    r = _softmax_topk(m, layer, x, c["num_experts"], c["num_experts_per_tok"],
                      c.get("norm_topk_prob", False))
    y = combine(x, r, _glu_expert_fn(m, layer))
    p = "model.layers.%d.mlp" % layer
    shared = glu(x, m.get(p + ".shared_expert.gate_proj.weight"),
                 m.get(p + ".shared_expert.up_proj.weight"),
                 m.get(p + ".shared_expert.down_proj.weight"))
    gate = sigmoid(x @ m.get(p + ".shared_expert_gate.weight").T)  # [T, 1]
    return y + gate * shared, r


def build_qwen3_moe(rng, dtype="F32", layout="per_expert", experts=16, k=4,
                    inter=32, layers=3, sparse_step=1, mlp_only=(0,), norm=True,
                    override=None):
    cfg = _common_config(override, "qwen3_moe", dtype, layers, intermediate_size=192,
                         moe_intermediate_size=inter, num_experts=experts,
                         num_experts_per_tok=k, decoder_sparse_step=sparse_step,
                         mlp_only_layers=list(mlp_only), norm_topk_prob=norm,
                         head_dim=16, rope_theta=1e6, use_sliding_window=False,
                         router_aux_loss_coef=0.001)
    m = HFModel("qwen3_moe", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter)
    return m


def _block_qwen3_moe(m, layer, x):
    c = m.config
    r = _softmax_topk(m, layer, x, c["num_experts"], c["num_experts_per_tok"],
                      c.get("norm_topk_prob", False))
    return combine(x, r, _glu_expert_fn(m, layer)), r


def build_olmoe(rng, dtype="F32", layout="per_expert", experts=16, k=4,
                inter=64, layers=2, norm=False, override=None):
    cfg = _common_config(override, "olmoe", dtype, layers, intermediate_size=inter,
                         num_experts=experts, num_experts_per_tok=k,
                         norm_topk_prob=norm, clip_qkv=None, rope_theta=10000.0,
                         router_aux_loss_coef=0.01)
    m = HFModel("olmoe", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter)
    return m


_block_olmoe = _block_qwen3_moe

# ---- DeepSeek-V2 / V3 -----------------------------------------------------


def _add_deepseek_shared(m, rng, layer, inter):
    p = "model.layers.%d.mlp.shared_experts" % layer
    m.add(p + ".gate_proj.weight", _rand(rng, (inter, H), 1 / math.sqrt(H)))
    m.add(p + ".up_proj.weight", _rand(rng, (inter, H), 1 / math.sqrt(H)))
    m.add(p + ".down_proj.weight", _rand(rng, (H, inter), 1 / math.sqrt(inter)))


def _deepseek_shared(m, layer, x):
    p = "model.layers.%d.mlp.shared_experts" % layer
    if p + ".gate_proj.weight" not in m.tensors:
        return 0.0
    return glu(x, m.get(p + ".gate_proj.weight"), m.get(p + ".up_proj.weight"),
               m.get(p + ".down_proj.weight"))


def build_deepseek_v2(rng, dtype="F32", layout="per_expert", experts=16, k=4,
                      inter=32, shared=2, layers=5, topk_method="greedy",
                      n_group=None, topk_group=None, scaling=1.5, norm=False,
                      first_dense=1, freq=2, override=None):
    cfg = _common_config(override, "deepseek_v2", dtype, layers, intermediate_size=160,
                         moe_intermediate_size=inter, n_routed_experts=experts,
                         n_shared_experts=shared, num_experts_per_tok=k,
                         topk_method=topk_method, n_group=n_group,
                         topk_group=topk_group, routed_scaling_factor=scaling,
                         norm_topk_prob=norm, first_k_dense_replace=first_dense,
                         moe_layer_freq=freq, scoring_func="softmax",
                         aux_loss_alpha=0.001, seq_aux=True, kv_lora_rank=32,
                         q_lora_rank=None, qk_nope_head_dim=16,
                         qk_rope_head_dim=8, v_head_dim=16)
    m = HFModel("deepseek_v2", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter)
        if shared:
            _add_deepseek_shared(m, rng, l, shared * inter)
    return m


def _block_deepseek_v2(m, layer, x):
    """DeepSeek's own MoEGate (modeling_deepseek.py of DeepSeek-V2): softmax;
    greedy top-k or group_limited_greedy (group score = max, keep topk_group
    groups); weights p/sum(p) (+1e-20) if norm_topk_prob and k > 1, else
    p * routed_scaling_factor."""
    c = m.config
    router, _, _ = _expert_names(m.arch, m.layout, layer)
    logits = x @ m.get(router).T
    p = softmax(logits)
    k = c["num_experts_per_tok"]
    fragile = np.zeros(x.shape[0], dtype=bool)
    if c["topk_method"] == "group_limited_greedy":
        p_sel, gmargin = group_limit(p, c["n_group"], c["topk_group"], "max")
        fragile |= gmargin < MARGIN * 0.1
    else:
        p_sel = p
    ids, vals, margin = topk_rows(p_sel, k)
    fragile |= margin < MARGIN * 0.1  # probabilities: ~10x smaller than logits
    if c.get("norm_topk_prob") and k > 1:
        vals = vals / (vals.sum(axis=1, keepdims=True) + 1e-20)
    else:
        vals = vals * c["routed_scaling_factor"]
    r = Routing(ids, vals, fragile, tiny=p_sel < TINY)
    y = combine(x, r, _glu_expert_fn(m, layer)) + _deepseek_shared(m, layer, x)
    return y, r


def build_deepseek_v3(rng, dtype="F32", layout="per_expert", experts=16, k=4,
                      inter=32, shared=1, layers=3, n_group=4, topk_group=2,
                      scaling=2.5, norm=True, first_dense=1, bias="mixed", override=None):
    cfg = _common_config(override, "deepseek_v3", dtype, layers, intermediate_size=160,
                         moe_intermediate_size=inter, n_routed_experts=experts,
                         n_shared_experts=shared, num_experts_per_tok=k,
                         topk_method="noaux_tc", n_group=n_group,
                         topk_group=topk_group, routed_scaling_factor=scaling,
                         norm_topk_prob=norm, first_k_dense_replace=first_dense,
                         moe_layer_freq=1, scoring_func="sigmoid",
                         kv_lora_rank=32, q_lora_rank=48, qk_nope_head_dim=16,
                         qk_rope_head_dim=8, v_head_dim=16)
    m = HFModel("deepseek_v3", cfg, dtype, layout)
    for l in m.moe_layers:
        _add_glu_experts(m, rng, l, experts, inter)
        if bias == "negative":
            # One expert per group with a small positive bias, the others
            # below -1, so every choice score but one per group is negative:
            # the kept groups hold fewer than k positive scores, and masking
            # the dropped groups with 0 (older HF) instead of -inf (the
            # reference) would pick a dropped expert for every token.
            size = experts // n_group
            b = rng.uniform(-1.3, -1.05, size=experts)
            for g in range(n_group):
                b[g * size + rng.integers(size)] = rng.uniform(0.05, 0.2)
        else:
            b = rng.normal(0.0, 0.3, size=experts)  # about half negative
        # The correction bias is a float32 buffer in the checkpoints.
        m.add("model.layers.%d.mlp.gate.e_score_correction_bias" % l, b, "F32")
        if shared:
            _add_deepseek_shared(m, rng, l, shared * inter)
    return m


def deepseek_v3_routing(m, layer, x, fill=-np.inf):
    c = m.config
    router, _, _ = _expert_names(m.arch, m.layout, layer)
    s = sigmoid(x @ m.get(router).T)
    choice = s + m.get("model.layers.%d.mlp.gate.e_score_correction_bias" % layer)
    masked, gmargin = group_limit(choice, c["n_group"], c["topk_group"],
                                  "top2_sum", fill)
    ids, _, margin = topk_rows(masked, c["num_experts_per_tok"])
    w = np.take_along_axis(s, ids, axis=1)
    if c.get("norm_topk_prob", True):
        w = w / (w.sum(axis=1, keepdims=True) + 1e-20)
    w = w * c["routed_scaling_factor"]
    return Routing(ids, w, (gmargin < MARGIN) | (margin < MARGIN))


def _block_deepseek_v3(m, layer, x):
    r = deepseek_v3_routing(m, layer, x)
    zero = deepseek_v3_routing(m, layer, x, fill=0.0)
    differs = np.any(np.sort(r.ids, axis=1) != np.sort(zero.ids, axis=1), axis=1)
    r.info["zero_mask_differs"] = int(differs.sum())
    y = combine(x, r, _glu_expert_fn(m, layer)) + _deepseek_shared(m, layer, x)
    return y, r


# ---- gpt-oss --------------------------------------------------------------

GPT_OSS_ALPHA = 1.702


def build_gpt_oss(rng, dtype="F32", layout="fused", experts=8, k=2, inter=64,
                  layers=2, limit=7.0, override=None):
    cfg = _common_config(override, "gpt_oss", dtype, layers, intermediate_size=inter,
                         num_local_experts=experts, num_experts_per_tok=k,
                         experts_per_token=k, swiglu_limit=limit,
                         head_dim=16, sliding_window=128,
                         layer_types=["sliding_attention", "full_attention"] *
                         ((layers + 1) // 2), rope_theta=150000.0,
                         router_aux_loss_coef=0.9)
    cfg["layer_types"] = cfg["layer_types"][:layers]
    m = HFModel("gpt_oss", cfg, dtype, layout)
    for l in m.moe_layers:
        p = "model.layers.%d.mlp" % l
        m.add(p + ".router.weight", _rand(rng, (experts, H), ROUTER_SCALE))
        m.add(p + ".router.bias", _rand(rng, (experts,), 0.5))
        # Scaled so that some gate/up values pass the clamp limit of 7.
        m.add(p + ".experts.gate_up_proj",
              _rand(rng, (experts, H, 2 * inter), 3.0 / math.sqrt(H)))
        m.add(p + ".experts.gate_up_proj_bias",
              _rand(rng, (experts, 2 * inter), 0.5))
        m.add(p + ".experts.down_proj",
              _rand(rng, (experts, inter, H), 1 / math.sqrt(inter)))
        m.add(p + ".experts.down_proj_bias", _rand(rng, (experts, H), 0.5))
    return m


def gpt_oss_expert(gu_w, gu_b, d_w, d_b, x, limit):
    """[in, out] matrices; gate/up interleaved (gate even, up odd columns)."""
    gu = x @ gu_w + gu_b
    gate = np.minimum(gu[:, 0::2], limit)
    up = np.clip(gu[:, 1::2], -limit, limit)
    return ((up + 1.0) * gate * sigmoid(GPT_OSS_ALPHA * gate)) @ d_w + d_b


def _block_gpt_oss(m, layer, x):
    c = m.config
    p = "model.layers.%d.mlp" % layer
    logits = x @ m.get(p + ".router.weight").T + m.get(p + ".router.bias")
    ids, vals, margin = topk_rows(logits, c["num_experts_per_tok"])
    r = Routing(ids, softmax(vals), margin < MARGIN)
    gu_w, gu_b = m.get(p + ".experts.gate_up_proj"), m.get(p + ".experts.gate_up_proj_bias")
    d_w, d_b = m.get(p + ".experts.down_proj"), m.get(p + ".experts.down_proj_bias")
    limit = c.get("swiglu_limit", 7.0)

    def fn(e, xs):
        return gpt_oss_expert(gu_w[e], gu_b[e], d_w[e], d_b[e], xs, limit)
    return combine(x, r, fn), r


# ---- Llama 4 --------------------------------------------------------------


def build_llama4_text(rng, dtype="F32", layout="fused", experts=8, k=1,
                      inter=64, layers=4, step=2, override=None):
    cfg = _common_config(override, "llama4_text", dtype, layers, intermediate_size=inter,
                         intermediate_size_mlp=160, num_local_experts=experts,
                         num_experts_per_tok=k, interleave_moe_layer_step=step,
                         head_dim=16, rope_theta=500000.0, use_qk_norm=True,
                         attention_chunk_size=8192, router_aux_loss_coef=0.001,
                         router_jitter_noise=0.0)
    m = HFModel("llama4_text", cfg, dtype, layout)
    for l in m.moe_layers:
        p = "model.layers.%d.feed_forward" % l
        m.add(p + ".router.weight", _rand(rng, (experts, H), ROUTER_SCALE))
        m.add(p + ".experts.gate_up_proj",
              _rand(rng, (experts, H, 2 * inter), 1 / math.sqrt(H)))
        m.add(p + ".experts.down_proj",
              _rand(rng, (experts, inter, H), 1 / math.sqrt(inter)))
        m.add(p + ".shared_expert.gate_proj.weight",
              _rand(rng, (inter, H), 1 / math.sqrt(H)))
        m.add(p + ".shared_expert.up_proj.weight",
              _rand(rng, (inter, H), 1 / math.sqrt(H)))
        m.add(p + ".shared_expert.down_proj.weight",
              _rand(rng, (H, inter), 1 / math.sqrt(inter)))
    return m


def _block_llama4_text(m, layer, x):
    """Llama4TextMoe: top-k of the logits, sigmoid of the kept logit scales
    the expert's INPUT; gate_up [E, H, 2I] (gate = first half), down
    [E, I, H]; shared expert (intermediate_size) on every token."""
    c = m.config
    p = "model.layers.%d.feed_forward" % layer
    logits = x @ m.get(p + ".router.weight").T
    ids, vals, margin = topk_rows(logits, c["num_experts_per_tok"])
    r = Routing(ids, sigmoid(vals), margin < MARGIN)
    gu, d = m.get(p + ".experts.gate_up_proj"), m.get(p + ".experts.down_proj")
    inter = gu.shape[2] // 2

    def fn(e, xs):
        h = xs @ gu[e]
        return (silu(h[:, :inter]) * h[:, inter:]) @ d[e]
    y = combine(x, r, fn, scale_input=True)
    shared = glu(x, m.get(p + ".shared_expert.gate_proj.weight"),
                 m.get(p + ".shared_expert.up_proj.weight"),
                 m.get(p + ".shared_expert.down_proj.weight"))
    return y + shared, r


_BLOCKS = {
    "mixtral": _block_mixtral, "qwen2_moe": _block_qwen2_moe,
    "qwen3_moe": _block_qwen3_moe, "olmoe": _block_olmoe,
    "deepseek_v2": _block_deepseek_v2, "deepseek_v3": _block_deepseek_v3,
    "gpt_oss": _block_gpt_oss, "llama4_text": _block_llama4_text,
}

BUILDERS = {
    "mixtral": build_mixtral, "qwen2_moe": build_qwen2_moe,
    "qwen3_moe": build_qwen3_moe, "olmoe": build_olmoe,
    "deepseek_v2": build_deepseek_v2, "deepseek_v3": build_deepseek_v3,
    "gpt_oss": build_gpt_oss, "llama4_text": build_llama4_text,
}

# --------------------------------------------------------------------------
# LoRA (PEFT) adapters and the LoRA-mixture router
# --------------------------------------------------------------------------


def lora_scale(alpha, r, rslora):
    """PEFT LoraLayer.update_layer: lora_alpha / r, or / sqrt(r) (rsLoRA)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def add_base_projection(m, rng, layer, module, out_features, bias):
    """The frozen base weight the adapters wrap, e.g. q_proj [out, in]."""
    name = "model.layers.%d.%s" % (layer, module)
    m.add(name + ".weight", _rand(rng, (out_features, H), 1 / math.sqrt(H)))
    if bias:
        m.add(name + ".bias", _rand(rng, (out_features,), 0.5))


class Adapter:
    def __init__(self, rank, alpha, rslora, module="self_attn.q_proj"):
        self.rank, self.alpha, self.rslora, self.module = rank, alpha, rslora, module
        self.a = {}  # layer -> [r, in]
        self.b = {}  # layer -> [out, r]

    @property
    def scale(self):
        return lora_scale(self.alpha, self.rank, self.rslora)

    def write(self, directory):
        os.makedirs(directory, exist_ok=True)
        cfg = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM",
            "base_model_name_or_path": "moe-oracle/base",
            "r": self.rank, "lora_alpha": self.alpha, "use_rslora": self.rslora,
            "target_modules": [self.module.split(".")[-1]],
            "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True,
            "modules_to_save": None, "layers_to_transform": None,
            "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
        }
        with open(os.path.join(directory, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        tensors = {}
        for layer in sorted(self.a):
            p = "base_model.model.model.layers.%d.%s" % (layer, self.module)
            tensors[p + ".lora_A.weight"] = ("F32", self.a[layer])
            tensors[p + ".lora_B.weight"] = ("F32", self.b[layer])
        write_safetensors(os.path.join(directory, "adapter_model.safetensors"),
                          tensors, {"format": "pt"})


def random_adapter(rng, layers, out_features, rank, alpha, rslora):
    ad = Adapter(rank, alpha, rslora)
    for l in layers:
        ad.a[l] = _rand(rng, (rank, H), 1 / math.sqrt(H))
        # lora_B is zero at initialisation in PEFT; a trained one is not.
        ad.b[l] = _rand(rng, (out_features, rank), 0.5 / math.sqrt(rank))
    return ad


class LoraRouter:
    """layers.{L}.{module}.router.weight [N, in] (+ .bias [N]), float32;
    metadata top_k and norm_topk_prob."""

    def __init__(self, top_k=2, norm=True, module="self_attn.q_proj"):
        self.top_k, self.norm, self.module = top_k, norm, module
        self.w, self.b = {}, {}

    def write(self, path):
        tensors = {}
        for l in sorted(self.w):
            p = "layers.%d.%s.router" % (l, self.module)
            tensors[p + ".weight"] = ("F32", self.w[l])
            if l in self.b:
                tensors[p + ".bias"] = ("F32", self.b[l])
        write_safetensors(path, tensors, {
            "top_k": str(self.top_k),
            "norm_topk_prob": "true" if self.norm else "false"})

    def route(self, layer, x):
        logits = x @ self.w[layer].astype(np.float64).T
        if layer in self.b:
            logits = logits + self.b[layer].astype(np.float64)
        p = softmax(logits)
        ids, vals, _ = topk_rows(p, self.top_k)
        _, _, margin = topk_rows(logits, self.top_k)
        if self.norm:
            vals = vals / vals.sum(axis=1, keepdims=True)
        return Routing(ids, vals, margin < MARGIN, tiny=p < TINY)


def lora_forward(m, layer, module, adapters, x, router=None):
    """y = x W^T (+ b) + sum over chosen adapters of w_e * scale_e * B_e A_e x.
    Without a router every adapter has weight 1 (plain PEFT LoRA)."""
    x = np.asarray(x, dtype=np.float64)
    name = "model.layers.%d.%s" % (layer, module)
    y = x @ m.get(name + ".weight").T
    if name + ".bias" in m.tensors:
        y = y + m.get(name + ".bias")
    if router is None:
        n = len(adapters)
        r = Routing(np.tile(np.arange(n), (x.shape[0], 1)),
                    np.ones((x.shape[0], n)))
    else:
        r = router.route(layer, x)

    def delta(e, xs):
        ad = adapters[e]
        a = ad.a[layer].astype(np.float64)
        b = ad.b[layer].astype(np.float64)
        return ((xs @ a.T) @ b.T) * ad.scale
    extra = combine(x, r, delta)
    if extra is not None:
        y = y + extra
    return y, r

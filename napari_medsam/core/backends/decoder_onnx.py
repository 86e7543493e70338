"""The prompt encoder + mask decoder as one traceable module for ONNX export, reorganised for speed.

`segment_anything.utils.onnx.SamOnnxModel` picks the best of the multimask outputs for boxes,
which is wrong for LiteMedSAM (trained single-mask: mask 0). This wrapper returns mask 0 (or the
three multimask candidates with `multimask=True`), takes a dynamic number of prompts and points,
and a `mask_input` with a `has_mask_input` switch, exactly like the predictor's torch path.

It computes the same function as SAM's TwoWayTransformer + output upscaling, with the algebra
reordered so that few-token attention never projects the 4096 image tokens (exact up to float
rounding, checked against torch in the tests):
  * token->image: softmax((q Wk) X^T) X Wv^T instead of projecting every image token to k and v;
  * image->token: X (Wq^T k^T) and softmax(.) (v Wo^T) instead of projecting X to q and back;
  * the 2x2 stride-2 transposed convolutions become per-token MatMuls (no overlap), LayerNorm2d
    a plain LayerNorm over channels, and only the final one-channel mask is pixel-shuffled;
  * the final token->image attention runs only for the tokens that are read afterwards (the IoU
    token and the returned mask tokens): each query is independent there, so this is exact;
  * `ctx_rows` / `ctx_cols` pick the 64x64 embedding cells whose image tokens go through the
    transformer: all of them (exact), or only those near the box (token pausing; approximate:
    no profile uses it since it broke agreement on cardiac MRI, docs/performance.md);
  * `roi_rows` / `roi_cols` (inside the context) pick the cells to upscale: all of them for the
    exact path, the box region for `balanced` / `fast` ("decode only the region of the box");
  * without a mask (has_mask_input = 0) the caller passes a 4 x 4 dummy mask_input: its
    downscaled embedding (B, C, 1, 1) is multiplied by 0 and broadcasts, so the mask
    convolutions cost nothing on a first click.

Inputs: image_embeddings (1, 256, 64, 64); point_coords (B, K, 2) in encoder-input pixels;
point_labels (B, K): -1 padding, 0 negative, 1 positive, 2 / 3 box corners; mask_input
(B, 1, 256, 256) logits; has_mask_input (B,); roi_rows (R,), roi_cols (Q,), ctx_rows, ctx_cols:
int64 cell indices, each a contiguous range, the roi inside the context; dense_prompt
(B or 1, 256, 64 or 1, 64 or 1) and use_dense (B,): a dense prompt given directly instead of
the mask prompt (the automatic heads', `autoseg`); extra_tokens (B, T, 256): sparse prompt
tokens after the points (the heads' queries; T = 0 for clicks and boxes). Heads call it with
no points (K = 0), so one exported decoder serves both.
Outputs: low_res_logits (B, M, 4R, 4Q) and iou_predictions (B, M), M = 1 (or 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAMES = [
    "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
    "roi_rows", "roi_cols", "ctx_rows", "ctx_cols", "dense_prompt", "use_dense", "extra_tokens",
]
OUTPUT_NAMES = ["low_res_logits", "iou_predictions"]
DYNAMIC_AXES = {
    "point_coords": {0: "prompts", 1: "points"},
    "point_labels": {0: "prompts", 1: "points"},
    "mask_input": {0: "prompts", 2: "mask_height", 3: "mask_width"},
    "has_mask_input": {0: "prompts"},
    "roi_rows": {0: "rows"},
    "roi_cols": {0: "cols"},
    "ctx_rows": {0: "ctx_rows"},
    "ctx_cols": {0: "ctx_cols"},
    "dense_prompt": {0: "dense_prompts", 2: "dense_height", 3: "dense_width"},
    "use_dense": {0: "prompts"},
    "extra_tokens": {0: "prompts", 1: "extra_tokens"},
    "low_res_logits": {0: "prompts", 2: "height", 3: "width"},
    "iou_predictions": {0: "prompts"},
}


def _heads(att) -> tuple[int, int]:
    d = att.internal_dim // att.num_heads
    return att.num_heads, d


def token_to_image(att, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor):
    """`att(q_in, k_in, v_in)` for few queries over many keys, without projecting the keys.

    The key bias adds a constant per query row and cancels in the softmax; the value bias passes
    through because softmax rows sum to one.
    """
    h, d = _heads(att)
    b, t, c = q_in.shape
    q = att.q_proj(q_in).reshape(b, t, h, d) / math.sqrt(d)
    qk = torch.einsum("bthd,hdc->bhtc", q, att.k_proj.weight.reshape(h, d, c))
    logits = qk.reshape(b, h * t, c) @ k_in.transpose(1, 2)  # (B, H*T, N)
    sx = (torch.softmax(logits, dim=-1) @ v_in).reshape(b, h, t, c)
    out = torch.einsum("bhtc,hdc->bthd", sx, att.v_proj.weight.reshape(h, d, c))
    out = out + att.v_proj.bias.reshape(h, d)
    return att.out_proj(out.reshape(b, t, h * d))


def image_to_token(att, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor):
    """`att(q_in, k_in, v_in)` for many queries over few keys, folding the projections."""
    h, d = _heads(att)
    b, t, c = k_in.shape
    k = att.k_proj(k_in).reshape(b, t, h, d) / math.sqrt(d)
    v = att.v_proj(v_in).reshape(b, t, h, d)
    wq = att.q_proj.weight.reshape(h, d, c)
    m = torch.einsum("hdc,bthd->bcht", wq, k).reshape(b, c, h * t)
    bias = torch.einsum("hd,bthd->bht", att.q_proj.bias.reshape(h, d), k).reshape(b, 1, h * t)
    logits = (q_in @ m + bias).reshape(b, -1, h, t)
    probs = torch.softmax(logits, dim=-1).reshape(b, -1, h * t)  # (B, N, H*T)
    wo = att.out_proj.weight.reshape(c, h, d)
    vo = torch.einsum("bthd,chd->bhtc", v, wo).reshape(b, h * t, c)
    return probs @ vo + att.out_proj.bias


def two_way(transformer, keys: torch.Tensor, key_pe: torch.Tensor, point_embedding: torch.Tensor,
            read: list[int] | None = None):
    """SAM's TwoWayTransformer.forward on token-major image features (B, N, C).

    `read`: indices of the output tokens wanted (all when None); only those go through the final
    attention, whose queries do not interact (exact, and it saves most of that attention's work).
    """
    queries = point_embedding
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        k = keys + key_pe
        q = queries + point_embedding
        queries = layer.norm2(queries + token_to_image(layer.cross_attn_token_to_image, q, k, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + point_embedding
        keys = layer.norm4(keys + image_to_token(layer.cross_attn_image_to_token, k, q, queries))
    if read is not None:
        queries, point_embedding = queries[:, read], point_embedding[:, read]
    q = queries + point_embedding
    attn = token_to_image(transformer.final_attn_token_to_image, q, keys + key_pe, keys)
    return transformer.norm_final_attn(queries + attn), keys


def _convt_as_matmul(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2 stride-2 transposed conv as (C_in, 4*C_out) weights, columns ordered (i, j, o)."""
    c_in, c_out = conv.weight.shape[:2]
    w = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    return w, conv.bias.repeat(4)


class DecoderOnnx(nn.Module):
    """Prompt encoding + two-way transformer + upscaling; mask 0 only (or masks 1..3).

    Args:
        prompt_encoder: segment_anything PromptEncoder of the model.
        mask_decoder: segment_anything MaskDecoder (adapter weights merged, see `export`).
        image_size: encoder input side in pixels (point coordinates are in this frame).
        multimask: return the three multimask candidates instead of mask 0.
    """

    def __init__(self, prompt_encoder, mask_decoder, image_size: int, multimask: bool = False):
        super().__init__()
        self.pe = prompt_encoder
        self.dec = mask_decoder
        self.image_size = float(image_size)
        self.mask_ids = [1, 2, 3] if multimask else [0]
        up = mask_decoder.output_upscaling
        if not (isinstance(up[0], nn.ConvTranspose2d) and up[0].stride == (2, 2)
                and up[0].kernel_size == (2, 2) and isinstance(up[3], nn.ConvTranspose2d)):
            raise ValueError("Unexpected mask decoder upscaling layout; cannot export it.")
        self.ln = up[1]
        self.act1, self.act2 = up[2], up[4]
        self.convs = (up[0], up[3])
        pe = prompt_encoder.get_dense_pe().detach().clone()  # (1, C, h, w)
        self.side = pe.shape[-1]
        self.register_buffer("dense_pe", pe.flatten(2).transpose(1, 2).contiguous())

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sparse embeddings exactly as PromptEncoder._embed_points/_embed_boxes compute them."""
        emb = self.pe.pe_layer._pe_encoding((coords + 0.5) / self.image_size)
        lab = labels.unsqueeze(-1)
        emb = emb * (lab != -1) + self.pe.not_a_point_embed.weight * (lab == -1)
        for i in range(self.pe.num_point_embeddings):
            emb = emb + self.pe.point_embeddings[i].weight * (lab == i)
        return emb

    def embed_masks(self, mask_input: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
        has = has_mask.reshape(-1, 1, 1, 1)
        no_mask = self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has * self.pe.mask_downscaling(mask_input) + (1 - has) * no_mask

    def context(self, tokens: torch.Tensor, rows, cols):
        """The tokens of the context cells, token-major (whole rows of C floats per gathered
        cell: gathering channel-first maps one float at a time and cost 5 ms a click)."""
        b, _, c = tokens.shape
        x = tokens.reshape(b, self.side, self.side, c).index_select(1, rows).index_select(2, cols)
        return x.reshape(b, -1, c), (x.shape[1], x.shape[2])

    def upscale(self, keys: torch.Tensor, hyper: torch.Tensor, grid, rows, cols) -> torch.Tensor:
        """Output upscaling + hypernetwork product on the chosen cells; (B, M, 4R, 4Q).

        `keys` holds the context grid's tokens (`grid` = its rows, cols); `rows` / `cols` index it.
        """
        b, _, c = keys.shape
        x = keys.reshape(b, grid[0], grid[1], c).index_select(1, rows).index_select(2, cols)
        r, q = x.shape[1], x.shape[2]
        w1, b1 = _convt_as_matmul(self.convs[0])
        w2, b2 = _convt_as_matmul(self.convs[1])
        c1, c2 = w1.shape[1] // 4, w2.shape[1] // 4
        y = (x.reshape(b, r * q, c) @ w1 + b1).reshape(b, r * q * 4, c1)
        y = self.act1(F.layer_norm(y, (c1,), self.ln.weight, self.ln.bias, self.ln.eps))
        y = self.act2((y @ w2 + b2).reshape(b, r * q * 16, c2))
        m = (y @ hyper.transpose(1, 2)).reshape(b, r, q, 2, 2, 2, 2, -1)  # (b,y,x,i1,j1,i2,j2,M)
        return m.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, -1, 4 * r, 4 * q)

    def forward(
        self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input,
        roi_rows, roi_cols, ctx_rows, ctx_cols, dense_prompt, use_dense, extra_tokens,
    ):
        dec = self.dec
        sparse = self.embed_points(point_coords, point_labels)
        use = use_dense.reshape(-1, 1, 1, 1)
        dense = use * dense_prompt + (1 - use) * self.embed_masks(mask_input, has_mask_input)
        src = image_embeddings + dense  # (B, C, h, w)
        b, c = src.shape[:2]
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(b, -1, -1), sparse, extra_tokens], dim=1)
        keys = src.reshape(b, c, -1).transpose(1, 2)
        keys, grid = self.context(keys, ctx_rows, ctx_cols)  # the tokens that are not paused
        pe, _ = self.context(self.dense_pe, ctx_rows, ctx_cols)
        read = [0, *(1 + i for i in self.mask_ids)]  # IoU token, then the returned masks' tokens
        hs, keys = two_way(dec.transformer, keys, pe, tokens, read)
        mlps = dec.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](hs[:, 1 + j]) for j, i in enumerate(self.mask_ids)], dim=1)
        masks = self.upscale(keys, hyper, grid, roi_rows - ctx_rows[:1], roi_cols - ctx_cols[:1])
        iou = dec.iou_prediction_head(hs[:, 0])[:, self.mask_ids[0] : self.mask_ids[-1] + 1]
        return masks, iou


def example_inputs(image_size: int, side: int = 64):
    """Dummy inputs with the right shapes for tracing (3 points, full region)."""
    return (
        torch.randn(1, 256, side, side),
        torch.rand(1, 3, 2) * image_size,
        torch.tensor([[1.0, 2.0, 3.0]]),
        torch.randn(1, 1, 4 * side, 4 * side),
        torch.ones(1),
        torch.arange(side),
        torch.arange(side),
        torch.arange(side),
        torch.arange(side),
        torch.zeros(1, 256, 1, 1),
        torch.zeros(1),
        torch.zeros(1, 1, 256),
    )

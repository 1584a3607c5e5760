"""Multi-scale residual vector quantizer (VAR_SPEC §2, §5), one codebook shared by all scales.

Tokenising a latent map f (B, Cvae, H, W), H = W = patch_nums[-1]:

    f_rest = f, f_hat = 0
    for scale k with side pn:
        r_k   = nearest code (Euclidean) of area-down(f_rest, pn)      # (B, pn*pn) indices
        h     = phi_k(bicubic-up(embedding(r_k), H))                  # no resampling at the last scale
        f_hat += h ; f_rest -= h

phi(h) = (1 - r) h + r conv3x3(h) with r = quant_resi (0.5). ``share_quant_resi`` convs are
shared across scales: scale k (of K) uses the conv whose tick is nearest to k / (K - 1).

Parameter and buffer names follow the official release so its checkpoint loads directly:
``embedding.weight``, ``quant_resi.qresi_ls.<i>.{weight,bias}``, ``ema_vocab_hit_SV``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv3x3(h)."""

    def __init__(self, C: int, resi_ratio: float):
        super().__init__(C, C, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.resi_ratio) + super().forward(h_BChw).mul_(self.resi_ratio)


class PhiShared(nn.Module):
    """K phi convs shared over the scales; ``self[at]`` picks the one whose tick is nearest ``at`` in [0, 1].

    Ticks are the official ones: linspace(1/(3K), 1 - 1/(3K), K) for K == 4, else
    linspace(1/(2K), 1 - 1/(2K), K). With K == 4 and 10 scales this gives scales 0-1 -> phi0,
    2-4 -> phi1, 5-6 -> phi2, 7-9 -> phi3. (The official code names the K == 1 case
    ``quant_resi.qresi``; here it is always ``quant_resi.qresi_ls.<i>``.)
    """

    def __init__(self, C: int, K: int, resi_ratio: float):
        super().__init__()
        make = (lambda: Phi(C, resi_ratio)) if abs(resi_ratio) > 1e-6 else nn.Identity
        self.qresi_ls = nn.ModuleList([make() for _ in range(K)])
        # numpy float64 exactly as the official code: some scales sit on exact ties (2/9 with
        # K=4), which rounding in np.linspace decides; a tensor would also break the meta device
        lo = 1 / 3 / K if K == 4 else 1 / 2 / K
        self.ticks = np.linspace(lo, 1 - lo, K)

    def index_for(self, at_0_1: float) -> int:
        return int(np.argmin(np.abs(self.ticks - at_0_1)))

    def __getitem__(self, at_0_1: float) -> nn.Module:
        return self.qresi_ls[self.index_for(at_0_1)]


class MultiScaleQuantizer(nn.Module):
    """The official ``VectorQuantizer2`` (using_znorm False): multi-scale residual VQ.

    ``forward(f)`` is the tokenizer-training path (straight-through f_hat, VQ loss, usages);
    the ``*_idx*`` / ``*fhat*`` helpers are what the VAR trainer and sampler need. All code
    lookups and resampling run in fp32 regardless of autocast, as the official code does.
    """

    def __init__(self, vocab_size: int, Cvae: int, patch_nums: Sequence[int], beta: float = 0.25,
                 quant_resi: float = 0.5, share_quant_resi: int = 4):
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, Cvae
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.beta = beta
        K = share_quant_resi if share_quant_resi > 0 else len(self.patch_nums)  # 0: one phi per scale
        self.quant_resi = PhiShared(Cvae, K, quant_resi)
        # per-scale EMA of code hit counts (official name and shape); updated in training mode
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.record_hit = 0
        self.embedding = nn.Embedding(vocab_size, Cvae)
        # official init_vocab(eini=-1): uniform(-1/V, 1/V)
        nn.init.uniform_(self.embedding.weight, -1.0 / vocab_size, 1.0 / vocab_size)
        # hit counts (K, V) of the most recent forward(); a tokenizer trainer reads it to revive dead codes
        self.last_hits_SV: Optional[torch.Tensor] = None

    # ---------------------------------------------------------------- small pieces
    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def phi(self, si: int) -> nn.Module:
        """The phi conv used at scale index ``si``."""
        K = self.num_scales
        return self.quant_resi[si / (K - 1) if K > 1 else 0.0]

    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (squared Euclidean distance), (N,) long."""
        w_VC = self.embedding.weight.float()
        d_NV = torch.addmm(z_NC.pow(2).sum(1, keepdim=True) + w_VC.pow(2).sum(1), z_NC, w_VC.t(),
                           beta=1, alpha=-2)
        return d_NV.argmin(dim=1)

    def embed_map(self, idx_Bl: torch.Tensor, pn: int) -> torch.Tensor:
        """Code indices (B, pn*pn) -> embedding map (B, Cvae, pn, pn)."""
        B = idx_Bl.shape[0]
        if idx_Bl.dtype not in (torch.int64, torch.int32):  # e.g. an int16 token cache
            idx_Bl = idx_Bl.long()
        return self.embedding(idx_Bl).transpose(1, 2).reshape(B, self.Cvae, pn, pn)

    def _up_phi(self, si: int, h_BCpp: torch.Tensor) -> torch.Tensor:
        """phi_si(bicubic-up(h)) to the full latent size; no resampling at the last scale."""
        H = self.patch_nums[-1]
        if si != self.num_scales - 1:
            h_BCpp = F.interpolate(h_BCpp, size=(H, H), mode="bicubic")
        return self.phi(si)(h_BCpp)

    # ---------------------------------------------------------------- tokenizer training
    def forward(self, f_BChw: torch.Tensor):
        """Returns (f_hat straight-through, vq_loss, usages).

        vq_loss = mean_k [beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2] (MSE means),
        f_hat_k being the accumulated reconstruction after scale k. The first term trains the
        encoder (commitment), the second the codebook and phi convs. The returned f_hat is
        sg(f_hat) - sg(f) + f, so decoder gradients reach the encoder unchanged.

        usages: list over scales of the fraction (in [0, 1]) of the codebook hit at least once
        by this batch at that scale. Raw counts of this call are in ``self.last_hits_SV``.
        """
        in_dtype = f_BChw.dtype
        f = f_BChw.float()
        B, C, H, W = f.shape
        f_nograd = f.detach()
        f_rest = f_nograd.clone()
        f_hat = torch.zeros_like(f_rest)
        K = self.num_scales
        loss = f.new_zeros(())
        hits = []
        with torch.autocast(device_type=f.device.type, enabled=False):
            for si, pn in enumerate(self.patch_nums):
                z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
                idx_N = self.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C))
                hit_V = torch.bincount(idx_N, minlength=self.vocab_size).float()
                hits.append(hit_V)
                h = self._up_phi(si, self.embed_map(idx_N.view(B, pn * pn), pn))
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_nograd)
            loss = loss / K
        hits_SV = torch.stack(hits)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(hits_SV)
        self.last_hits_SV = hits_SV
        if self.training:
            with torch.no_grad():
                if self.record_hit == 0:
                    self.ema_vocab_hit_SV.copy_(hits_SV)
                else:
                    m = 0.9 if self.record_hit < 100 else 0.99
                    self.ema_vocab_hit_SV.mul_(m).add_(hits_SV, alpha=1 - m)
                self.record_hit += 1
        usages = (hits_SV > 0).float().mean(dim=1).tolist()
        f_hat_st = (f_hat.detach() - f_nograd) + f
        return f_hat_st.to(in_dtype), loss, usages

    # ---------------------------------------------------------------- tokens
    @torch.no_grad()
    def f_to_idx(self, f_BChw: torch.Tensor, to_fhat: bool = False) -> list[torch.Tensor]:
        """Latent f -> list of K index tensors (B, pn*pn); with ``to_fhat`` the accumulated f_hat after each scale."""
        f_rest = f_BChw.detach().float().clone()
        B, C, H, W = f_rest.shape
        f_hat = torch.zeros_like(f_rest)
        K = self.num_scales
        out = []
        with torch.autocast(device_type=f_rest.device.type, enabled=False):
            for si, pn in enumerate(self.patch_nums):
                z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
                idx_Bl = self.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
                h = self._up_phi(si, self.embed_map(idx_Bl, pn))
                f_hat.add_(h)
                f_rest.sub_(h)
                out.append(f_hat.clone() if to_fhat else idx_Bl)
        return out

    def idx_to_fhat(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over the given scales of phi_k(up(embedding(r_k))) -> f_hat (B, Cvae, H, H).

        Fewer than K scales gives the partial reconstruction after those scales.
        """
        H = self.patch_nums[-1]
        B = idx_list[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, H, H, dtype=torch.float32)
        with torch.autocast(device_type=f_hat.device.type, enabled=False):
            for si, idx_Bl in enumerate(idx_list):
                f_hat = f_hat + self._up_phi(si, self.embed_map(idx_Bl, self.patch_nums[si]).float())
        return f_hat

    def idx_to_var_input(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of VAR: (B, L - pn0^2, Cvae).

        For k = 0..K-2: f_hat += phi_k(up(embedding(r_k))), then area-down f_hat to pn_{k+1};
        the K-1 maps are flattened row-major and concatenated.
        """
        H = self.patch_nums[-1]
        B = idx_list[0].shape[0]
        f_hat = self.embedding.weight.new_zeros(B, self.Cvae, H, H, dtype=torch.float32)
        nxt = []
        with torch.autocast(device_type=f_hat.device.type, enabled=False):
            for si in range(self.num_scales - 1):
                f_hat = f_hat + self._up_phi(si, self.embed_map(idx_list[si], self.patch_nums[si]).float())
                pn = self.patch_nums[si + 1]
                nxt.append(F.interpolate(f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2))
        if not nxt:
            return f_hat.new_zeros(B, 0, self.Cvae)
        return torch.cat(nxt, dim=1)

    def next_var_input(self, si: int, f_hat: torch.Tensor, h_BCpp: torch.Tensor):
        """One incremental sampling step (official get_next_autoregressive_input).

        h_BCpp: the chosen code embeddings of scale ``si`` as a map (B, Cvae, pn_si, pn_si)
        (e.g. ``embed_map(idx_Bl, pn)``, or soft embeddings). Returns (f_hat, next_input) where
        f_hat is updated (not in place) and next_input is (B, pn_{si+1}^2, Cvae) for VAR's next
        scale, or None after the last scale.
        """
        with torch.autocast(device_type=f_hat.device.type, enabled=False):
            f_hat = f_hat + self._up_phi(si, h_BCpp.float())
            if si == self.num_scales - 1:
                return f_hat, None
            pn = self.patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)

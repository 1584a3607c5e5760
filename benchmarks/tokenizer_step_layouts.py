"""Benchmark: a cpu32 tokenizer training step (batch 16) in NCHW (the original recipe's layout)
against channels_last (unit_gain's), in interleaved blocks of 20 steps so both see the same load.

    .venv/bin/python benchmarks/tokenizer_step_layouts.py <threads> [blocks]
"""
import sys, time, copy, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from varscale.models.vqvae import VQVAE
from varscale.models.presets import get_preset
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
v = VQVAE.from_preset(get_preset("cpu32")).train()
vc = copy.deepcopy(v).to(memory_format=torch.channels_last)
oa, oc = torch.optim.Adam(v.parameters(), 1e-4), torch.optim.Adam(vc.parameters(), 1e-4)
x = torch.rand(16, 3, 32, 32) * 2 - 1
xc = x.contiguous(memory_format=torch.channels_last)
def block(m, o, xx, n=20):
    t = time.time()
    for _ in range(n):
        rec, vq, _ = m(xx); loss = F.mse_loss(rec, xx) + vq; o.zero_grad(); loss.backward(); o.step()
    return (time.time() - t) / n
block(v, oa, x, 3); block(vc, oc, xc, 3)
r = []
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    a = block(v, oa, x); c = block(vc, oc, xc); r.append(a / c)
    print(f"nchw {a*1e3:.0f} ms/step channels_last {c*1e3:.0f} ms/step ratio {a/c:.2f}", flush=True)
print(f"median ratio {np.median(r):.2f}")

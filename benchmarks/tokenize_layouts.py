"""Benchmark: a study's tokenizer encoding every image of the study three ways, NCHW at batch 500
(the cache's path for every tokenizer but unit_gain), channels_last at batch 500 (unit_gain's) and
at batch 1000, in interleaved 5,000-image chunks so every way sees the same load.

    .venv/bin/python benchmarks/tokenize_layouts.py <study-dir with a trained tokenizer> <threads>

Prints seconds per chunk, the speed-up ratios and how many tokens differ from NCHW's.
"""
import sys, time, numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from varscale.config import load_study
from varscale.data import make_dataset
from varscale.tokenizer.checkpoint import load_tokenizer
study = sys.argv[1]; torch.set_num_threads(int(sys.argv[2]))
cfg = load_study(study)
vae = load_tokenizer(study, cfg).eval()
import copy
vcl = copy.deepcopy(vae).to(memory_format=torch.channels_last)
def enc(v, x, bs, cl):
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], bs):
            xb = x[s:s + bs]
            if cl: xb = xb.contiguous(memory_format=torch.channels_last)
            out.append(torch.cat([i.reshape(i.shape[0], -1) for i in v.img_to_idx(xb)], 1))
    return torch.cat(out)
ta = tc = 0.0; ndiff = ntot = 0; ratios = []
for split in ("train", "val"):
    ds = make_dataset(cfg.data, split)
    for s in range(0, len(ds), 5000):
        x = torch.as_tensor(ds.batch(np.arange(s, min(s + 5000, len(ds))))[0])
        t = time.time(); a = enc(vae, x, 500, False); da = time.time() - t
        t = time.time(); b = enc(vcl, x, 500, True); db = time.time() - t
        t = time.time(); c = enc(vcl, x, 1000, True); dc = time.time() - t
        ta += da; tc += dc; ratios.append((da / db, da / dc))
        ndiff += int((a != c).sum()) + int((a != b).sum()); ntot += a.numel()
        print(f"{split} {s}: nchw/500 {da:.2f}s cl/500 {db:.2f}s cl/1000 {dc:.2f}s ratios {da/db:.2f} {da/dc:.2f} diff tokens {int((a != b).sum())} {int((a != c).sum())}", flush=True)
r = np.array(ratios)
print(f"TOTAL nchw/500 {ta:.1f}s cl/1000 {tc:.1f}s median ratio nchw/500 over cl/500 {np.median(r[:,0]):.2f}, over cl/1000 {np.median(r[:,1]):.2f}; tokens differing {ndiff} of {2*ntot}")

"""Writers of the official VAR trainer's output (github.com/FoundationVision/VAR), for tests.

``write_run(out_dir, depth, epochs, validations, ...)`` writes what one run of the official
``train.py`` leaves in its ``local_output`` folder, following its code:

- ``log.txt`` as ``Args.dump_log`` (utils/arg_util.py) writes it after every epoch: when
  "1/" occurs in ``cur_ep`` ("k/K": epochs 1, 11, 21, ...) the file is opened with "w" and the
  JSON header is dumped with ``indent=0``, then the epoch's dict is appended as ``f"{d}\\n"``;
  the validation fields hold the latest validation (None before the first);
- TensorBoard events as ``misc.TensorboardLogger`` with torch's ``SummaryWriter.add_scalar``:
  ``AR_ep_loss/{L_mean, L_tail, acc_mean, acc_tail}`` every epoch at step k, plus
  ``vL_mean, vL_tail, vacc_mean, vacc_tail`` at validation epochs (k % 10 == 0 or k == K),
  ``AR_z_burnout/rest_hours``, and iteration-wise ``AR_opt_lr/lr_max/sche_tlr``; each value a
  ``simple_value`` (float32), in ``tb-VARd<depth>__pn<pn>__b<bs>ep<K>adamlr0.0001wd0.05/``.

The event file is a TFRecord stream of Event protocol buffers, encoded here by hand.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from analysis.tfevents import encode_record


def official_validation_epochs(K: int) -> list[int]:
    return [k for k in range(1, K + 1) if k % 10 == 0 or k == K]


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, tag: str | None = None, value: float | None = None,
          file_version: str | None = None) -> bytes:
    """One Event: wall_time (1, double), step (2), file_version (3) or summary (5) with one
    Summary.Value of tag (1) and simple_value (2, float32)."""
    b = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        b += _ld(3, file_version.encode())
    if tag is not None:
        val = _ld(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
        b += _ld(5, _ld(1, val))
    return b


def tb_name(depth: int, pn: str, bs: int, ep: int) -> str:
    return f"tb-VARd{depth}__pn{pn}__b{bs}ep{ep}adamlr0.0001wd0.05"


def write_run(out: Path, depth: int, epochs: int, validations: dict[int, tuple[float, float, float, float]],
              bs: int = 768, pn: str = "1_2_3_4_5_6_8_10_13_16", cmd_style: str = "=", last_epoch: int | None = None,
              t0: float = 1.7e9, log: bool = True, tensorboard: bool = True) -> Path:
    """One official run in ``out`` (its local_output): ``validations`` maps each validation epoch
    k to (vL_mean, vL_tail, vacc_mean, vacc_tail), accuracies in %. ``last_epoch``: the run
    stops there (default K). Returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    K = epochs
    last = last_epoch or K
    tb = out / tb_name(depth, pn, bs, K)
    sep = "=" if cmd_style == "=" else " "
    cmd = f"--depth{sep}{depth} --bs{sep}{bs} --ep{sep}{K} --fp16{sep}1 --alng{sep}1e-3 --wpe{sep}0.1 " \
          f"--data_path{sep}/data/imagenet" + (f" --pn{sep}{pn}" if pn != "1_2_3_4_5_6_8_10_13_16" else "")
    header = {"is_master": True, "name": "text", "cmd": cmd, "commit": "0" * 40, "branch": "main",
              "tb_log_dir_path": str(tb)}
    iters = -(-1281167 // bs)
    records = [event(t0, 0, file_version="brain.Event:2")]
    v = dict(vL_mean=None, vL_tail=None, vacc_mean=None, vacc_tail=None)
    t = t0
    for k in range(1, last + 1):
        t += 3600.0
        L_mean, L_tail = 6.0 - 0.01 * k, 7.0 - 0.01 * k
        acc_mean, acc_tail = 3.0 + 0.05 * k, 2.0 + 0.04 * k
        ep_loss = dict(L_mean=L_mean, L_tail=L_tail, acc_mean=acc_mean, acc_tail=acc_tail)
        if k % 10 == 0 or k == K:
            vm, vt, am, at = validations[k]
            v = dict(vL_mean=vm, vL_tail=vt, vacc_mean=am, vacc_tail=at)
            ep_loss.update(v)
        records.append(event(t - 1800.0, (k - 1) * iters + 499, "AR_opt_lr/lr_max/sche_tlr", 3e-4))
        for key, val in ep_loss.items():
            records.append(event(t, k, f"AR_ep_loss/{key}", val))
        records.append(event(t, k, "AR_z_burnout/rest_hours", float(K - k)))
        cur_ep = f"{k}/{K}"
        d = {"it": f"{iters}/{iters}", "ep": cur_ep, "lr": 3e-4 * (1 - k / K), "wd": 0.05,
             "grad_norm": 1.25, "L_mean": L_mean, "L_tail": L_tail, "acc_mean": acc_mean, "acc_tail": acc_tail,
             **v, "remain_time": "1:00:00", "finish_time": "2024-04-01 12:00"}
        if log:
            if "1/" in cur_ep:  # Args.dump_log: the first dump of a "1/" epoch rewrites the file
                with open(out / "log.txt", "w") as fp:
                    json.dump(header, fp, indent=0)
                    fp.write("\n")
            with open(out / "log.txt", "a") as fp:
                fp.write(f"{d}\n")
    if tensorboard:
        tb.mkdir(exist_ok=True)
        (tb / f"events.out.tfevents.{int(t0)}.host.123.0__0401_1200").write_bytes(
            b"".join(encode_record(r) for r in records))
    return out

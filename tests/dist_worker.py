"""Worker of tests/test_distributed.py; run it under torchrun, on CPU (gloo) or on one GPU per process (NCCL):

    torchrun --nproc_per_node 2 tests/dist_worker.py OUT.json                       # CPU, gloo (make test)
    NCCL_NVLS_ENABLE=0 torchrun --standalone --nproc_per_node 2 tests/dist_worker.py OUT.json --device cuda

Each process takes its share of one fixed batch and runs train.py's step through DDP (accelerate.prepare) with
negatives all-gathered; every process then runs the same step alone on the whole batch (gather off) from a copy
of the same initial model, and rank 0 writes the loss and gradient differences to OUT.json and checks them:
loss within rel 1e-5, every gradient within TOLERANCE[device] x max(1, largest gradient) (CPU: 1e-5; CUDA: 1e-4,
fp32 with TF32 off: reductions run in another order across GPUs). Exit code 1 when a case is outside them.
Any number of processes that divides the batch of 8 (1, 2, 4, 8) works.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from train.config import TrainConfig  # noqa: E402
from train.data import Collator, SpeechPairs, compute_features, synthetic_rows  # noqa: E402
from train.model import PairEncoder, load_model, select_trainable  # noqa: E402
from train.speech_data import group_id  # noqa: E402
from train.step import forward_backward, step_loss  # noqa: E402
from wolofmrl.gradcache import slice_batch  # noqa: E402
from wolofmrl.losses import MatryoshkaInfoNCE  # noqa: E402

TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}  # max |grad difference| / max(1, max |grad|)
CASES = [  # (name, stage, strategy, GradCache chunk)
    ("fusion", "speech", "fusion", 0),
    ("fusion-gradcache", "speech", "fusion", 2),
    ("dual", "speech", "dual", 0),
    ("text", "text", "fusion", 0),
]


def batch_for(cfg, processor, rows):
    if cfg.stage == "text":
        items = [{"query": r["wo_text"], "doc": r["fr_text"], "group": group_id(r["sentence_id"])} for r in rows]
    else:
        data = SpeechPairs(rows, compute_features(rows, processor, 0))
        items = [data[i] for i in range(len(rows))]
    return Collator(processor, cfg.stage, 64, need_transcript=cfg.stage == "speech", whisper=True)(items)


def criteria(cfg, dims, gather):
    distill = dict(distill="cosine", distill_weight=0.3) if cfg.stage == "speech" else {}
    main = MatryoshkaInfoNCE(dims, gather=gather, **distill)
    wo = MatryoshkaInfoNCE(dims, gather=gather) if cfg.stage == "speech" else None
    return lambda out, batch: step_loss(out, batch, main, wo, 0.5)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def main(out_path: str, device: str = "cpu"):
    if device == "cuda":  # exact fp32 matmuls: TF32 would dominate the differences
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    accelerator = Accelerator(cpu=device == "cpu")
    rank, world = accelerator.process_index, accelerator.num_processes
    assert world >= 2 and 8 % world == 0, f"run under torchrun --nproc_per_node 2, 4 or 8 (got {world})"
    rows = synthetic_rows(8, "train", seed=0)
    rows[5]["sentence_id"] = rows[1]["sentence_id"]  # one sentence on two processes: masked as a negative
    share = 8 // world
    report = {"world": world, "device": device, "backend": str(accelerator.distributed_type),
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "tolerance": TOLERANCE[device]}
    bases = {}
    for name, stage, strategy, chunk in CASES:
        cfg = TrainConfig(stage=stage, model={"tiny": {"strategy": strategy, "num_prompt_tokens": 2}},
                          logit_scale_init=10.0, batch_size=4)
        if strategy not in bases:
            bases[strategy] = load_model(cfg)[:2]
        model, processor = copy.deepcopy(bases[strategy][0]).to(accelerator.device), bases[strategy][1]
        select_trainable(model, cfg)
        if stage == "speech":
            model.logit_scale.data.fill_(torch.log(torch.tensor(10.0)))
        reference = copy.deepcopy(model)
        full = {k: v.to(accelerator.device) for k, v in batch_for(cfg, processor, rows).items()}
        dims = model.config.matryoshka_dims
        half = slice(rank * share, rank * share + share)
        need_teacher = stage == "speech"

        encoder = accelerator.prepare(PairEncoder(model, cfg, need_teacher))
        loss, _ = forward_backward(encoder, slice_batch(full, half), criteria(cfg, dims, True), accelerator, 1.0,
                                   True, chunk)
        dist_loss = accelerator.reduce(loss.reshape(1), "mean").item()
        dist_grads = grads(model)  # DDP has averaged them

        ref_encoder = PairEncoder(reference, cfg, need_teacher)
        ref_loss, _ = forward_backward(ref_encoder, full, criteria(cfg, dims, False), accelerator, 1.0, True, 0)
        ref_grads = grads(reference)
        report[name] = {
            "loss_2proc": dist_loss, "loss_1proc": ref_loss.item(),
            "max_abs_grad_diff": max((dist_grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads),
            "max_abs_grad": max(g.abs().max().item() for g in ref_grads.values()),
            "params": sorted(ref_grads),
        }
        r = report[name]
        r["ok"] = (abs(r["loss_2proc"] - r["loss_1proc"]) <= 1e-5 * abs(r["loss_1proc"]) and
                   r["max_abs_grad_diff"] <= TOLERANCE[device] * max(1.0, r["max_abs_grad"]))
    ok = all(report[name]["ok"] for name, *_ in CASES)
    if rank == 0:
        Path(out_path).write_text(json.dumps(report, indent=1))
        for name, *_ in CASES:
            r = report[name]
            print(f"{name:18s} loss {world} proc {r['loss_2proc']:.6f} vs 1 proc {r['loss_1proc']:.6f}; max |grad diff| "
                  f"{r['max_abs_grad_diff']:.2e} (max |grad| {r['max_abs_grad']:.2e}) {'ok' if r['ok'] else 'OUT'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="JSON report written by rank 0")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    main(args.out, args.device)

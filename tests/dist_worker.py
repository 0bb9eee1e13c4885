"""Worker of tests/test_distributed.py; run it under torchrun (gloo on CPU):

    torchrun --nproc_per_node 2 tests/dist_worker.py OUT.json

Each process takes its half of one fixed batch and runs train.py's step through DDP (accelerate.prepare) with
negatives all-gathered; every process then runs the same step alone on the whole batch (gather off) from a copy
of the same initial model, and rank 0 writes the loss and gradient differences to OUT.json.
"""

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


def main(out_path: str):
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    assert world == 2, f"run under torchrun --nproc_per_node 2 (got {world} process)"
    rows = synthetic_rows(8, "train", seed=0)
    rows[5]["sentence_id"] = rows[1]["sentence_id"]  # one sentence on both processes: masked as a negative
    report = {"world": world}
    bases = {}
    for name, stage, strategy, chunk in CASES:
        cfg = TrainConfig(stage=stage, model={"tiny": {"strategy": strategy, "num_prompt_tokens": 2}},
                          logit_scale_init=10.0, batch_size=4)
        if strategy not in bases:
            bases[strategy] = load_model(cfg)[:2]
        model, processor = copy.deepcopy(bases[strategy][0]), bases[strategy][1]
        select_trainable(model, cfg)
        if stage == "speech":
            model.logit_scale.data.fill_(torch.log(torch.tensor(10.0)))
        reference = copy.deepcopy(model)
        full = batch_for(cfg, processor, rows)
        dims = model.config.matryoshka_dims
        half = slice(rank * 4, rank * 4 + 4)
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
    if rank == 0:
        Path(out_path).write_text(json.dumps(report, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])

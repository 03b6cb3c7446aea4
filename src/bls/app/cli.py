"""The ``bls-prune`` command (also ``python -m bls``).

``bls-prune demo``
    Trains a small CNN on scikit-learn's embedded 8x8 digits once on full data and once with
    each pruning method, prints a comparison table and writes ``results.json`` and
    ``results.png`` into a new output folder. No data, no flags, no download.
``bls-prune train``
    One run with any method on ``digits``, CIFAR-10/100 (torchvision's on-disk format) or an
    image folder.

Bad flags and missing data end with one ``bls-prune: error: ...`` line naming the flag, what
is allowed and where data was looked for, and exit status 2; never a traceback. ``bls-prune``
alone lists the commands and ends the same way. ``--help`` shows every flag with its default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
from torch.utils.data import Subset

from bls import __version__
from bls._checks import check_fraction, check_int, check_positive
from bls.app.data import DATA_SOURCES, BadDataError, DataInfo, DataNotFoundError, load_data
from bls.app.models import MODEL_NAMES, build_model
from bls.app.train import RunConfig, RunResult, build_handler, train
from bls.methods import Full, SeTa, lookup_method, method_name, method_names

__all__ = ["DEMO_METHODS", "main"]

T = TypeVar("T")

PROG = "bls-prune"
# The documented methods of the registry, with their aliases (RandomPrune), in any case.
CLI_METHODS = method_names()
# The demo's methods and their settings, keyed by registry names (method_name(key) == key).
# The prune ratios are chosen so that every pruning method saves roughly a quarter of the
# sample visits (SeTa: the BLS paper's 0.1, 5 groups, window 0.9), which makes the accuracies
# comparable at equal cost.
DEMO_METHODS: dict[str, dict[str, Any]] = {
    "Full": {},
    "BLS_InfoBatch": {"prune_ratio": 0.5},
    "BLS_SeTa": {"prune_ratio": 0.1, "num_group": 5, "window_scale": 0.9},
    "InfoBatch": {"prune_ratio": 0.5},
    "SeTa": {"prune_ratio": 0.1, "num_group": 5, "window_scale": 0.9},
    "RandomPrune": {"prune_ratio": 0.3},
}
DEMO_BUDGETS = {"full": 15, "small": 3}
# The demo compares methods at one equal budget (the fair comparison): a quarter of the
# sample visits saved, fixed before training. --prune-ratio switches to per-method ratios.
DEMO_TARGET = 0.25
# The commands and their one-line summaries, as ``bls-prune --help`` and ``bls-prune`` list them.
COMMANDS = {
    "demo": "compare every method on the embedded digits data (about a minute on a laptop)",
    "train": "one training run with any method and data set",
}


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to every flag's help, unless the help already states it.

    Flags whose default is not a plain value (``None`` for "decided later", a switch) say in
    words what happens without them; the formatter then leaves their help as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default:" in text or action.default is None or action.nargs == 0:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line with the flag is easier to read.
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------- value checks


def _say(*parts: object, **options: Any) -> None:
    """The command line's console output; the library modules log instead of printing."""
    print(*parts, **options)  # the one place the program writes to the console


def _flag_type(parse: Callable[[str], Any], check: Callable[[str, Any], T]) -> Callable[[str], T]:
    """An argparse type: ``parse`` the text, then the library's ``check`` decides.

    Text that does not parse goes to the check as it is, so the check's own message for a value
    of the wrong type ("expected a number in [0, 1), got 'half'") is the one shown.
    """

    def convert(text: str) -> T:
        try:
            value: Any = parse(text)
        except ValueError:
            value = text
        try:
            return check("value", value)
        except (TypeError, ValueError) as error:
            # argparse prefixes the flag; the library prefixes the argument's name.
            raise argparse.ArgumentTypeError(str(error).removeprefix("value: ")) from None

    return convert


def _fraction(*, upper_inclusive: bool, lower_inclusive: bool = True) -> Callable[[str], float]:
    """A number in ``[0, 1)``, ``[0, 1]`` or ``(0, 1]`` (see :func:`bls._checks.check_fraction`)."""
    return _flag_type(
        float,
        lambda name, value: check_fraction(
            name, value, upper_inclusive=upper_inclusive, lower_inclusive=lower_inclusive
        ),
    )


def _integer(minimum: int) -> Callable[[str], int]:
    """An integer of at least ``minimum`` (see :func:`bls._checks.check_int`)."""
    return _flag_type(int, lambda name, value: check_int(name, value, minimum))


_positive = _flag_type(float, check_positive)


def _method(text: str) -> str:
    """A documented method in any case, spelled as the registry spells it."""
    try:
        return method_name(text, listed_only=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown method {text!r}; allowed: {', '.join(CLI_METHODS)}"
        ) from None


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bls-prune`` (exposed for documentation and tests)."""
    parser = _Parser(
        prog=PROG,
        description="Dynamic data pruning with Batch Loss Score (BLS), InfoBatch and SeTa.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        metavar="{" + ",".join(COMMANDS) + "}",
        parser_class=_Parser,
        help=f"the command to run; '{PROG} COMMAND --help' lists its flags",
    )

    demo = commands.add_parser(
        "demo",
        help=COMMANDS["demo"],
        description="Train a small CNN on scikit-learn's 8x8 digits with full data and with "
        "every pruning method; print a table and write results.json and results.png.",
    )
    demo.add_argument(
        "--budget",
        choices=sorted(DEMO_BUDGETS),
        default="full",
        help=f"full: {DEMO_BUDGETS['full']} epochs per run; small: {DEMO_BUDGETS['small']} "
        "epochs (a quick smoke run)",
    )
    demo.add_argument(
        "--epochs",
        metavar="N",
        type=_integer(1),
        help="epochs per run, overrides --budget (default: as --budget says)",
    )
    demo.add_argument(
        "--methods",
        metavar="M",
        type=_method,
        nargs="+",
        help=f"methods to compare (default: {' '.join(DEMO_METHODS)}); Full is always run",
    )
    demo.add_argument(
        "--prune-ratio",
        metavar="R",
        type=_fraction(upper_inclusive=False),
        help="one prune ratio for every method, instead of the equal budget of "
        "--target-saving (default: none, the budget applies)",
    )
    demo.add_argument(
        "--target-saving",
        metavar="T",
        type=_fraction(upper_inclusive=False),
        help=f"compare every pruning method at this one saved share of sample visits, fixed "
        f"before training: the fair comparison (default: {DEMO_TARGET}, unless --prune-ratio "
        "is given)",
    )
    seta = DEMO_METHODS["SeTa"]
    _common(
        demo,
        default_threads=1,
        threads_default_text="1",
        seta_defaults=(
            f"{seta['num_group']}, as in the demo's SeTa runs",
            f"{seta['window_scale']:g}, as in the demo's SeTa runs",
        ),
    )

    run = commands.add_parser(
        "train",
        help=COMMANDS["train"],
        description="One training run; prints the result and writes results.json and "
        "results.png into --out.",
    )
    run.add_argument(
        "--method",
        metavar="M",
        type=_method,
        default="BLS_InfoBatch",
        help=f"the pruning method, in any case: {', '.join(CLI_METHODS)}",
    )
    run.add_argument(
        "--prune-ratio",
        metavar="R",
        type=_fraction(upper_inclusive=False),
        default=0.5,
        help="the method's prune ratio, in [0, 1) (InfoBatch: the share of the well-learned "
        "samples skipped in each pruning epoch)",
    )
    run.add_argument(
        "--target-saving",
        metavar="T",
        type=_fraction(upper_inclusive=False),
        help="budget-first pruning: the run's saved share of sample visits, in [0, 1), fixed "
        "before training, in place of --prune-ratio (InfoBatch, SeTa, Random and their BLS "
        "forms) (default: none, --prune-ratio applies)",
    )
    run.add_argument("--epochs", metavar="N", type=_integer(1), default=10, help="training epochs")
    run.add_argument(
        "--data",
        choices=DATA_SOURCES,
        default="digits",
        help="digits: scikit-learn's embedded 8x8 digits (no --data-path); cifar10, cifar100, "
        "imagefolder: read from --data-path",
    )
    run.add_argument(
        "--data-path",
        metavar="DIR",
        type=Path,
        help="cifar10/cifar100: the folder holding cifar-10-batches-py or cifar-100-python; "
        "imagefolder: the folder holding train/<class>/ and val/<class>/ "
        "(default: none; digits needs none)",
    )
    run.add_argument("--model", choices=MODEL_NAMES, default="cnn", help="the network to train")
    run.add_argument(
        "--image-size",
        metavar="PX",
        type=_integer(4),
        default=32,
        help="imagefolder only: images are resized to this many pixels per side",
    )
    run.add_argument(
        "--batch-size", metavar="B", type=_integer(1), default=64, help="samples per batch"
    )
    run.add_argument(
        "--lr", metavar="LR", type=_positive, default=0.05, help="peak one-cycle learning rate"
    )
    run.add_argument(
        "--label-smoothing",
        metavar="LS",
        type=_fraction(upper_inclusive=False),
        default=0.0,
        help="label smoothing of the cross-entropy loss, in [0, 1)",
    )
    run.add_argument(
        "--workers", metavar="W", type=_integer(0), default=0, help="DataLoader worker processes"
    )
    run.add_argument(
        "--no-image-check",
        dest="check_images",
        action="store_false",
        help="imagefolder: skip opening every image before training (unreadable files then "
        "stop the run when they are read) (default: every image is checked)",
    )
    _common(
        run,
        default_threads=None,
        threads_default_text="1 for --data digits, torch's choice otherwise",
        seta_defaults=(str(RunConfig.num_group), f"{RunConfig.window_scale:g}"),
    )
    return parser


def _common(
    parser: argparse.ArgumentParser,
    *,
    default_threads: int | None,
    threads_default_text: str,
    seta_defaults: tuple[str, str],
) -> None:
    """The flags both commands take; the texts say the command's own defaults."""
    seta_groups, seta_window = seta_defaults
    parser.add_argument(
        "--alpha",
        metavar="A",
        type=_fraction(upper_inclusive=False),
        default=0.7,
        help="BLS methods: weight of the old score in the moving average, in [0, 1)",
    )
    parser.add_argument(
        "--delta",
        metavar="D",
        type=_fraction(upper_inclusive=True),
        default=0.875,
        help="share of epochs that prune, in [0, 1]; the rest anneal on full data",
    )
    parser.add_argument(
        "--num-group",
        metavar="G",
        type=_integer(1),
        default=None,
        help=f"SeTa methods: number of loss groups (default: {seta_groups})",
    )
    parser.add_argument(
        "--window-scale",
        metavar="W",
        type=_fraction(upper_inclusive=True, lower_inclusive=False),
        default=None,
        help="SeTa methods: share of the groups in the sliding window, in (0, 1] "
        f"(default: {seta_window})",
    )
    parser.add_argument(
        "--seed",
        metavar="S",
        type=_integer(0),
        default=0,
        help="seed of the model, the data and the pruning",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="output folder (default: a new folder under ./bls-prune-results/)",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        default=None,
        help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=_integer(1),
        default=default_threads,
        help=f"CPU threads for torch (default: {threads_default_text})",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="bar: tqdm bars; lines: one line per run; auto: bars on a terminal, lines otherwise",
    )


# ---------------------------------------------------------------------------- commands
@dataclass
class _Setup:
    device: torch.device
    out: Path
    bars: bool


def _setup(args: argparse.Namespace, command: str) -> _Setup:
    if args.device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise CliError(
                f"argument --device: unknown device {args.device!r}; allowed: cpu, cuda, cuda:N"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CliError("argument --device: CUDA is not available here; use --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("bls-prune-results") / f"{command}-{stamp}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"argument --out: cannot create {out}: {error.strerror}") from None
    bars = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    return _Setup(device, out, bars)


def _checked(cfg: RunConfig) -> RunConfig:
    """Build the method's handler on a stand-in data set, so bad settings fail before training."""
    build_handler(list(range(max(cfg.num_group, 2) + 1)), cfg)
    return cfg


def _config(args: argparse.Namespace, method: str, **settings: Any) -> RunConfig:
    values: dict[str, Any] = {
        "method": method,
        "alpha": args.alpha,
        "delta": args.delta,
        "seed": args.seed,
        **settings,
    }
    if args.num_group is not None:
        values["num_group"] = args.num_group
    if args.window_scale is not None:
        values["window_scale"] = args.window_scale
    return _checked(RunConfig(**values))


def _load(
    name: str, data_path: Path | None, image_size: int, seed: int, check_images: bool = True
) -> tuple[Any, Any, DataInfo]:
    if name != "digits" and data_path is None:
        where = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        if name == "imagefolder":
            where = "train/<class>/ and val/<class>/"
        raise CliError(f"argument --data-path: --data {name} needs the folder holding {where}")
    try:
        return load_data(
            name, data_path, image_size=image_size, seed=seed, check_images=check_images
        )
    except (DataNotFoundError, BadDataError) as error:
        raise CliError(f"argument --data-path: {error}") from None
    except ImportError as error:
        raise CliError(f"{error}") from None


def _run_one(
    cfg: RunConfig, data: tuple[Any, Any, DataInfo], model_name: str, setup: _Setup
) -> RunResult:
    train_set, test_set, info = data
    model = build_model(
        model_name, info.in_channels, info.num_classes, info.image_size, seed=cfg.seed
    )
    return train(model, train_set, test_set, cfg, device=setup.device, progress=setup.bars)


def _row_line(result: RunResult) -> str:
    return (
        f"{result.method}: test accuracy {100 * result.test_accuracy:.2f}%, "
        f"saved {100 * result.saved_ratio:.1f}% of samples, {result.wall_time_s:.1f} s"
    )


def _setting(cfg: RunConfig) -> str:
    method = lookup_method(cfg.method)
    if method.handler_class is Full:
        return "-"
    text = f"r={cfg.prune_ratio:g}" if cfg.target_saving is None else f"t={cfg.target_saving:g}"
    if method.handler_class is SeTa:
        text += f" g={cfg.num_group} w={cfg.window_scale:g}"
    if method.bls:
        text += f" a={cfg.alpha:g}"
    return text


def format_table(results: Sequence[RunResult]) -> str:
    """The comparison table: accuracy, saved samples and time, and the change to full data."""
    full = next((r for r in results if r.method == "Full"), None)
    header = ("method", "setting", "test acc", "vs full", "saved", "time (s)", "vs full")
    rows = [header]
    for result in results:
        acc_delta = time_delta = "-"
        if full is not None and result is not full:
            acc_delta = f"{100 * (result.test_accuracy - full.test_accuracy):+.2f} pp"
            time_delta = f"{100 * (result.wall_time_s / full.wall_time_s - 1):+.0f}%"
        rows.append(
            (
                result.method,
                _setting(result.config),
                f"{100 * result.test_accuracy:.2f}%",
                acc_delta,
                f"{100 * result.saved_ratio:.1f}%",
                f"{result.wall_time_s:.1f}",
                time_delta,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _write_results(
    setup: _Setup, command: str, info: DataInfo, results: Sequence[RunResult], model: str
) -> tuple[Path, Path | None]:
    full = next((r for r in results if r.method == "Full"), None)
    runs = []
    for result in results:
        run = result.to_dict()
        if full is not None:
            run["accuracy_delta_vs_full"] = result.test_accuracy - full.test_accuracy
            run["time_ratio_vs_full"] = result.wall_time_s / full.wall_time_s
        runs.append(run)
    document = {
        "schema": "bls-prune/results/1",
        "command": command,
        "version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "name": info.name,
            "num_classes": info.num_classes,
            "image_size": info.image_size,
            "num_train": results[0].num_train,
        },
        "model": model,
        "device": str(setup.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": runs,
    }
    json_path = setup.out / "results.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    title = (
        f"{info.name} ({results[0].num_train:,} training samples), model: {model}, "
        f"{results[0].config.epochs} epochs per run, seed {results[0].config.seed}"
    )
    return json_path, _plot(setup.out / "results.png", results, title)


def _plot(path: Path, results: Sequence[RunResult], title: str) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        _say(
            f"{PROG}: matplotlib is not installed, no plot written "
            "(pip install 'bls-prune[examples]')",
            file=sys.stderr,
        )
        return None
    results_figure(results, title, Figure).savefig(path, dpi=110, metadata={"Title": title})
    return path


def results_figure(results: Sequence[RunResult], title: str, figure_class: Any) -> Any:
    """Test accuracy and kept samples per epoch, one line per run, one shared legend."""
    # The object-oriented API: no pyplot, so no global backend is selected or changed.
    figure = figure_class(figsize=(11, 4.8), layout="constrained")
    figure.suptitle(title)
    accuracy_axes, kept_axes = figure.subplots(1, 2)
    for result in results:
        # Epochs numbered from 0, as in results.json and the handler's history.
        epochs = [record.epoch for record in result.epochs]
        style = (
            "-" if result.method == "Full" else "--" if lookup_method(result.method).bls else ":"
        )
        common: dict[str, Any] = {"marker": "o", "markersize": 3}
        line = accuracy_axes.plot(
            epochs, [100 * r.test_accuracy for r in result.epochs], style, **common
        )[0]
        kept_axes.plot(
            epochs, [r.kept for r in result.epochs], style, color=line.get_color(), **common
        )
        line.set_label(f"{result.method} ({100 * result.saved_ratio:.0f}% saved)")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    kept_axes.set(xlabel="epoch", ylabel="samples trained on", title="Kept samples per epoch")
    for axes in (accuracy_axes, kept_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    # One legend for both panels: a method has the same colour and line style in each.
    figure.legend(loc="outside lower center", ncols=min(len(results), 6), fontsize=8)
    return figure


def _warm_up(data: tuple[Any, Any, DataInfo], setup: _Setup) -> None:
    """One untimed tiny run, so one-off costs (lazy imports, first optimizer step, thread
    pools) do not land in the first timed run, which is Full: they would flatter the others."""
    train_set, test_set, info = data
    few = Subset(train_set, range(min(64, len(train_set))))
    model = build_model("cnn", info.in_channels, info.num_classes, info.image_size)
    cfg = RunConfig(method="Full", epochs=1, batch_size=32)
    train(
        model,
        few,
        Subset(test_set, range(min(32, len(test_set)))),
        cfg,
        device=setup.device,
        progress=False,
    )


def _demo(args: argparse.Namespace) -> int:
    epochs = args.epochs or DEMO_BUDGETS[args.budget]
    methods = ["Full", *[m for m in (args.methods or DEMO_METHODS) if m != "Full"]]
    target = args.target_saving
    if target is None and args.prune_ratio is None:
        target = DEMO_TARGET
    if target is not None and args.prune_ratio is not None:
        raise CliError("argument --prune-ratio: not allowed with --target-saving (give one)")
    configs = []
    for method in methods:
        settings = dict(DEMO_METHODS.get(method, {"prune_ratio": 0.5}))
        if args.prune_ratio is not None and method != "Full":
            settings["prune_ratio"] = args.prune_ratio
        if target is not None and method != "Full":
            settings["target_saving"] = target
        configs.append(_config(args, method, epochs=epochs, batch_size=64, lr=0.05, **settings))
    setup = _setup(args, "demo")
    data = _load("digits", None, 8, args.seed)
    _say(
        f"bls-prune demo: a small CNN on scikit-learn's digits ({len(data[0])} train / "
        f"{len(data[1])} test 8x8 images), {epochs} epochs per run, {len(configs)} runs, "
        f"on {setup.device}",
        flush=True,
    )
    _warm_up(data, setup)
    results = []
    for number, cfg in enumerate(configs, start=1):
        result = _run_one(cfg, data, "cnn", setup)
        results.append(result)
        if not setup.bars:
            _say(f"[{number}/{len(configs)}] {_row_line(result)}", flush=True)
    _say()
    _say(format_table(results))
    json_path, png_path = _write_results(setup, "demo", data[2], results, "cnn")
    _say()
    _say("'saved' is the share of sample visits skipped over the whole run; 'vs full' compares")
    _say("with the Full run (accuracy in percentage points, wall time in percent).")
    _say(
        f"Results written to {setup.out}/ ({json_path.name}"
        f"{', ' + png_path.name if png_path else ''})"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = _config(
        args,
        args.method,
        prune_ratio=args.prune_ratio,
        target_saving=args.target_saving,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        label_smoothing=args.label_smoothing,
    )
    setup = _setup(args, "train")
    if args.threads is None and args.data == "digits":
        torch.set_num_threads(1)  # an 8x8 CNN is fastest on one thread
    data = _load(args.data, args.data_path, args.image_size, args.seed, args.check_images)
    _say(
        f"bls-prune train: {cfg.method} on {args.data} ({len(data[0])} train / {len(data[1])} "
        f"test), model {args.model}, epochs: {cfg.epochs}, on {setup.device}",
        flush=True,
    )
    result = _run_one(cfg, data, args.model, setup)
    _say(_row_line(result))
    json_path, png_path = _write_results(setup, "train", data[2], [result], args.model)
    _say(
        f"Results written to {setup.out}/ ({json_path.name}"
        f"{', ' + png_path.name if png_path else ''})"
    )
    return 0


_FLAG_OF = {
    "prune_ratio": "--prune-ratio",
    "target_saving": "--target-saving",
    "alpha": "--alpha",
    "delta": "--delta",
    "num_group": "--num-group",
    "window_scale": "--window-scale",
    "num_epochs": "--epochs",
    "epochs": "--epochs",
    "seed": "--seed",
}


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings as one line each, like errors: ``bls-prune: warning: ...``."""
    _say(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _last_line(error: BaseException) -> str:
    """The error's own message, also when a DataLoader worker wrapped it with its traceback."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].partition(": ")[2]
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bls-prune``; returns the exit status (0 success, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        _say(parser.format_usage().rstrip(), "", "commands:", sep="\n")
        width = max(map(len, COMMANDS))
        for name, summary in COMMANDS.items():
            _say(f"  {name.ljust(width)}  {summary}")
        _say(
            f"{PROG}: error: no command given; try '{PROG} demo', or '{PROG} COMMAND --help'",
            file=sys.stderr,
        )
        return 2
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        return _demo(args) if args.command == "demo" else _train(args)
    except BadDataError as error:  # an unreadable image found while training
        _say(f"{PROG}: error: {_last_line(error)}", file=sys.stderr)
        return 2
    except CliError as error:
        _say(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:
        # The library names the argument first ("window_scale: ..."); show it as the flag.
        message = str(error)
        name, _, rest = message.partition(":")
        if name in _FLAG_OF and rest:
            message = f"argument {_FLAG_OF[name]}:{rest}"
        _say(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted", file=sys.stderr)
        return 130

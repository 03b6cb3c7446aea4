"""The ``bls-prune`` command: the demo, ``train`` on every data source, and bad input."""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_data import write_cifar, write_image_folder

from bls.app.cli import COMMANDS, DEMO_METHODS, build_parser, main
from bls.app.train import RunConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _restore_threads(restore_num_threads: int) -> None:
    """The CLI sets torch's thread count (it owns its process); keep the test process as it was."""


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own exits (bad flag syntax, --help)
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _command() -> list[str]:
    script = shutil.which("bls-prune", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "bls"]


def test_demo_small_budget_end_to_end(tmp_path: Path) -> None:
    """The README's demo command through the installed entry point, with a smaller budget."""
    out = tmp_path / "demo"
    done = subprocess.run(
        [*_command(), "demo", "--budget", "small", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    for column in ("test acc", "vs full", "saved", "time (s)"):
        assert column in lines[header]
    rows = {line.split()[0]: line for line in lines[header + 2 : header + 8]}
    assert list(rows) == ["Full", "BLS_InfoBatch", "BLS_SeTa", "InfoBatch", "SeTa", "RandomPrune"]
    # Not on a terminal: one progress line per run.
    assert sum(line.startswith("[") and "/6]" in line for line in lines) == 6

    document = json.loads((out / "results.json").read_text())
    runs = {run["method"]: run for run in document["runs"]}
    assert list(runs) == list(rows)
    full = runs["Full"]
    assert full["saved_ratio"] == 0.0 and full["accuracy_delta_vs_full"] == 0.0
    for method, run in runs.items():
        kept = [epoch["kept"] for epoch in run["epochs"]]
        assert len(kept) == 3 and run["sample_steps"] == sum(kept)
        n = run["num_train"]
        assert run["saved_ratio"] == pytest.approx(sum(n - k for k in kept) / (n * 3))
        assert run["accuracy_delta_vs_full"] == pytest.approx(
            run["test_accuracy"] - full["test_accuracy"]
        )
        # The table shows the same numbers as the JSON.
        assert f"{100 * run['test_accuracy']:.2f}%" in rows[method]
        assert f"{100 * run['saved_ratio']:.1f}%" in rows[method]
        if method != "Full":  # one equal budget: the demo's default --target-saving
            assert run["saved_ratio"] == pytest.approx(0.25, abs=0.01)
            assert "t=0.25" in rows[method]
    png = (out / "results.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    from PIL import Image

    with Image.open(out / "results.png") as picture:
        title = picture.text["Title"]  # type: ignore[attr-defined]
    assert title == "digits (1,438 training samples), model: cnn, 3 epochs per run, seed 0"


def test_results_figure_has_a_title_one_legend_and_epochs_from_zero() -> None:
    from matplotlib.figure import Figure

    from bls.app.cli import results_figure
    from bls.app.train import EpochRecord, RunConfig, RunResult

    def result(method: str, kept: list[int]) -> RunResult:
        epochs = [EpochRecord(e, k, 1.0, 0.5 + 0.1 * e, 1.0, 0.1) for e, k in enumerate(kept)]
        cfg = RunConfig(method=method, epochs=len(kept))
        return RunResult(method, 0.7, 1 - sum(kept) / 300, 1.0, sum(kept), epochs, cfg)

    runs = [result("Full", [100, 100, 100]), result("BLS_InfoBatch", [100, 60, 100])]
    figure = results_figure(runs, "the title", Figure)
    assert figure.get_suptitle() == "the title"
    [legend] = figure.legends  # one legend, shared by both panels
    assert [t.get_text() for t in legend.get_texts()] == [
        "Full (0% saved)",
        "BLS_InfoBatch (13% saved)",
    ]
    accuracy, kept = figure.axes
    assert accuracy.get_legend() is None and kept.get_legend() is None
    assert list(kept.lines[1].get_xdata()) == [0, 1, 2]  # numbered as in results.json
    assert list(kept.lines[1].get_ydata()) == [100, 60, 100]
    # The same method has the same colour in both panels.
    assert [x.get_color() for x in accuracy.lines] == [x.get_color() for x in kept.lines]


def test_module_entry_point_reports_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # ``python -m bls`` runs bls/__main__.py; run it in-process to skip a second interpreter.
    monkeypatch.setattr(sys, "argv", ["bls", "--version"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("bls", run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("bls-prune ")


def _check_train_result(out: Path, method: str, epochs: int) -> dict[str, object]:
    document = json.loads((out / "results.json").read_text())
    (run,) = document["runs"]
    assert run["method"] == method and len(run["epochs"]) == epochs
    assert 0.0 <= run["test_accuracy"] <= 1.0
    assert (out / "results.png").read_bytes().startswith(PNG_SIGNATURE)
    return document


def test_train_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        [
            "train",
            "--method",
            "bls_infobatch",
            "--epochs",
            "2",
            "--alpha",
            "0.8",
            "--out",
            str(tmp_path),
            "--model",
            "mlp",
            "--batch-size",
            "128",
        ],
        capsys,
    )
    assert code == 0, err
    assert "BLS_InfoBatch: test accuracy" in out
    document = _check_train_result(tmp_path, "BLS_InfoBatch", 2)
    assert document["runs"][0]["config"]["alpha"] == 0.8  # type: ignore[index]
    assert document["model"] == "mlp"


def test_train_with_a_target_saving(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--method", "SeTa", "--target-saving", "0.3", "--epochs", "8"]
    code, _, err = _run([*argv, "--model", "mlp", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    document = _check_train_result(tmp_path, "SeTa", 8)
    run = document["runs"][0]  # type: ignore[index]
    assert run["config"]["target_saving"] == 0.3
    assert run["saved_ratio"] == pytest.approx(0.3, abs=0.01)


def test_demo_refuses_a_prune_ratio_with_a_target_saving(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["demo", "--prune-ratio", "0.5", "--target-saving", "0.2", "--out", str(tmp_path)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--prune-ratio: not allowed with --target-saving" in err


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_train_cifar_on_disk_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    root = write_cifar(tmp_path / "data", name, per_file=6)
    code, _, err = _run(
        [
            "train",
            "--data",
            name,
            "--data-path",
            str(root),
            "--method",
            "SeTa",
            "--num-group",
            "3",
            "--window-scale",
            "0.7",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 0, err
    document = _check_train_result(tmp_path / "out", "SeTa", 2)
    assert document["data"]["num_classes"] == (10 if name == "cifar10" else 100)  # type: ignore[index]


def test_train_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "images", classes=3, per_class=8)
    code, _, err = _run(
        [
            "train",
            "--data",
            "imagefolder",
            "--data-path",
            str(root),
            "--method",
            "RandomPrune",
            "--image-size",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "6",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 0, err
    document = _check_train_result(tmp_path / "out", "RandomPrune", 2)
    assert document["data"]["num_train"] == 24  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--method", "Dropout"], "argument --method: unknown method 'Dropout'; allowed"),
        (["train", "--prune-ratio", "1.5"], "argument --prune-ratio: expected a number in [0, 1)"),
        (["train", "--prune-ratio", "half"], "argument --prune-ratio: expected a number"),
        (["train", "--alpha", "1"], "argument --alpha: expected a number in [0, 1)"),
        (["train", "--delta", "-0.1"], "argument --delta: expected a number in [0, 1]"),
        (["train", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
        (["train", "--batch-size", "x"], "argument --batch-size: expected an integer >= 1"),
        (["train", "--lr", "0"], "argument --lr: expected a number in (0, inf)"),
        (["train", "--num-group", "0"], "argument --num-group: expected an integer >= 1"),
        (["train", "--window-scale", "0"], "argument --window-scale: expected a number in (0, 1]"),
        (["train", "--method", "SeTa", "--window-scale", "0.01"], "argument --window-scale:"),
        (["train", "--workers", "-1"], "argument --workers: expected an integer >= 0"),
        (["train", "--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
        (["train", "--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
        (["train", "--device", "tpu9"], "argument --device: unknown device 'tpu9'"),
        (["train", "--data", "cifar10"], "argument --data-path: --data cifar10 needs the folder"),
        (["train", "--data", "imagefolder"], "argument --data-path: --data imagefolder needs"),
        (["demo", "--budget", "huge"], "argument --budget: invalid choice: 'huge'"),
        (["demo", "--methods", "Magic"], "argument --methods: unknown method 'Magic'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["launch"], "argument {demo,train}: invalid choice: 'launch'"),
    ],
)
def test_bad_flags_give_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _run(
        [*argv, *(["--out", str(tmp_path)] if argv[0] != "launch" else [])], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("bls-prune: error: "), err
    assert expected in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_missing_data_says_where_it_looked(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here"
    code, _, err = _run(
        ["train", "--data", name, "--data-path", str(missing), "--out", str(tmp_path)], capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("bls-prune: error: argument --data-path:")
    assert str(missing) in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([], capsys)
    assert code == 2 and "demo" in out and "train" in out


def test_no_command_lists_the_commands_and_ends_with_a_one_line_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run([], capsys)
    assert code == 2
    assert out.startswith("usage: bls-prune ")
    for name, summary in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(summary)}$", out, re.MULTILINE), out
    assert err.count("\n") == 1 and err.startswith("bls-prune: error: no command given"), err
    assert "'bls-prune demo'" in err and "'bls-prune COMMAND --help'" in err


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """``bls-prune`` and each of its subcommands' parsers, by command line."""
    parser = build_parser()
    parsers = {"bls-prune": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parsers[f"bls-prune {name}"] = sub
    return parsers


def test_every_command_is_listed() -> None:
    assert list(_parsers()) == ["bls-prune", *(f"bls-prune {name}" for name in COMMANDS)]


def _help_entries(text: str) -> list[str]:
    """Each flag's entry of a ``--help`` text (its flag line and the lines of help under it)."""
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith("  -"):
            entries.append(line.strip())
        elif entries and line.startswith("    "):
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", list(_parsers()))
def test_every_flag_has_help_and_its_default_is_shown(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per flag, so a flag's entry is easy to find
    parser = _parsers()[command]
    text = parser.format_help()
    for action in parser._actions:
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {name}: no help"
        if not action.option_strings or isinstance(
            action, argparse._HelpAction | argparse._VersionAction
        ):
            continue
        [entry] = [e for e in _help_entries(text) if e.startswith((name + " ", name + ","))]
        assert "(default: " in entry, f"{command} {name}: the help does not show its default"
        if action.default not in (None, argparse.SUPPRESS) and action.nargs != 0:
            assert f"(default: {action.default})" in entry, entry


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--help"], ["--budget {full,small}", "(default: full)", "(default: 0.7)"]),
        (
            ["train", "--help"],
            ["--method M", "(default: BLS_InfoBatch)", "(default: 10)", "(default: digits)"],
        ),
        (["--help"], ["{demo,train}", "demo ", "train "]),
    ],
)
def test_help_exits_zero_and_shows_defaults(
    argv: list[str],
    expected: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = _run(argv, capsys)
    assert code == 0 and err == ""
    for text in expected:
        assert text in out, text


def test_demo_and_train_help_state_their_own_seta_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    parsers = _parsers()
    seta = DEMO_METHODS["SeTa"]
    demo, train = parsers["bls-prune demo"].format_help(), parsers["bls-prune train"].format_help()
    assert f"(default: {seta['num_group']}, as in the demo's SeTa runs)" in demo
    assert f"(default: {RunConfig.num_group})" in train
    assert f"(default: {RunConfig.window_scale:g})" in train


def _train_image_folder(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        "imagefolder",
        "--data-path",
        str(root),
        "--image-size",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("corrupt-image", r"train/class_1/002\.jpg: not a readable image \(cannot identify"),
        ("extra-val-class", r"val: 1 class folder\(s\) are not classes of .*train: 'class_7'"),
        ("empty-class", r"train: 1 class folder\(s\) hold no images: 'class_3'"),
    ],
)
def test_bad_image_folders_stop_before_training_with_one_line(
    damage: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "images", classes=3, per_class=4)
    if damage == "corrupt-image":
        (root / "train" / "class_1" / "002.jpg").write_bytes(b"\x00" * 64)
    elif damage == "extra-val-class":
        shutil.copytree(root / "val" / "class_0", root / "val" / "class_7")
    else:
        (root / "train" / "class_3").mkdir()
    code, out, err = _run(_train_image_folder(root, tmp_path), capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("bls-prune: error: argument --data-path: ")
    assert re.search(expected, err), err
    assert "Traceback" not in err + out and "bls-prune train:" not in out  # nothing trained


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_that_fails_mid_run_ends_with_one_line(
    workers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "images", classes=2, per_class=4)
    (root / "train" / "class_0" / "002.jpg").write_bytes(b"\x00" * 64)
    argv = _train_image_folder(root, tmp_path, "--no-image-check", "--workers", workers)
    code, out, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("bls-prune: error: /") and "class_0/002.jpg: not a readable image" in err
    assert "Traceback" not in err and "bls-prune train:" in out  # it had started


def test_too_few_batches_for_bls_is_said_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "images", classes=2, per_class=4)
    argv = _train_image_folder(root, tmp_path, "--batch-size", "64", "--method", "BLS_InfoBatch")
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    [line] = [x for x in err.splitlines() if x.startswith("bls-prune: warning: ")]
    assert "epoch 0: the loader makes 1 batch(es) of batch_size=64 from 8 samples" in line
    assert "saved 0.0% of samples" in out

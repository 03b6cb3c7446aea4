"""The one registry of method names (``bls.methods.REGISTRY``) and who reads it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from bls import PRUNE_TYPES, Full, InfoBatch, RandomPrune, SeTa, Static, prune
from bls._checks import check_fraction, check_int, check_positive
from bls.app import cli, train
from bls.methods import REGISTRY, lookup_method, method_name, method_names

DATA = list(range(40))


def test_the_names_everyone_reads_come_from_the_registry() -> None:
    assert PRUNE_TYPES == (
        "Full",
        "None",
        "InfoBatch",
        "SeTa",
        "Static",
        "Random",
        "BLS_InfoBatch",
        "BLS_SeTa",
    )
    assert (
        cli.CLI_METHODS
        == method_names()
        == (
            "Full",
            "InfoBatch",
            "SeTa",
            "Static",
            "Random",
            "RandomPrune",
            "BLS_InfoBatch",
            "BLS_SeTa",
        )
    )
    assert set(train.METHODS) == {*PRUNE_TYPES, *cli.CLI_METHODS} | {
        "BLS_Static",
        "BLS_Random",
        "BLS_RandomPrune",
    }
    # The demo's settings are keyed by names the registry spells that way.
    assert all(method_name(name) == name for name in cli.DEMO_METHODS)


@pytest.mark.parametrize(
    ("name", "canonical", "spelled"),
    [
        ("InfoBatch", "InfoBatch", "InfoBatch"),
        ("bls_infobatch", "BLS_InfoBatch", "BLS_InfoBatch"),
        (" SeTa ", "SeTa", "SeTa"),
        ("randomprune", "Random", "RandomPrune"),
        ("RANDOM", "Random", "Random"),
        ("none", "Full", "Full"),
        (None, "Full", "Full"),
        ("bls_randomprune", "BLS_Random", "BLS_RandomPrune"),
    ],
)
def test_lookup_resolves_names_aliases_and_case(
    name: str | None, canonical: str, spelled: str
) -> None:
    assert lookup_method(name).name == canonical
    assert method_name(name) == spelled


@pytest.mark.parametrize("name", ["Dropout", "BLS_Full", "BLS_None", "", "BLS_"])
def test_unknown_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(ValueError) as error:
        lookup_method(name)
    assert str(error.value) == (
        f"prune_type: unknown value {name!r}; allowed: Full, None, InfoBatch, SeTa, Static, "
        "Random, BLS_InfoBatch, BLS_SeTa"
    )


def test_listed_only_keeps_the_documented_methods() -> None:
    assert lookup_method("BLS_Static").name == "BLS_Static"
    with pytest.raises(ValueError, match="prune_type: unknown value 'BLS_Static'"):
        lookup_method("BLS_Static", listed_only=True)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown method 'BLS_Static'"):
        cli._method("BLS_Static")
    assert cli._method("none") == "Full" and cli._method("randomprune") == "RandomPrune"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_method_builds(name: str) -> None:
    spec = REGISTRY[name]
    handler = prune(DATA, {"prune_type": name, "epochs": 3, "num_group": 4, "alpha": 0.5})
    assert isinstance(handler, spec.handler_class)
    assert (handler.score_source.name == "bls") == spec.bls
    if spec.bls:
        assert handler.score_source.alpha == 0.5


def test_handler_classes_are_the_public_ones() -> None:
    classes = {spec.handler_class for spec in REGISTRY.values()}
    assert classes == {Full, InfoBatch, SeTa, Static, RandomPrune}
    assert not any(spec.bls for spec in REGISTRY.values() if spec.handler_class is Full)


WINDOW = cli._fraction(upper_inclusive=True, lower_inclusive=False)


@pytest.mark.parametrize(
    ("flag_type", "text", "library"),
    [
        (
            cli._fraction(upper_inclusive=False),
            "1.5",
            lambda: check_fraction("x", 1.5, upper_inclusive=False),
        ),
        (
            cli._fraction(upper_inclusive=False),
            "half",
            lambda: check_fraction("x", "half", upper_inclusive=False),
        ),
        (
            cli._fraction(upper_inclusive=True),
            "-0.1",
            lambda: check_fraction("x", -0.1, upper_inclusive=True),
        ),
        (
            WINDOW,
            "0",
            lambda: check_fraction("x", 0.0, upper_inclusive=True, lower_inclusive=False),
        ),
        (cli._integer(1), "0", lambda: check_int("x", 0, 1)),
        (cli._integer(1), "2.5", lambda: check_int("x", "2.5", 1)),
        (cli._positive, "0", lambda: check_positive("x", 0.0)),
        (cli._positive, "inf", lambda: check_positive("x", float("inf"))),
    ],
)
def test_flag_types_say_what_the_library_check_says(
    flag_type: Callable[[str], object], text: str, library: Callable[[], object]
) -> None:
    with pytest.raises((TypeError, ValueError)) as expected:
        library()
    with pytest.raises(argparse.ArgumentTypeError) as flag:
        flag_type(text)
    assert str(flag.value) == str(expected.value).removeprefix("x: ")

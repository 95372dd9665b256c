"""`core.identity`: one normalization for names, the names refused, and what counts as a reason."""

from __future__ import annotations

import pytest

from greenlight.core.identity import (
    canonical,
    meaningful_text,
    name_problem,
    on_behalf_of_problem,
    same_person,
)

CYRILLIC_A = "\N{CYRILLIC SMALL LETTER A}"


@pytest.mark.parametrize(
    ("written", "compared"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("  alice\t", "alice"),
        ("\uff21lice", "alice"),  # fullwidth A
        ("ALICE@Example.COM", "alice@example.com"),
        ("Strau\N{LATIN SMALL LETTER SHARP S}", "strauss"),
        ("e\N{COMBINING ACUTE ACCENT}", "\N{LATIN SMALL LETTER E WITH ACUTE}"),
    ],
)
def test_canonical_is_nfkc_casefolded_and_trimmed(written: str, compared: str) -> None:
    assert canonical(written) == compared


@pytest.mark.parametrize(
    "name",
    [
        "alice",
        "alice@example.com",
        "system:serviceaccount:ci:orchestrator",
        "Alice Smith",
        "jos\N{LATIN SMALL LETTER E WITH ACUTE}",
        "\u5c71\u7530\u592a\u90ce",  # Han
        "\u3084\u307e\u3060",  # Hiragana
        "\u0645\u062d\u0645\u062f",  # Arabic
        "alice ",  # compared trimmed
    ],
)
def test_plain_names_are_accepted(name: str) -> None:
    assert name_problem(name, "spec.requester.onBehalfOf") is None


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("", "is empty or only whitespace"),
        ("   ", "is empty or only whitespace"),
        ("\u3000", "is empty or only whitespace"),  # ideographic space, NFKC: a space
        ("\u200b", "U+200B (ZERO WIDTH SPACE), an invisible or control character"),
        ("ali\u200dce", "U+200D (ZERO WIDTH JOINER)"),
        ("alice\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("ali\nce", "U+000A"),
        ("ali\u034fce", "U+034F (COMBINING GRAPHEME JOINER)"),
        (f"{CYRILLIC_A}lice", "U+0430 (CYRILLIC SMALL LETTER A), which could pass for"),
        ("\N{GREEK SMALL LETTER IOTA}lice", "U+03B9 (GREEK SMALL LETTER IOTA)"),
        ("al\N{LATIN SMALL LETTER DOTLESS I}ce", "U+0131 (LATIN SMALL LETTER DOTLESS I)"),
        ("a\N{COMBINING LONG STROKE OVERLAY}lice", "U+0336 (COMBINING LONG STROKE OVERLAY)"),
        ("\N{CHEROKEE LETTER GO}LICE", "U+13AA (CHEROKEE LETTER GO)"),
        ("alice\N{HYPHEN}ops", "U+2010 (HYPHEN)"),
        ("alice\u5c71\u7530", "mixes letters of the LATIN and CJK scripts"),
    ],
)
def test_refused_names_say_field_value_and_character(name: str, named: str) -> None:
    problem = name_problem(name, "spec.requester.onBehalfOf")

    assert problem is not None
    assert problem.startswith(f"spec.requester.onBehalfOf {name!r} ")
    assert named in problem


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "alice"),
        ("alice", "Alice"),
        ("alice", " alice "),
        ("alice", "alice@example.com"),
        ("alice@example.com", "ALICE@example.com"),
        ("alice@example.com", "alice@other.example"),
        ("alice", "alice+ci@example.com"),
        ("alice", "oidc:alice"),
        ("alice", "https://issuer.example#alice"),
        ("alice", f"{CYRILLIC_A}lice"),
        ("alice", "ali\u200bce"),
        ("alice", "\N{LATIN LETTER SMALL CAPITAL A}lice"),
        ("alice", "\uff41lice"),
    ],
)
def test_same_person_fails_closed(a: str, b: str) -> None:
    assert same_person(a, b)
    assert same_person(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "bob"),
        ("alice", "alicia"),
        ("alice@example.com", "bob@example.com"),
        ("system:serviceaccount:ci:orchestrator", "alice"),
        ("jos\N{LATIN SMALL LETTER E WITH ACUTE}", "jose"),
    ],
)
def test_different_people_are_different(a: str, b: str) -> None:
    assert not same_person(a, b)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\t\r\n",
        "\u200b",
        "\u200b\u200c\u200d\u2060\ufeff",
        "\u202a\u202e\u2066\u2069",
        "\x00\x07",
        "\u00a0\u3000",
        "\u3164\u115f",
        "\u2800",
        "\N{COMBINING ACUTE ACCENT}",
    ],
)
def test_invisible_text_is_not_meaningful(text: str) -> None:
    assert not meaningful_text(text)


@pytest.mark.parametrize("text", ["no", "?", "wrong stack", "\u5426", " \u200b x \u200b "])
def test_visible_text_is_meaningful(text: str) -> None:
    assert meaningful_text(text)


def test_on_behalf_of_may_be_missing_or_empty() -> None:
    assert on_behalf_of_problem({}) is None
    assert on_behalf_of_problem({"requester": {"workflowId": "wf-1"}}) is None
    assert on_behalf_of_problem({"requester": {"onBehalfOf": ""}}) is None
    assert on_behalf_of_problem({"requester": {"onBehalfOf": "alice"}}) is None


def test_on_behalf_of_lookalike_is_refused_with_the_field_named() -> None:
    problem = on_behalf_of_problem({"requester": {"onBehalfOf": f"{CYRILLIC_A}lice"}})

    assert problem is not None
    assert problem.startswith("spec.requester.onBehalfOf ")
    assert "CYRILLIC SMALL LETTER A" in problem


def test_on_behalf_of_must_be_a_string() -> None:
    problem = on_behalf_of_problem({"requester": {"onBehalfOf": ["alice"]}})

    assert problem == "spec.requester.onBehalfOf must be a string (a person's Kubernetes user name)"

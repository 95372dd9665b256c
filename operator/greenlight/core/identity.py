"""One person, one identity: how names are compared, which names are refused, what is a reason.

Kubernetes compares user names byte for byte, but the names Greenlight weighs against each other
come from different places: the API server (`requestedBy`, the decider), the requester's own text
(`spec.requester.onBehalfOf`, `policy.approvers`) and mappings (a Slack email). So every
comparison here happens after one normalization, `canonical`: Unicode NFKC, case fold, trimmed.

`name_problem` refuses the names that normalization cannot make safe to compare. After NFKC
and case folding, a name is refused when it

1. is empty or only whitespace;
2. contains a control, format (zero-width, bidi), private-use, unassigned or other invisible
   character, or a separator other than the ASCII space;
3. contains non-ASCII punctuation, symbols or spaces (look-alikes of `@ . - _ :`);
4. contains a non-ASCII letter that could pass for an ASCII one: a Latin letter that is not an
   ASCII letter with accents (dotless i, Latin alpha, small capital A), an accent that NFKC
   could not combine with its letter (a stroke overlay), or any letter of a script that is not
   in `SCRIPTS_WITHOUT_LATIN_LOOKALIKES` (so Greek, Cyrillic, Armenian, Cherokee, Lisu and
   every script not listed are refused: several of their letters look exactly like Latin ones);
5. mixes letters of two scripts (`alice山田`; Han, Hiragana, Katakana and Hangul count as one).

`same_person` is the self-approval and quorum test. It fails closed: two spellings that could
name the same human count as one person (`Alice`, `alice `, `alice@example.com`,
`alice+ci@example.com` and `oidc:alice` are all `alice`), and names that `name_problem` refuses
are also compared after removing invisible characters and folding common look-alike letters
(`alice` written with a Cyrillic a, U+0430, is `alice`).

`meaningful_text` is the reason test: text with nothing visible in it is no reason.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

ON_BEHALF_OF_FIELD = "spec.requester.onBehalfOf"

# Scripts whose letters Greenlight accepts in a name that has no Latin letters (rule 4): none of
# them has letters that pass for Latin ones in a whole name. The key is the first word of the
# letter's Unicode name; Han, Hiragana, Katakana, Hangul and Bopomofo are grouped as "CJK".
SCRIPTS_WITHOUT_LATIN_LOOKALIKES = frozenset(
    {
        "ARABIC",
        "BENGALI",
        "CJK",
        "DEVANAGARI",
        "GUJARATI",
        "GURMUKHI",
        "HEBREW",
        "KANNADA",
        "MALAYALAM",
        "ORIYA",
        "SINHALA",
        "TAMIL",
        "TELUGU",
        "THAI",
    }
)
_CJK_WORDS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC"})

# Default-ignorable code points (Unicode DerivedCoreProperties) that are not of category C*:
# combining grapheme joiner, Hangul fillers, Mongolian and other variation selectors. They
# render as nothing, so they are invisible like the zero-width characters of category Cf.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),  # braille pattern blank: renders as a space
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# Letters (after case folding) that look like an ASCII letter, for `same_person` on names that
# `name_problem` refuses. Not complete (see rule 4, which refuses these names where they enter);
# it covers the letters that make whole look-alike names in Cyrillic, Greek and Latin.
_LOOKALIKES = str.maketrans(
    {
        unicodedata.lookup(name): letter
        for letter, names in {
            "a": (
                "CYRILLIC SMALL LETTER A",
                "GREEK SMALL LETTER ALPHA",
                "LATIN SMALL LETTER ALPHA",
                "LATIN LETTER SMALL CAPITAL A",
            ),
            "b": (
                "CYRILLIC SMALL LETTER VE",
                "CYRILLIC SMALL LETTER SOFT SIGN",
                "GREEK SMALL LETTER BETA",
            ),
            "c": (
                "CYRILLIC SMALL LETTER ES",
                "GREEK SMALL LETTER FINAL SIGMA",
                "LATIN LETTER SMALL CAPITAL C",
            ),
            "d": ("CYRILLIC SMALL LETTER KOMI DE", "LATIN LETTER SMALL CAPITAL D"),
            "e": (
                "CYRILLIC SMALL LETTER IE",
                "CYRILLIC SMALL LETTER IO",
                "GREEK SMALL LETTER EPSILON",
                "LATIN LETTER SMALL CAPITAL E",
            ),
            "g": ("LATIN SMALL LETTER SCRIPT G",),
            "h": (
                "CYRILLIC SMALL LETTER SHHA",
                "CYRILLIC SMALL LETTER EN",
                "LATIN LETTER SMALL CAPITAL H",
            ),
            "i": (
                "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
                "CYRILLIC SMALL LETTER YI",
                "GREEK SMALL LETTER IOTA",
                "LATIN SMALL LETTER DOTLESS I",
                "LATIN SMALL LETTER IOTA",
                "LATIN LETTER SMALL CAPITAL I",
            ),
            "j": ("CYRILLIC SMALL LETTER JE",),
            "k": (
                "CYRILLIC SMALL LETTER KA",
                "GREEK SMALL LETTER KAPPA",
                "LATIN LETTER SMALL CAPITAL K",
            ),
            "l": ("CYRILLIC SMALL LETTER PALOCHKA", "LATIN LETTER SMALL CAPITAL L"),
            "m": ("CYRILLIC SMALL LETTER EM", "LATIN LETTER SMALL CAPITAL M"),
            "n": ("GREEK SMALL LETTER ETA", "LATIN LETTER SMALL CAPITAL N"),
            "o": (
                "CYRILLIC SMALL LETTER O",
                "GREEK SMALL LETTER OMICRON",
                "GREEK SMALL LETTER SIGMA",
                "LATIN LETTER SMALL CAPITAL O",
            ),
            "p": (
                "CYRILLIC SMALL LETTER ER",
                "GREEK SMALL LETTER RHO",
                "LATIN LETTER SMALL CAPITAL P",
            ),
            "q": ("CYRILLIC SMALL LETTER QA",),
            "r": ("CYRILLIC SMALL LETTER GHE", "LATIN LETTER SMALL CAPITAL R"),
            "s": ("CYRILLIC SMALL LETTER DZE", "LATIN LETTER SMALL CAPITAL S"),
            "t": (
                "CYRILLIC SMALL LETTER TE",
                "GREEK SMALL LETTER TAU",
                "LATIN LETTER SMALL CAPITAL T",
            ),
            "u": ("GREEK SMALL LETTER UPSILON", "LATIN LETTER SMALL CAPITAL U"),
            "v": ("GREEK SMALL LETTER NU", "LATIN LETTER SMALL CAPITAL V"),
            "w": (
                "CYRILLIC SMALL LETTER WE",
                "GREEK SMALL LETTER OMEGA",
                "LATIN LETTER SMALL CAPITAL W",
            ),
            "x": ("CYRILLIC SMALL LETTER HA", "GREEK SMALL LETTER CHI"),
            "y": (
                "CYRILLIC SMALL LETTER U",
                "GREEK SMALL LETTER GAMMA",
                "LATIN LETTER SMALL CAPITAL Y",
            ),
            "z": ("LATIN LETTER SMALL CAPITAL Z",),
        }.items()
        for name in names
    }
)


def canonical(name: str) -> str:
    """The form every identity comparison uses: NFKC, case folded (NFKC again), trimmed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return folded.strip()


def grants(listed: Iterable[str], user: str) -> bool:
    """Whether the decider `user` is one of the names `listed`, where being listed grants a
    right (approver lists, the requester's cancel).

    A listing matches in any spelling of the same canonical name (`Alice ` lists `alice`),
    but only for a decider whose own name is canonical already: `ALICE`, `alice` in full-width
    letters or `alice ` are other Kubernetes accounts than `alice`, and match only a listing
    spelled exactly as they are. Folding widens a comparison, so it is used where it takes a
    right away (`same_person`), and here only from the listing's side.
    """
    names = tuple(listed)
    if user in names:
        return True
    name = canonical(user)
    return name == user and any(canonical(u) == name for u in names)


def name_problem(value: str, field: str) -> str | None:
    """Why `value` cannot be used as a person's name in `field`, or None when it can.

    The answer names the field, the value and the offending character, and says what to write.
    """
    shown = f"{field} {value!r}"
    name = canonical(value)
    for char in unicodedata.normalize("NFKC", value):
        if _invisible(char):
            return (
                f"{shown} contains {_describe(char)}, an invisible or control character; "
                "write the name without it"
            )
    if not name:
        return f"{shown} is empty or only whitespace; write the person's Kubernetes user name"
    scripts: list[str] = []
    for char in name:
        script = _script(char)
        if script is None:
            return (
                f"{shown} contains {_describe(char)}, which could pass for a different "
                "character; write the name in ASCII letters (docs/security.md, Identities)"
            )
        if script and script not in scripts:
            scripts.append(script)
    if len(scripts) > 1:
        return (
            f"{shown} mixes letters of the {' and '.join(scripts)} scripts; write the name "
            "in one script"
        )
    return None


def on_behalf_of_problem(spec: Mapping[str, Any]) -> str | None:
    """Why admission must refuse this ApprovalRequest `spec`'s `requester.onBehalfOf`, or None.

    A missing or empty `onBehalfOf` is fine (the field is optional); anything else must pass
    `name_problem`, because the self-approval ban compares it with the deciders' names.
    """
    requester = spec.get("requester")
    value = requester.get("onBehalfOf") if isinstance(requester, Mapping) else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return f"{ON_BEHALF_OF_FIELD} must be a string (a person's Kubernetes user name)"
    return name_problem(value, ON_BEHALF_OF_FIELD)


def same_person(a: str, b: str) -> bool:
    """Whether `a` and `b` could name the same human (fails closed: in doubt, they do).

    Used where a match takes a right away (self-approval, counting a quorum), never where it
    grants one: there, compare `canonical` forms.
    """
    if _keys(canonical(a)) & _keys(canonical(b)):
        return True
    if name_problem(a, "") is None and name_problem(b, "") is None:
        return False
    return bool(_keys(_loose(a)) & _keys(_loose(b)))


def meaningful_text(text: str) -> bool:
    """Whether `text` has anything visible once whitespace and invisible characters are gone.

    Whitespace, control and format characters (zero-width spaces and joiners, bidi marks, the
    byte-order mark), other invisible code points and accents standing alone do not count;
    anything else does, however short (`no`, `?`).
    """
    return any(
        not char.isspace() and not _invisible(char) and not unicodedata.combining(char)
        for char in text
    )


def _keys(name: str) -> set[str]:
    """The spellings of one person's name that count as that person."""
    keys = {name} if name else set()
    tail = name.rsplit(":", 1)[-1].rsplit("#", 1)[-1]  # oidc:alice, https://issuer#alice
    local = tail.split("@", 1)[0].split("+", 1)[0]  # alice+ci@example.com
    keys.update(key for key in (tail, local) if key)
    return keys


def _loose(name: str) -> str:
    """`canonical` without invisible characters or accents, look-alike letters folded."""
    visible = "".join(char for char in canonical(name) if not _invisible(char))
    bare = "".join(
        char for char in unicodedata.normalize("NFD", visible) if not unicodedata.combining(char)
    )
    return bare.translate(_LOOKALIKES).strip()


def _invisible(char: str) -> bool:
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return True
    code = ord(char)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def _script(char: str) -> str | None:
    """The script a character of a canonical name counts for: "" for ASCII non-letters, a
    script key for accepted letters, None for a refused character."""
    if char.isascii():
        return "LATIN" if char.isalpha() else ""
    category = unicodedata.category(char)
    if category[0] not in "LMN" or category in ("Nl", "No"):
        return None  # non-ASCII punctuation, symbol, space, or a number NFKC left alone
    name = unicodedata.name(char, "")
    if name.startswith("COMBINING "):
        return None  # an accent NFKC could not combine with its letter (a̶, a stroke overlay)
    word = name.split(" ", 1)[0].split("-", 1)[0]
    if word == "LATIN":
        base = unicodedata.normalize("NFD", char)[0]
        return "LATIN" if base.isascii() and base.isalpha() else None
    script = "CJK" if word in _CJK_WORDS else word
    return script if script in SCRIPTS_WITHOUT_LATIN_LOOKALIKES else None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed character')})"

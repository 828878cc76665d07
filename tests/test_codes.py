"""The Codes section of DESIGN.md: generation, check symbol, normalisation, scanned URLs."""

import pytest

from clinic.services import codes
from clinic.services.codes import ALPHABET, CodeKind, CodeProblem, InvalidCode, parse_code

SAMPLE_SIZE = 10_000


@pytest.fixture(scope="module")
def sample_codes():
    return [codes.generate_code(length) for length in (8, 12) for _ in range(SAMPLE_SIZE // 2)]


def test_generated_codes_use_the_alphabet_and_validate(sample_codes):
    assert len(set(sample_codes)) == len(sample_codes)
    for code in sample_codes:
        assert set(code) <= set(ALPHABET)
        assert codes.has_valid_check(code)


def test_every_single_substitution_is_detected(sample_codes):
    for code in sample_codes:
        for position, original in enumerate(code):
            for replacement in ALPHABET:
                if replacement != original:
                    typo = code[:position] + replacement + code[position + 1:]
                    assert not codes.has_valid_check(typo), (code, typo)


def test_every_adjacent_transposition_is_detected(sample_codes):
    for code in sample_codes:
        for position in range(len(code) - 1):
            a, b = code[position], code[position + 1]
            if a != b:
                swapped = code[:position] + b + a + code[position + 2:]
                assert not codes.has_valid_check(swapped), (code, swapped)


def test_the_transposition_luhn_mod_32_misses_is_caught():
    body = "0Z" + "ABCDE"
    code = body + codes.check_symbol(body)
    assert codes.has_valid_check(code)
    assert not codes.has_valid_check("Z0" + code[2:])


def test_generation_uses_secrets_not_random(monkeypatch):
    import random

    def forbidden(*_args, **_kwargs):
        raise AssertionError("random must not be used for codes")

    monkeypatch.setattr(random, "choice", forbidden)
    monkeypatch.setattr(random, "random", forbidden)
    assert codes.has_valid_check(codes.generate_bearer_code())


@pytest.fixture
def personal_code():
    return codes.generate_personal_code()


@pytest.mark.parametrize("dress", [
    lambda c: c,
    lambda c: c.lower(),
    lambda c: f"{c[:4]}-{c[4:]}",
    lambda c: f"  {c[:4]} {c[4:]}  ",
    lambda c: f"https://clinic.example/r/{c[:4]}-{c[4:]}",
    lambda c: f"https://clinic.example/r/{c}?utm_source=poster#top",
    lambda c: f"http://127.0.0.1:5000/r/{c.lower()}/",
    lambda c: f"/r/{c}",
])
def test_typed_and_scanned_forms_parse_to_the_code(personal_code, dress):
    parsed = parse_code(dress(personal_code))
    assert parsed.code == personal_code
    assert parsed.kind is CodeKind.PERSONAL


def test_confusable_letters_read_as_digits():
    body = "1O0L1I2"  # I and L read as 1, O as 0
    canonical = "1001112"
    code = canonical + codes.check_symbol(canonical)
    assert parse_code(body + code[-1]).code == code


def test_bearer_codes_are_twelve_symbols_and_display_in_fours():
    code = codes.generate_bearer_code()
    parsed = parse_code(code)
    assert parsed.kind is CodeKind.BEARER
    assert parsed.display == f"{code[:4]}-{code[4:8]}-{code[8:]}"


@pytest.mark.parametrize("raw, problem", [
    ("", CodeProblem.EMPTY),
    ("   ", CodeProblem.EMPTY),
    (None, CodeProblem.EMPTY),
    ("https://clinic.example/", CodeProblem.EMPTY),
    ("ABC", CodeProblem.WRONG_LENGTH),
    ("ABCDEFGHJ", CodeProblem.WRONG_LENGTH),
    ("A" * 5000, CodeProblem.WRONG_LENGTH),
    ("ABCD-EFG!", CodeProblem.BAD_CHARACTERS),
    ("王小明王小明王小", CodeProblem.BAD_CHARACTERS),
    ("<script>", CodeProblem.BAD_CHARACTERS),
    ("UUUUUUUU", CodeProblem.BAD_CHARACTERS),
    ("'; DROP TABLE patients; --", CodeProblem.BAD_CHARACTERS),
    ("🎉🎉🎉🎉🎉🎉🎉🎉", CodeProblem.BAD_CHARACTERS),
])
def test_nonsense_is_refused_with_its_reason(raw, problem):
    with pytest.raises(InvalidCode) as refused:
        parse_code(raw)
    assert refused.value.problem is problem
    assert refused.value.message


def test_a_typo_is_reported_as_mistyped(personal_code):
    position = 3
    replacement = next(s for s in ALPHABET if s != personal_code[position])
    with pytest.raises(InvalidCode) as refused:
        parse_code(personal_code[:position] + replacement + personal_code[position + 1:])
    assert refused.value.problem is CodeProblem.MISTYPED
    assert "mistyped" in refused.value.message

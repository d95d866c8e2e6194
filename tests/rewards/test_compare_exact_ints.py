"""Float tolerance applies only where the expected token or value is a non-integer number."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import stdout_matches, values_equal

TOL = 1e-6
BIG_TOL = 1e-3  # relative 1e-3 of 1e9 is 1e6: wide enough for any near-miss mod-prime answer

# ------------------------------------------------------------------ stdout: expected integers


@pytest.mark.parametrize(
    "actual, expected",
    [
        ("1000000507", "1000000007"),  # a wrong answer mod 1e9+7, within relative tolerance
        ("1000000006", "1000000007"),
        ("998244354", "998244353"),
        ("-13", "-12"),  # negative ints
        ("-12.0", "-12"),
        ("5.0", "5"),  # an int printed as a float
        ("5.000001", "5"),
        ("5e0", "5"),
        ("7", "007"),  # leading zeros are part of the expected text
        ("+5", "5"),
        ("5", "+5"),
        ("0.0", "0"),
        ("-0", "0"),
    ],
)
@pytest.mark.parametrize("tol", [TOL, BIG_TOL, 1.0])
def test_stdout_expected_int_needs_equal_text(actual: str, expected: str, tol: float) -> None:
    assert not stdout_matches(actual, expected, float_tol=tol)
    assert not stdout_matches(f"1 {actual} 2\n", f"1 {expected} 2\n", float_tol=tol)


@pytest.mark.parametrize("text", ["1000000007", "-12", "007", "0", "+5", "123456789012345678901234567890"])
def test_stdout_expected_int_equal_text_matches(text: str) -> None:
    assert stdout_matches(f"{text}\n", text, float_tol=BIG_TOL)
    assert stdout_matches(f"3 {text}\n", f"3   {text}", float_tol=BIG_TOL)


def test_stdout_mixed_line_int_exact_float_tolerant() -> None:
    expected = "1000000007 0.333333\n-4 2.5\n"
    assert stdout_matches("1000000007 0.3333334\n-4 2.5000001\n", expected, float_tol=TOL)
    assert not stdout_matches("1000000507 0.333333\n-4 2.5\n", expected, float_tol=BIG_TOL)
    assert not stdout_matches("1000000007 0.333333\n-4.0 2.5\n", expected, float_tol=BIG_TOL)
    assert not stdout_matches("1000000007 0.333333\n-5 2.5\n", expected, float_tol=1.0)


# ------------------------------------------------------------------ stdout: expected non-integers


@pytest.mark.parametrize(
    "actual, expected",
    [
        ("2.5000001", "2.5"),
        ("2.4999999", "2.5"),
        ("-0.3333334", "-0.333333"),
        ("0.001", "1e-3"),
        ("1.0000005e-3", "1e-3"),
        ("3", "3.0"),  # an expected float literal tolerates an int print
        ("3.0000001", "3.0"),
        ("1.5", "1.50"),
        ("5", "5."),
        ("1000000000.5", "1e9"),  # exponent syntax is a float literal, even if whole
    ],
)
def test_stdout_expected_float_stays_tolerant(actual: str, expected: str) -> None:
    assert stdout_matches(actual, expected, float_tol=TOL)
    assert stdout_matches(f"x {actual}\n", f"x {expected}\n", float_tol=TOL)
    assert not stdout_matches(actual, expected)  # no tolerance given: text must be equal


@pytest.mark.parametrize(
    "actual, expected",
    [
        ("2.6", "2.5"),
        ("-2.5", "2.5"),
        ("abc", "2.5"),
        ("inf", "2.5"),
        ("nan", "2.5"),
        ("1_0.5", "10.5"),  # float() accepts underscores; a printed number does not have them
        ("0x1p1", "2.0"),
    ],
)
def test_stdout_expected_float_rejects_far_or_non_numbers(actual: str, expected: str) -> None:
    assert not stdout_matches(actual, expected, float_tol=TOL)


@pytest.mark.parametrize(
    "actual, expected",
    [
        ("inf", "Infinity"),
        ("1e999", "inf"),
        ("1e400", "1e999"),  # both overflow to inf: not a tolerance match
        ("NaN", "nan"),
        ("nan", "NaN"),
        ("-inf", "-infinity"),
    ],
)
def test_stdout_nan_inf_need_equal_text(actual: str, expected: str) -> None:
    assert not stdout_matches(actual, expected, float_tol=1.0)
    assert stdout_matches(expected, expected, float_tol=1.0)


def test_stdout_long_number_tokens_are_fast() -> None:
    digits = "1" * 200_000
    assert not stdout_matches(digits + "x", "2.5", float_tol=TOL)
    assert not stdout_matches(digits, digits[:-1] + "2", float_tol=TOL)
    assert not stdout_matches(digits + ".0", digits + ".0000000001", float_tol=TOL)  # overflows to inf
    assert stdout_matches(digits[:300] + ".0", digits[:300] + ".0000000001", float_tol=TOL)


# ------------------------------------------------------------------ values: expected ints


@pytest.mark.parametrize(
    "actual, expected",
    [
        (1000000507, 1000000007),
        (1000000006, 1000000007),
        (998244354, 998244353),
        (-13, -12),
        (-12.0, -12),  # an int returned as a float
        (5.0, 5),
        (5.000001, 5),
        (0.0, 0),
        (True, 1),
        (None, 0),
        ("5", 5),
        (10**400 + 1, 10**400),
    ],
)
@pytest.mark.parametrize("tol", [TOL, BIG_TOL, 1.0])
def test_values_expected_int_needs_equal_int(actual: object, expected: int, tol: float) -> None:
    assert not values_equal(actual, expected, float_tol=tol)
    assert not values_equal([1, [actual]], [1, [expected]], float_tol=tol)
    assert not values_equal({"k": [actual, 2.5]}, {"k": [expected, 2.5]}, float_tol=tol)


@pytest.mark.parametrize("value", [1000000007, -12, 0, 10**400, -(10**30)])
def test_values_expected_int_equal_int_matches(value: int) -> None:
    assert values_equal(value, value, float_tol=BIG_TOL)
    assert values_equal([[value], {"a": value}], [[value], {"a": value}], float_tol=BIG_TOL)


def test_values_without_tolerance_keep_int_float_by_value() -> None:
    assert values_equal(2.0, 2) and values_equal(2, 2.0)
    assert values_equal([1, [2.0, {"a": 3}]], [1.0, (2, {"a": 3.0})])
    assert not values_equal(1000000507, 1000000007) and not values_equal(5.000001, 5)
    assert values_equal(10**400, 10**400) and not values_equal(10**400, 1.5) and not values_equal(1.5, 10**400)


# ------------------------------------------------------------------ values: expected floats


@pytest.mark.parametrize(
    "actual, expected",
    [
        (2.5000001, 2.5),
        (-0.3333334, -0.333333),
        (0.1 + 0.2, 0.3),
        (3, 3.0),  # an expected float accepts an int within tolerance
        (3, 3.0000001),
        (-7, -7.0),
        (1e9 + 0.5, 1e9),
        (math.inf, math.inf),
        (math.nan, math.nan),
    ],
)
def test_values_expected_float_stays_tolerant(actual: float | int, expected: float) -> None:
    assert values_equal(actual, expected, float_tol=TOL)
    assert values_equal([[actual], {"x": actual}], [[expected], {"x": expected}], float_tol=TOL)
    assert values_equal({"n": 1000000007, "p": [actual]}, {"n": 1000000007, "p": [expected]}, float_tol=TOL)


@pytest.mark.parametrize(
    "actual, expected",
    [(2.6, 2.5), (-2.5, 2.5), (math.nan, 2.5), (math.inf, 1e308), (10**400, 1e308), (True, 1.0), ("2.5", 2.5)],
)
def test_values_expected_float_rejects_far_or_non_numbers(actual: object, expected: float) -> None:
    assert not values_equal(actual, expected, float_tol=TOL)
    assert not values_equal([actual], [expected], float_tol=TOL)


def test_values_nested_mix_of_int_and_float_expectations() -> None:
    expected = {"count": 1000000007, "mean": 0.333333, "rows": [[1, 2.5], [-3, -0.5]]}
    assert values_equal({"count": 1000000007, "mean": 0.3333334, "rows": [[1, 2.5000001], [-3, -0.5]]}, expected,
                        float_tol=TOL)
    assert not values_equal({"count": 1000000507, "mean": 0.333333, "rows": [[1, 2.5], [-3, -0.5]]}, expected,
                            float_tol=BIG_TOL)
    assert not values_equal({"count": 1000000007, "mean": 0.333333, "rows": [[1, 2.5], [-3.0, -0.5]]}, expected,
                            float_tol=BIG_TOL)
    assert not values_equal({"count": 1000000007, "mean": 0.333333, "rows": [[1.0, 2.5], [-3, -0.5]]}, expected,
                            float_tol=BIG_TOL)


# ------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(st.integers(), st.integers(), st.floats(min_value=0, max_value=1))
def test_values_int_expectations_are_exact_under_any_tolerance(a: int, e: int, tol: float) -> None:
    assert values_equal(a, e, float_tol=tol) is (a == e)
    if abs(a) < 2**53:
        assert values_equal(float(a), e, float_tol=tol) is False


@settings(max_examples=300, deadline=None)
@given(st.integers(), st.integers(), st.floats(min_value=0, max_value=1))
def test_stdout_int_expectations_are_exact_under_any_tolerance(a: int, e: int, tol: float) -> None:
    assert stdout_matches(str(a), str(e), float_tol=tol) is (a == e)
    assert stdout_matches(f"{a}.0", str(e), float_tol=tol) is False


def test_the_documented_call_value_rule() -> None:
    """README "call": Python's == on the JSON data, except bools and integers under float_tol."""
    from rewards import values_equal

    assert values_equal(3.0, 3) and values_equal(3, 3.0)  # as `assert f() == 3` would accept
    assert values_equal((1, 2), [1, 2]) and values_equal([1, (2, 3)], [1, [2, 3]])  # JSON has no tuples
    assert not values_equal(True, 1) and not values_equal(1, True) and not values_equal(0, False)
    assert not values_equal([True], [1]) and not values_equal({"a": 1}, {"a": True})
    assert not values_equal(5.0, 5, float_tol=1e-9) and values_equal(5, 5.0, float_tol=1e-9)
    assert values_equal(float("nan"), float("nan")) and not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal("1", 1) and not values_equal(None, 0)

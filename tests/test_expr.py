"""The expression language of computed points and alarms (gateway/expr.py): what it accepts,
what it refuses and why, and that its values are those of the formula."""

from __future__ import annotations

import math
import re

import pytest
from edgegw.gateway.expr import BOOL, NUMBER, STRING, EvalError, ExprError, Ref, check, compile_expr, parse
from hypothesis import given, settings
from hypothesis import strategies as st

KINDS = {
    Ref("active_power"): NUMBER,
    Ref("reactive_power"): NUMBER,
    Ref("current_l1"): NUMBER,
    Ref("running"): BOOL,
    Ref("recipe"): STRING,
    Ref("recipe_next"): STRING,
    Ref("temp", "oven-2"): NUMBER,
}
KNOWN = [str(r) for r in KINDS]


def run(text: str, **values: object) -> object:
    expr = parse(text, ["oven-2"])
    check(expr, KINDS.get, KNOWN)
    env = {Ref(k): v for k, v in values.items()}
    env[Ref("temp", "oven-2")] = values.get("oven_temp", 0)
    return compile_expr(expr)(env)


def refused(text: str) -> str:
    with pytest.raises(ExprError) as info:
        check(parse(text, ["oven-2"]), KINDS.get, KNOWN)
    return str(info.value)


def test_the_design_examples_compute_their_formula() -> None:
    assert run("sqrt(active_power**2 + reactive_power**2)", active_power=3.0, reactive_power=4.0) == 5.0
    assert run("current_l1 > 80", current_l1=80.5) is True
    assert run("current_l1 < 75", current_l1=80.5) is False
    assert run("max(current_l1, 10) - min(1, 2, 3)", current_l1=4) == 9
    assert run("1 if running else 0", running=True) == 1
    assert run("round(active_power / 3, 2)", active_power=10) == 3.33
    assert run("abs(-current_l1) % 7", current_l1=15) == 1
    assert run("not running and current_l1 >= 1", running=False, current_l1=1) is True
    assert run("recipe == recipe_next", recipe="A", recipe_next="A") is True
    assert run("10 < current_l1 <= 20", current_l1=20) is True
    assert run("10 < current_l1 <= 20", current_l1=21) is False


def test_another_devices_point_is_a_dotted_name() -> None:
    expr = parse("oven2.temp - 3")
    assert Ref("temp", "oven2") in expr.refs
    kinds = {Ref("temp", "oven2"): NUMBER}
    assert check(expr, kinds.get) == NUMBER
    assert compile_expr(expr)({Ref("temp", "oven2"): 10.5}) == 7.5


def test_a_device_id_with_a_hyphen_is_a_device_not_a_subtraction() -> None:
    assert run("oven-2.temp - current_l1", oven_temp=250.0, current_l1=50) == 200.0
    expr = parse("im-01.temp - im-01.setpoint + im-02.temp", ["im-01", "im-02", "9lines"])
    assert expr.refs == {Ref("temp", "im-01"), Ref("setpoint", "im-01"), Ref("temp", "im-02")}
    # not a device of the config: the grammar's subtraction
    assert parse("im-x3.temp", ["im-01"]).refs == {Ref("im"), Ref("temp", "x3")}
    assert parse("9lines.speed * 2", ["9lines"]).refs == {Ref("speed", "9lines")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "__import__() is not a function of the language"),
        ("__import__('os').system('id')", "only abs, min, max, sqrt, round may be called"),
        ("current_l1.real.imag", "only device.point may have a dot"),
        ("active_power[0]", "indexing"),
        ("'abc'", "a string is not in the language"),
        ("(lambda: 1)()", "may be called"),
        ("[x for x in current_l1]", "a comprehension"),
        ("current_l1 // 2", "// (write round(a / b) or a % b)"),
        ("current_l1 in current_l1", "in is not in the language"),
        ("current_l1 is None", "is (write ==)"),
        ("open('/etc/passwd')", "open() is not a function of the language"),
        ("current_l1 +", "not an expression"),
        ("x := 1", "not an expression"),
        ("sqrt", "sqrt is a function"),
        ("round(current_l1, digits=2)", "takes no keyword arguments"),
        ("current_l1 & 1", "& is not in the language"),
        ("~running", "~ is not in the language"),
        ("None", "None is not in the language"),
        ("1j", "1j is not in the language"),
        ("", "an expression is needed"),
    ],
)
def test_what_is_not_in_the_language_is_refused_by_name(text: str, message: str) -> None:
    assert message in refused(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("curent_l1 > 80", "unknown name curent_l1 (did you mean current_l1?)"),
        ("oven3.temp", "unknown name oven3.temp (did you mean oven-2.temp?)"),
        ("running + 1", "+ needs numbers: running is a bool (write 1 if … else 0)"),
        ("current_l1 and running", "and needs bools (comparisons): current_l1 is a number"),
        ("not current_l1", "not needs a bool"),
        ("recipe > 3", "> needs numbers, not a string"),
        ("recipe == 3", "== compares a string with a number"),
        ("1 if current_l1 else 0", "the condition of … if … else … needs a bool"),
        ("1 if running else running", "the two branches of … if … else … differ"),
        ("sqrt(1, 2)", "sqrt() takes one argument, not 2"),
        ("min(current_l1)", "min() takes two or more arguments"),
        ("round(current_l1, current_l1)", "whole number of decimals"),
        ("abs(recipe)", "abs() needs numbers: recipe is a string"),
    ],
)
def test_names_and_types_are_checked_before_anything_runs(text: str, message: str) -> None:
    assert message in refused(text)


def test_values_it_cannot_have_are_eval_errors_not_exceptions() -> None:
    for text, values, reason in [
        ("active_power / current_l1", {"active_power": 1, "current_l1": 0}, "division by zero"),
        ("active_power % current_l1", {"active_power": 1, "current_l1": 0}, "modulo by zero"),
        ("sqrt(current_l1)", {"current_l1": -4}, "sqrt of a negative number"),
        ("current_l1 ** 0.5", {"current_l1": -4}, "not a real number"),
        ("9 ** 9 ** 9", {}, "** gave no number"),
        ("current_l1 ** current_l1", {"current_l1": 1e6}, "** gave no number"),
        ("current_l1 * 1e308 * 10", {"current_l1": 10}, "gave inf"),
    ]:
        with pytest.raises(EvalError, match=re.escape(reason)):
            run(text, **values)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ExprError):
        parse("(" * 5000 + "1" + ")" * 5000)
    with pytest.raises(ExprError, match="characters long"):
        parse("1 + " * 1000 + "1")


NUMBERS = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda f: round(f, 3)),
)


@st.composite
def arithmetic(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        return draw(st.sampled_from(["active_power", "reactive_power", repr(draw(NUMBERS))]))
    a = draw(arithmetic(depth + 1))
    b = draw(arithmetic(depth + 1))
    return draw(
        st.sampled_from(
            [
                f"({a} {draw(st.sampled_from(['+', '-', '*', '/']))} {b})",
                f"-({a})",
                f"abs({a})",
                f"min({a}, {b})",
                f"max({a}, {b})",
                f"round({a}, 2)",
                f"({a} if {a} > {b} else {b})",
            ]
        )
    )


@settings(max_examples=300, deadline=None)
@given(arithmetic(), NUMBERS, NUMBERS)
def test_arithmetic_equals_the_formula(text: str, p: float, q: float) -> None:
    """Against Python's own arithmetic on the same text (the reference here, in a test only)."""
    expr = parse(text)
    assert check(expr, KINDS.get) == NUMBER
    env = {Ref("active_power"): p, Ref("reactive_power"): q}
    try:
        expected = eval(
            text,
            {"__builtins__": {}, "abs": abs, "min": min, "max": max, "round": round},
            {"active_power": p, "reactive_power": q},
        )
    except ZeroDivisionError:
        with pytest.raises(EvalError):
            compile_expr(expr)(env)
        return
    except OverflowError:
        return
    try:
        got = compile_expr(expr)(env)
    except EvalError:
        assert isinstance(expected, float) and not math.isfinite(expected)
        return
    assert got == expected or math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_parsed_or_refused_never_a_crash(text: str) -> None:
    try:
        expr = parse(text)
    except ExprError:
        return
    try:
        check(expr, KINDS.get, KNOWN)
    except ExprError:
        return

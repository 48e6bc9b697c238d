from edgegw.drivers.base import PointError
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.normalise import Normaliser


def entries():
    return [
        DictionaryEntry(id="t", type="int16", scale=0.1, range=(0, 100), deadband=0.5),
        DictionaryEntry(id="f", type="float32"),
        DictionaryEntry(id="s", type="string"),
        DictionaryEntry(id="b", type="bool"),
    ]


def test_quality_scale_and_float32_rounding():
    n = Normaliser(entries())
    out = n.normalise([2153, 215.3000030517578, "SN-1", True])
    assert [(r.id, r.v, r.q) for r in out] == [
        ("t", 215.3, "uncertain"),
        ("f", 215.3, "good"),
        ("s", "SN-1", "good"),
        ("b", True, "good"),
    ]
    assert out[0].reason == "outside range [0, 100]"


def test_bad_values_carry_their_reason_and_nan_is_bad():
    out = Normaliser(entries()).normalise(
        [PointError("modbus exception 2 (illegal data address)"), float("nan"), "x", False]
    )
    assert (out[0].v, out[0].q, out[0].reason) == (None, "bad", "modbus exception 2 (illegal data address)")
    assert (out[1].v, out[1].q) == (None, "bad")


def test_on_change_respects_deadband_quality_and_heartbeat():
    n = Normaliser(entries(), publish="on_change", heartbeat=60)
    first, full = n.to_publish(n.normalise([500, 1.0, "a", True]), now=0)
    assert full and len(first) == 4
    same, full = n.to_publish(n.normalise([504, 1.0, "a", True]), now=1)  # 50.4 vs 50.0: within 0.5
    assert not full and same == []
    moved, _ = n.to_publish(n.normalise([506, 1.0, "b", True]), now=2)  # 50.6: beyond deadband
    assert [r.id for r in moved] == ["t", "s"]
    bad, _ = n.to_publish(n.normalise([506, PointError("timeout"), "b", True]), now=3)
    assert [(r.id, r.q) for r in bad] == [("f", "bad")]
    beat, full = n.to_publish(n.normalise([506, 1.0, "b", True]), now=61)
    assert full and len(beat) == 4


# ---- the compiled function against the general path, on random points and values ----

import pytest  # noqa: E402
from edgegw.drivers.base import ABSENT, Uncertain  # noqa: E402
from edgegw.gateway.normalise import _general  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TYPES = ["int8", "uint16", "int16", "int32", "uint64", "float32", "float64", "bool", "string"]
finite = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def point(draw: st.DrawFn) -> DictionaryEntry:
    type_ = draw(st.sampled_from(TYPES))
    numeric = type_ not in ("bool", "string")
    lo = draw(finite)
    return DictionaryEntry(
        id=f"p{draw(st.integers(0, 10**6))}",
        type=type_,
        scale=draw(st.sampled_from([1.0, 0.1, 0.01, 2.5, -1.0])) if numeric else 1.0,
        offset=draw(st.sampled_from([0.0, -40.0, 0.5])) if numeric else 0.0,
        range=(lo, lo + draw(st.floats(0, 1e5))) if numeric and draw(st.booleans()) else None,
    )


raw_value = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=5),
    st.just(ABSENT),
    st.builds(PointError, st.text(min_size=1, max_size=8)),
    st.builds(Uncertain, st.integers(-100, 100), st.just("UncertainLastUsableValue")),
    st.lists(st.integers(0, 9), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(point(), min_size=1, max_size=8), st.data(), st.booleans())
def test_the_compiled_normaliser_agrees_with_the_general_path(points, data, keep_absent):
    n = Normaliser(points)
    raw = [data.draw(raw_value) for _ in points]
    slow = _general(n._plan)
    expected: list = []
    try:
        for i, v in enumerate(raw):
            slow(i, v, expected, keep_absent)
    except TypeError:  # a value of a kind no driver gives for the point ("a" * 0.1): both refuse it
        with pytest.raises(TypeError):
            n._normalise(raw, keep_absent)
        return
    got = n._normalise(raw, keep_absent)
    # repr: a NaN passed through (a float given for a string point) equals itself
    assert [(r.id, repr(r.v), r.q, r.reason) for r in got] == [
        (r.id, repr(r.v), r.q, r.reason) for r in expected
    ]
    # the same kinds too: 2 and 2.0 are equal, but publish differently
    assert [type(r.v) for r in got] == [type(r.v) for r in expected]


@settings(max_examples=500, deadline=None)
@given(
    st.integers(-(2**40), 2**40),
    st.sampled_from([0.1, 0.01, 0.001, 0.5, 2.5, 0.25, 1e-4, 10.0, -0.1, 0.0625]),
    st.sampled_from([0.0, -40.0, 273.15, 0.5, -0.05, 1000.0]),
)
def test_integer_scaling_is_what_round_gives(raw, scale, offset):
    from edgegw.gateway.normalise import _decimals, _exact

    digits = max(_decimals(scale), _decimals(offset))
    assert _exact(raw, scale, offset, digits) == round(raw * scale + offset, digits)

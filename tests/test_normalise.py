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

"""Properties of the read planner: coverage, limits, areas, and how few requests it makes."""

import itertools

from edgegw.drivers.modbus.planner import RegisterSpan, plan_reads
from hypothesis import given, settings
from hypothesis import strategies as st

AREAS = ["hr", "ir", "co", "di"]


@st.composite
def spans(draw):
    n = draw(st.integers(0, 60))
    out = []
    for _ in range(n):
        area = draw(st.sampled_from(AREAS))
        width = 1 if area in ("co", "di") else draw(st.sampled_from([1, 1, 2, 2, 4, 10]))
        out.append(RegisterSpan(area, draw(st.integers(0, 3000)), width))
    return out


@settings(max_examples=300, deadline=None)
@given(spans(), st.integers(10, 125), st.integers(16, 2000), st.integers(0, 40))
def test_plan_covers_every_point_within_limits(points, max_regs, max_bits, max_gap):
    plan = plan_reads(points, max_regs, max_bits, max_gap)
    covered = [0] * len(points)
    for req in plan:
        limit = max_bits if req.area in ("co", "di") else max_regs
        assert 1 <= req.count <= limit
        for i in req.points:
            p = points[i]
            covered[i] += 1
            assert p.area == req.area  # never crosses areas (and a device has one unit id)
            assert req.start <= p.offset and p.offset + p.width <= req.end
    assert covered == [1] * len(points)


@settings(max_examples=200, deadline=None)
@given(spans(), st.integers(0, 40))
def test_plan_is_no_larger_than_one_request_per_point_and_merges_neighbours(points, max_gap):
    plan = plan_reads(points, 125, 2000, max_gap)
    assert len(plan) <= len(points)
    # consecutive requests of one area are separated by more than max_gap or hit the limit
    by_area = {}
    for req in plan:
        by_area.setdefault(req.area, []).append(req)
    for reqs in by_area.values():
        for a, b in itertools.pairwise(reqs):
            limit = 2000 if a.area in ("co", "di") else 125
            assert (
                b.start - a.end > max_gap
                or (b.end - a.start) > limit
                or any(points[i].offset + points[i].width - a.start > limit for i in b.points)
            )


def test_contiguous_block_is_one_request():
    points = [RegisterSpan("hr", i * 2, 2) for i in range(50)]  # 100 registers of float32
    plan = plan_reads(points)
    assert [(r.start, r.count) for r in plan] == [(0, 100)]


def test_limit_splits_and_gap_separates():
    points = [RegisterSpan("hr", i, 1) for i in range(200)] + [RegisterSpan("hr", 1000, 2)]
    plan = plan_reads(points, max_registers=100, max_gap=16)
    assert [(r.start, r.count) for r in plan] == [(0, 100), (100, 100), (1000, 2)]


def test_areas_never_merge():
    plan = plan_reads([RegisterSpan("hr", 0, 1), RegisterSpan("ir", 1, 1)])
    assert sorted(r.area for r in plan) == ["hr", "ir"]

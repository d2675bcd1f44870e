"""The latency model: what each node costs float and int8, and the price of keeping nodes float."""

from __future__ import annotations

import qcc
from qcc.frontend import load
from qcc.latency import RATES, LatencyModel, Tensor, estimate
from tests.conftest import build_model, random_feeds

CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[16,8,3,3] w1, float[8,16,3,3] w2, float[1,8,48,48] x) => (float[1,8,48,48] y) {
  h = Conv <pads = [1, 1, 1, 1]> (x, w1)
  r = Relu(h)
  y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}
"""


def _chain_model(elements: int = 100) -> LatencyModel:
    """n1 -t1-> n2 -t2-> n3 -t3-> n4, every node 1 ms float and 0.25 ms int8; x enters n1 from the
    float graph input."""
    nodes = ["n1", "n2", "n3", "n4"]
    tensors = {
        "x": Tensor(frozenset({"n1"}), joins_float=True, elements=elements),
        "t1": Tensor(frozenset({"n1", "n2"}), joins_float=False, elements=elements),
        "t2": Tensor(frozenset({"n2", "n3"}), joins_float=False, elements=elements),
        "t3": Tensor(frozenset({"n3", "n4"}), joins_float=False, elements=elements),
    }
    return LatencyModel(
        dict.fromkeys(nodes, 1.0), dict.fromkeys(nodes, 0.25), 4.0, 1.0, ms_per_element=0.001, tensors=tensors
    )


def test_a_float_island_pays_for_the_conversions_at_its_edges():
    model = _chain_model()
    # n2 alone: t1 and t2 become conversions (100 elements each, 0.1 ms each).
    assert abs(model.cost({"n2"}) - (0.75 + 0.2)) < 1e-9
    # n2 and n3 together: t2 is float inside the region; t1 and t3 convert.
    assert abs(model.cost({"n2", "n3"}) - (1.5 + 0.2)) < 1e-9
    # n1 floats next to the float input: x no longer converts, t1 does.
    assert abs(model.cost({"n1"}) - 0.75) < 1e-9
    # int8 1 ms + n1..n3 2.25 ms (x's conversion traded for t3's) = 3.25 ms of fp32's 4.
    assert model.affordable({"n1", "n2", "n3"}, 0.85) and not model.affordable({"n1", "n2", "n3"}, 0.8)


def test_each_compute_node_is_priced_from_its_multiply_accumulates():
    model = build_model(CHAIN, seed=0)
    feeds = random_feeds(model, 4)
    annotated = qcc.compile(model, target="ort", calibration=feeds, tolerance=None).annotated
    first, second = (n for n in annotated.graph if n.op_type == "Conv")
    tensors = {"x": Tensor(frozenset({first.name}), joins_float=True)}
    priced = estimate(annotated, feeds[0], tensors)
    fp32_rate, int8_rate = RATES["gemm"]
    for node, macs in ((first, 16 * 48 * 48 * 8 * 9), (second, 8 * 48 * 48 * 16 * 9)):
        assert priced.float_ms[node.name] == macs / fp32_rate
        assert priced.int8_ms[node.name] == macs / int8_rate
    assert set(priced.float_ms) == {first.name, second.name}  # the Relu costs the same either way
    assert priced.tensors["x"].elements == feeds[0]["x"].size
    conversion = priced.ms_per_element * feeds[0]["x"].size  # x is quantized for the first Conv
    assert abs(priced.int8_total_ms - sum(priced.int8_ms.values()) - conversion) < 1e-12
    summary = priced.summary([first.name])
    assert summary["fp32_ms"] == round(priced.fp32_total_ms, 4) and set(summary["nodes"]) == {first.name}


def test_a_grouped_convolution_is_priced_as_memory_bound():
    depthwise = CHAIN.replace("float[16,8,3,3] w1", "float[8,1,3,3] w1").replace(
        "h = Conv <pads = [1, 1, 1, 1]> (x, w1)", "h = Conv <pads = [1, 1, 1, 1], group = 8> (x, w1)"
    ).replace("float[8,16,3,3] w2", "float[8,8,3,3] w2")
    model = build_model(depthwise, seed=0)
    loaded = load(model).model
    priced = estimate(loaded, random_feeds(model, 1)[0], {})
    grouped = next(n.name for n in loaded.graph if n.op_type == "Conv" and "group" in n.attributes)
    assert priced.float_ms[grouped] == 8 * 48 * 48 * 9 / RATES["depthwise"][0]

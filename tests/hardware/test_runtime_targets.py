"""Runtime targets (ONNX Runtime, OpenVINO): plans realized in the runtime, per-layer int8,
float plans identical to the dense model, and timing in the runtime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress.apply import apply, bake, deploy_on
from autocompress.config import LayerConfig, Plan
from autocompress.hardware.runtimes.onnx_graph import layer_nodes, to_onnx
from autocompress.hardware.targets import TARGETS, resolve_target
from autocompress.latency.kernel import FP32, INT8
from autocompress.latency.shapes import ModelShapes
from autocompress.space.discover import discover
from tests.conftest import make_tiny_resnet

pytest.importorskip("onnxruntime")

X = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
CALIBRATION = [(torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(2)),)]
INT8_CFG = LayerConfig(weight_bits=8, act_bits=8)


def _deploy(target_name: str, plan: Plan, model: nn.Module | None = None):
    dense = model or make_tiny_resnet()
    target = resolve_target(target_name)
    return target, dense, deploy_on(target, apply(dense, plan, (X,)), plan, (X,), CALIBRATION)


def test_a_float_plan_in_onnxruntime_is_exactly_the_dense_model() -> None:
    target, dense, deployed = _deploy("cpu:onnxruntime", Plan())
    reference = target.load(dense, (X,))
    batch = torch.randn(5, 1, 16, 16)
    assert torch.equal(deployed(batch), reference(batch))
    assert deployed.int8_nodes == []
    with torch.no_grad():
        assert torch.allclose(deployed(batch), dense(batch), atol=1e-5)


def test_a_pruned_factorized_plan_exported_to_onnx_matches_pytorch() -> None:
    plan = Plan(
        layers={
            "stem.0": LayerConfig(keep_ratio=0.5),
            "layer1.conv2": LayerConfig(keep_ratio=0.5),
            "layer2.conv1": LayerConfig(keep_ratio=0.5, rank_ratio=0.25),
        }
    )
    dense = make_tiny_resnet()
    compressed = apply(dense, plan, (X,)).eval()
    target = resolve_target("cpu:onnxruntime")
    deployed = deploy_on(target, compressed, plan, (X,), CALIBRATION)
    batch = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(deployed(batch), compressed(batch), atol=1e-4, rtol=1e-4)


def test_onnxruntime_quantizes_only_the_plans_int8_layers() -> None:
    import onnx

    plan = Plan(layers={"layer1.conv1": INT8_CFG, "layer2.conv2": INT8_CFG})
    _target, dense, deployed = _deploy("cpu:onnxruntime", plan)
    graph = onnx.load_from_string(deployed.model_bytes)
    producers = {out: n for n in graph.graph.node for out in n.output}
    int8 = set(deployed.int8_nodes)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert len(int8) == 2
    for conv in convs:
        weight = producers.get(conv.input[1])
        quantized = weight is not None and weight.op_type == "DequantizeLinear"
        assert quantized == (conv.name in int8), conv.name
    # uint8 activations, int8 per-channel weights: the settings that fuse on x86.
    q = [n for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    inits = {t.name: t for t in graph.graph.initializer}
    zero_points = [inits[n.input[2]] for n in q if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)
    # The int8 model still computes the same thing, to int8 rounding.
    batch = torch.randn(6, 1, 16, 16)
    with torch.no_grad():
        ref = dense(batch)
    assert (deployed(batch) - ref).abs().max() < 0.1 * ref.abs().max()
    assert deployed.layers == {"layer1.conv1": "int8 static", "layer2.conv2": "int8 static"}


def test_a_bf16_layer_counts_as_size_only_in_a_runtime() -> None:
    plan = Plan(layers={"layer1.conv1": LayerConfig(weight_bits=16)})
    _, _, deployed = _deploy("cpu:onnxruntime", plan)
    assert deployed.int8_nodes == []
    assert "size only" in deployed.layers["layer1.conv1"]


def test_runtime_shapes_count_only_int8_layers_as_int8() -> None:
    dense = make_tiny_resnet()
    layers = discover(dense, (X,))
    shapes = ModelShapes.from_model(dense, (X,), layers, runtime="onnxruntime")
    plan = Plan(layers={"layer1.conv1": INT8_CFG, "layer1.conv2": LayerConfig(weight_bits=16)})
    computes = {k.compute for k in shapes.kernels(plan)}
    assert computes == {INT8, FP32}
    assert shapes.quantized(plan)
    assert not shapes.quantized(Plan(layers={"fc": LayerConfig(weight_bits=8)}))
    assert ModelShapes.from_dict(shapes.to_dict()).runtime == "onnxruntime"


def test_measure_times_in_the_runtime_against_the_dense_model() -> None:
    target, dense, deployed = _deploy("cpu:onnxruntime", Plan())
    m = target.measure(deployed, (X,), reference=dense, rounds=3)
    assert m.ratio is not None and 0.5 < m.ratio < 2.0
    assert m.threads == 1
    # A single layer (the predictor's lookup table) is timed in the runtime too.
    single = target.measure(nn.Conv2d(8, 8, 3, padding=1), (torch.randn(1, 8, 8, 8),), rounds=2)
    assert single.median_ms > 0


@pytest.mark.usefixtures("quick_timing")  # which reference, not how precise the ratio is
@pytest.mark.parametrize("name", ["cpu:onnxruntime", "cpu:openvino"])
def test_an_int8_plan_is_timed_against_the_runtimes_int8_dense_model(name: str) -> None:
    if name == "cpu:openvino":
        pytest.importorskip("openvino")
    plan = Plan(layers={"layer1.conv1": INT8_CFG})
    target, dense, deployed = _deploy(name, plan)
    reference = target.reference_for(dense, deployed, (X,))
    twin = reference.model
    assert twin is not dense and twin.quantized and deployed.quantized
    if name == "cpu:onnxruntime":  # the runtime's standard int8: every convolution
        import onnx

        graph = onnx.load_from_string(twin.model_bytes).graph
        producers = {out: n.op_type for n in graph.node for out in n.output}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        assert len(convs) > 1
        assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)
    with torch.no_grad():
        ref = dense(X)
    assert (twin(X) - ref).abs().max() < 0.1 * ref.abs().max()
    assert 0.05 < reference.to_dense < 5.0
    # timed once per dense model and input shape, then reused
    _, _, other = _deploy(name, Plan(layers={"layer2.conv2": INT8_CFG}), dense)
    assert target.reference_for(dense, other, (X,)) is reference
    # a float plan is timed against the dense model itself
    _, _, float_plan = _deploy(name, Plan(), dense)
    assert not float_plan.quantized
    assert target.reference_for(dense, float_plan, (X,)).model is dense


@pytest.mark.usefixtures("quick_timing")
def test_the_int8_twins_ratio_is_of_each_model_timed_alone(monkeypatch) -> None:
    target, dense = resolve_target("cpu:onnxruntime"), make_tiny_resnet()
    twin = target.quantize_graph(target.graph(dense, (X,)), [(X,)], None)
    timed = []
    measure = target.measure

    def recorded(model, inputs, *, reference=None, rounds=None):
        m = measure(model, inputs, reference=reference, rounds=rounds)
        timed.append((model, reference, m.median_ms))
        return m

    monkeypatch.setattr(target, "measure", recorded)
    ratio = target.twin_ratio(twin, dense, (X,))
    # twin, dense, twin, dense: alone (the fp32 dense model is unsteady when interleaved)
    assert [(m, r) for m, r, _ in timed] == [(twin, None), (dense, None)] * 2
    fastest = {id(m): min(ms for n, _, ms in timed if n is m) for m, _, _ in timed}
    assert ratio == fastest[id(twin)] / fastest[id(dense)]


def test_the_runtime_is_part_of_the_fingerprint() -> None:
    cpu, ort = resolve_target("cpu"), resolve_target("cpu:onnxruntime")
    assert ort.fingerprint()["runtime"] == "onnxruntime"
    assert ort.fingerprint()["onnxruntime_version"]
    assert cpu.fingerprint_id() != ort.fingerprint_id()
    assert resolve_target("cpu:onnxruntime", threads=2).fingerprint()["threads"] == "2"


def test_every_runtime_target_is_registered() -> None:
    assert {"cpu", "cpu:onnxruntime", "cpu:openvino", "cuda", "cuda:onnxruntime"} <= set(
        TARGETS.names()
    )


def test_openvino_keeps_float_layers_out_of_int8_and_matches_pytorch() -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    plan = Plan(layers={"layer1.conv1": INT8_CFG})
    _target, dense, deployed = _deploy("cpu:openvino", plan)
    # The ONNX nodes of the two layers, as the deployed graph was exported.
    graph = to_onnx(bake(apply(dense, plan, (X,))), (X,))
    nodes = layer_nodes(graph, ["layer1.conv1", "layer2.conv2"])
    fed_by_fake_quantize = {
        consumer.get_node().get_friendly_name().split("/")[0]
        for op in deployed.model.get_ops()
        if op.get_type_name() == "FakeQuantize"
        for out in op.outputs()
        for consumer in out.get_target_inputs()
    }
    assert nodes["layer1.conv1"][0] in fed_by_fake_quantize
    assert nodes["layer2.conv2"][0] not in fed_by_fake_quantize
    batch = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        ref = dense(batch)
    assert (deployed(batch) - ref).abs().max() < 0.1 * ref.abs().max()
    # A float plan runs the dense graph at fp32 (this CPU's default would be bf16).
    _, _, float_model = _deploy("cpu:openvino", Plan(), model=dense)
    assert "float32" in str(float_model.compiled.get_property("INFERENCE_PRECISION_HINT"))
    with torch.no_grad():
        assert torch.allclose(float_model(batch), ref, atol=1e-4, rtol=1e-4)


class _TokenClassifier(nn.Module):
    """Token ids and an attention mask in, class logits out (masked mean of embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).float()
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


@pytest.mark.parametrize("name", ["cpu:onnxruntime", "cpu:openvino"])
def test_a_runtime_model_takes_batches_shorter_than_it_was_exported_at(name: str) -> None:
    """A text model's graph is exported at a fixed length; validation batches are padded to
    their own longest sequence, so a runtime model pads them (mask 0: the same text)."""
    if name == "cpu:openvino":
        pytest.importorskip("openvino")
    model = _TokenClassifier().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    loaded = resolve_target(name).load(model, example)
    short = (torch.randint(1, 50, (4, 7)), torch.ones(4, 7, dtype=torch.long))
    with torch.no_grad():
        assert torch.allclose(loaded(*short), model(*short), atol=1e-5)


def test_onnxruntime_int8_of_a_classifier_head_builds_and_runs() -> None:
    """ORT's quantizers rewrite a Gemm head's weight and re-infer shapes; the exported graph's
    recorded shapes must not contradict them (minilm-sentiment's plain int8 failed so)."""
    model = _TokenClassifier().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    target = resolve_target("cpu:onnxruntime")
    int8 = target.alternatives(model, example, [example])["dense, ONNX Runtime int8"]()
    batch = (torch.randint(1, 50, (4, 12)), torch.ones(4, 12, dtype=torch.long))
    with torch.no_grad():
        assert torch.allclose(int8(*batch), model(*batch), atol=0.05)


class _TinyBertClassifier(nn.Module):
    """A one-layer BERT encoder (random weights) with a class head on the first token."""

    def __init__(self) -> None:
        from transformers import BertConfig, BertModel

        super().__init__()
        config = BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=16,
        )  # fmt: skip
        self.encoder = BertModel(config)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(hidden[:, 0])


def test_openvino_quantizes_a_transformer_in_nncfs_transformer_mode(monkeypatch) -> None:
    """A graph without convolutions gets NNCF's transformer mode (its default mode failed on
    minilm-sentiment's token embedding with a KeyError); the int8 model stays close."""
    pytest.importorskip("openvino")
    import nncf

    modes = []
    quantize = nncf.quantize
    monkeypatch.setattr(
        nncf, "quantize", lambda *a, **k: modes.append(k.get("model_type")) or quantize(*a, **k)
    )
    torch.manual_seed(0)
    model = _TinyBertClassifier().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    int8 = resolve_target("cpu:openvino").alternatives(model, example, [example])[
        "dense, OpenVINO int8"
    ]()
    assert modes == [nncf.ModelType.TRANSFORMER]
    with torch.no_grad():
        assert torch.allclose(int8(*example), model(*example), atol=0.02)


def test_onnxruntime_runs_a_transformers_int8_layers_in_dynamic_int8() -> None:
    """A graph without convolutions: the plan's int8 layers get ORT's dynamic int8 (as the
    plain int8 model does), and only those layers."""
    import onnx

    torch.manual_seed(0)
    model = _TinyBertClassifier().eval()
    example = (torch.randint(1, 50, (1, 12)), torch.ones(1, 12, dtype=torch.long))
    layers = ["encoder.encoder.layer.0.intermediate.dense", "head"]
    plan = Plan(layers={name: INT8_CFG for name in layers})
    target = resolve_target("cpu:onnxruntime")
    deployed = deploy_on(target, apply(model, plan, example), plan, example, [example])
    graph = onnx.load_from_string(deployed.model_bytes)
    kinds = [n.op_type for n in graph.graph.node]
    # The MatMul layer runs in dynamic int8; the head (a Gemm: no dynamic kernel) in float.
    assert kinds.count("DynamicQuantizeLinear") == 1 and "QuantizeLinear" not in kinds
    assert deployed.layers == {
        "encoder.encoder.layer.0.intermediate.dense": "int8 dynamic",
        "head": "float (no int8 dynamic kernel)",
    }
    with torch.no_grad():
        assert torch.allclose(deployed(*example), model(*example), atol=0.02)


def test_has_vnni_reads_the_cpus_flags() -> None:
    from autocompress.hardware.runtimes.openvino import has_vnni

    assert has_vnni("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n")
    assert has_vnni("flags\t\t: fpu avx2 avx_vnni\n")
    assert not has_vnni("flags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert not has_vnni("processor\t: 0\n")


@pytest.mark.parametrize("vnni", [True, False])
def test_openvino_keeps_the_first_layers_weights_8_bit_where_the_cpu_has_vnni(
    monkeypatch, vnni: bool
) -> None:
    """NNCF's overflow fix stores the first convolution's weights in 7 bits, for int8 kernels
    that saturate; on a VNNI CPU it only cost accuracy (effnet-fmnist: 91.05% vs 92.45%)."""
    pytest.importorskip("openvino")
    from autocompress.hardware.runtimes import openvino

    monkeypatch.setattr(openvino, "has_vnni", lambda cpuinfo=None: vnni)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    x = (torch.randn(1, 3, 16, 16),)
    quantized = openvino.quantize(openvino.convert(to_onnx(model, x)), [x, x], keep_float=[])
    ranges = {  # int8 weights by shape: the first convolution's is (8, 3, 3, 3)
        op.get_data().shape: int(abs(op.get_data().astype(int)).max())
        for op in quantized.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"
    }
    assert ranges[(8, 8, 3, 3)] == 127
    assert ranges[(8, 3, 3, 3)] == (127 if vnni else 64)

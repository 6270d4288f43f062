"""Turn a converted PT2E graph back into an `ExportedProgram` without tracing it again.

`torch.export` documents re-exporting a converted graph (`torch.export.export(converted, ...)`)
to save it. That traces every op once more with fake tensors: measured here on digits-resnet
(int8 plans, 2-core machine under load) 0.25-0.38 s per program, against 0.08-0.10 s for
this pass, which only lifts the graph's attributes into inputs and fills in the shapes of the
nodes PT2E added. A trial counts its size by writing its program (`program.artifact_size_bytes`),
so the saving is per trial.

The program `lift_program` returns is what `torch.export.export` would give for the graph
in everything `torch.export.save`/`load` use (graph, signature, state, range constraints);
node names and debug metadata may differ, which is why the search's size count and the
export go through the same function.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autocompress.quiet import copy_graph


def liftable(graph_module: nn.Module) -> bool:
    """True for a graph from `torch.export.export(...).module()` (what PT2E converts): its
    inputs carry the fake tensors export traced with."""
    if not isinstance(graph_module, torch.fx.GraphModule):
        return False
    inputs = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    has_specs = getattr(graph_module, "_in_spec", None) is not None
    return bool(inputs) and has_specs and all("val" in n.meta for n in inputs)


def lift_program(graph_module: torch.fx.GraphModule) -> torch.export.ExportedProgram:
    """The exported program of an unlifted export graph (e.g. a converted PT2E graph).

    Every `get_attr` becomes an input of the program (a parameter, or a persistent buffer
    for everything else, as `torch.export` stores PT2E's int8 weights and scales), the
    input guards are dropped (the program's range constraints replace them), and nodes
    without a traced value get one by fake-tensor propagation.

    Args:
        graph_module: see `liftable`; not modified.

    Returns:
        The program, ready for `program.save_program`.
    """
    from torch._export.verifier import TrainingIRVerifier
    from torch._guards import detect_fake_mode
    from torch.export.exported_program import ModuleCallEntry, ModuleCallSignature
    from torch.export.graph_signature import (
        ExportGraphSignature,
        InputKind,
        InputSpec,
        OutputKind,
        OutputSpec,
        TensorArgument,
    )

    gm = copy_graph(graph_module)
    graph = gm.graph
    for node in [n for n in graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]:
        graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    user_inputs = [n for n in graph.nodes if n.op == "placeholder"]
    fake_mode = detect_fake_mode([n.meta["val"] for n in user_inputs])
    assert fake_mode is not None, "an exported graph's inputs hold fake tensors"
    parameters = dict(gm.named_parameters(remove_duplicate=False))
    buffers = dict(gm.named_buffers(remove_duplicate=False))

    lifted: dict[str, torch.fx.Node] = {}
    specs: list[InputSpec] = []
    state_dict: dict[str, torch.Tensor] = {}
    for node in [n for n in graph.nodes if n.op == "get_attr"]:
        target = str(node.target)
        if target not in lifted:
            is_parameter = target in parameters
            value = parameters.get(target, buffers.get(target))
            if value is None:  # a plain tensor attribute
                owner, _, name = target.rpartition(".")
                value = getattr(gm.get_submodule(owner) if owner else gm, name)
            # After the state lifted so far: placeholders keep the order of first use.
            where = list(lifted.values())[-1].next if lifted else next(iter(graph.nodes))
            with graph.inserting_before(where):
                prefix = "p_" if is_parameter else "b_"
                placeholder = graph.placeholder(prefix + target.replace(".", "_"))
            placeholder.meta["val"] = fake_mode.from_tensor(value, static_shapes=True)
            lifted[target] = placeholder
            kind = InputKind.PARAMETER if is_parameter else InputKind.BUFFER
            persistent = None if is_parameter else True
            specs.append(InputSpec(kind, TensorArgument(placeholder.name), target, persistent))
            state_dict[target] = value
        node.replace_all_uses_with(lifted[target])
        graph.erase_node(node)
    # Placeholders come first in a graph: the user inputs after the lifted state, in order.
    anchor = list(lifted.values())[-1] if lifted else None
    for node in reversed(user_inputs):
        if anchor is not None:
            anchor.append(node)
    specs += [InputSpec(InputKind.USER_INPUT, TensorArgument(n.name), None) for n in user_inputs]
    output = next(n for n in graph.nodes if n.op == "output")
    output_specs = [
        OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(n.name), None) for n in output.args[0]
    ]
    gm.recompile()
    _fill_values(graph, fake_mode)
    shape_env = fake_mode.shape_env
    symbols = {
        size.node.expr
        for node in user_inputs
        for size in node.meta["val"].shape
        if isinstance(size, torch.SymInt)
    }
    ranges = {s: shape_env.var_to_range[s] for s in symbols} if shape_env is not None else {}
    call_graph = [
        ModuleCallEntry(
            "",
            ModuleCallSignature(
                inputs=[],
                outputs=[],
                in_spec=gm._in_spec,
                out_spec=gm._out_spec,
                forward_arg_names=[str(n.target) for n in user_inputs],
            ),
        )
    ]
    return torch.export.ExportedProgram(
        root=gm,
        graph=graph,
        graph_signature=ExportGraphSignature(specs, output_specs),
        state_dict=state_dict,
        range_constraints=ranges,
        module_call_graph=call_graph,
        verifiers=[TrainingIRVerifier],
    )


def _fill_values(graph: torch.fx.Graph, fake_mode: Any) -> None:
    """Give each node PT2E added (quantize/dequantize, getitem) the fake value it computes.

    The traced nodes keep theirs: propagating only the new ones costs a third of a full
    `FakeTensorProp` pass on digits-resnet.
    """
    with fake_mode:
        for node in graph.nodes:
            if node.op != "call_function" or "val" in node.meta:
                continue
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: n.meta["val"])
            node.meta["val"] = node.target(*args, **kwargs)

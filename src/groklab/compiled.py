"""Compiled training steps on the CPU: a model's forward and backward compiled ahead of time by AOTInductor into two
shared libraries, kept on disk, and loaded by every later run in milliseconds, without importing the compiler.

torch.compile traces the model and compiles it (or loads it from its caches) in every run: its compiler's import and
Dynamo's trace cost a compiled run several seconds of start-up, more than a short run's faster steps win back. Here
the first run of a model (its structure, sizes, source, batch shape, thread count and torch version: `step_key`)
traces the forward and backward once with AOTAutograd and the partitioner torch.compile uses, compiles each graph
with AOTInductor, and moves both libraries into the cache in one rename (`GROKLAB_CACHE_DIR`, else
`$XDG_CACHE_HOME/groklab`, else `~/.cache/groklab`); a later run with the same key finds them there, and one that
needs them while they are being built waits for them.

The libraries take the parameters, buffers and inputs as arguments (nothing is frozen into them), so one pair serves
every step of a run and every run of that model; the forward returns the output and the activations the backward
reads, and an autograd function passes those from one library to the other.

Their float32 matmuls run on oneDNN (bundled with torch), not on the BLAS that ATen's `mm` calls, where that BLAS
keeps to narrower vector instructions than the CPU has (MKL on AMD's AVX-512 CPUs: models/linear.onednn_preferred),
as the eager linears do; there oneDNN's kernels are far faster at these shapes (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from groklab import optim
from groklab.models.linear import cpu_info, dense, onednn_preferred
from groklab.optim import AdamRule

Tensor = torch.Tensor
LIBRARIES = ("forward.so", "backward.so")


def cache_root() -> Path:
    """Where compiled steps are kept: $GROKLAB_CACHE_DIR, else groklab/ in $XDG_CACHE_HOME (default ~/.cache)."""
    if os.environ.get("GROKLAB_CACHE_DIR"):
        return Path(os.environ["GROKLAB_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "groklab"


def compiled_step(module: nn.Module, args: tuple[Any, ...], bf16: bool = False) -> Callable[..., Tensor]:
    """`module(*args)` for arguments shaped as `args`, its forward and backward run by AOTInductor libraries (built and
    cached on the first call with this `step_key`); `bf16`: the forward under autocast to bfloat16, its output float32.

    The module's parameters and buffers are read at every call, so optimizer steps and loaded checkpoints apply."""
    forward, backward = libraries(module, args, bf16)

    class Step(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *flat: Tensor) -> Tensor:  # flat: parameters, buffers, input leaves
            out, *ctx.activations = forward.run(list(flat))
            return out

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
            grads = backward.run([*ctx.activations, grad.contiguous()])  # one gradient per flat argument
            del ctx.activations
            return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=True))

    def run(*call_args: Any) -> Tensor:
        leaves, _ = tree_flatten(call_args)
        return Step.apply(*module.parameters(), *module.buffers(), *leaves)

    return run


def compiled_update(
    module: nn.Module, args: tuple[Any, ...], rule: AdamRule, bf16: bool = False
) -> Callable[[tuple[Any, ...], Callable[[Tensor], Tensor], list[Tensor]], Tensor | None]:
    """A whole training step of `module(*args)`'s parameters with the Adam(W) update `rule` applied inside the backward
    library: `step(call_args, loss_of, state)` runs the forward, `loss_of(output)` and the backward, and updates the
    parameters and their moments where they lie; `state` is [*parameters, *first moments, *second moments,
    scalars] (optim.adam_update). Returns the gradient's global norm (the update was skipped where it is not
    finite), or None with nothing updated where the loss was not finite.

    The gradients are used where the backward computes them and never leave the library, which saves the update's own
    call and its reads of gradients that have left the cache; the non-finite check then needs the gradient's norm
    before any update (what each part costs: docs/performance.md)."""
    forward, backward = libraries(module, args, bf16, rule)

    def step(call_args: tuple[Any, ...], loss_of: Callable[[Tensor], Tensor], state: list[Tensor]) -> Tensor | None:
        leaves, _ = tree_flatten(call_args)
        out, *saved = forward.run([*module.parameters(), *module.buffers(), *leaves])
        loss = loss_of(out.requires_grad_())
        if not bool(torch.isfinite(loss)):
            return None
        (grad,) = torch.autograd.grad(loss, out)
        return backward.run([*saved, grad.contiguous(), *state])[0]

    return step


def libraries(module: nn.Module, args: tuple[Any, ...], bf16: bool, rule: AdamRule | None = None) -> tuple[Any, Any]:
    """The forward and backward libraries of `module(*args)` (with `rule`'s update in the backward), loaded from the
    cache; built first if it has none."""
    folder = cache_root() / "compiled" / step_key(module, args, bf16, rule)
    if not built(folder):
        with build_lock(folder):
            if not built(folder):  # not built by another run while this one waited
                build(module, args, bf16, folder, rule)
    forward, backward = (torch._C._aoti.AOTIModelContainerRunnerCpu(str(folder / name), 1) for name in LIBRARIES)
    return forward, backward


def built(folder: Path) -> bool:
    """Whether `folder` holds both libraries (a build moves them in together)."""
    return all((folder / name).exists() for name in LIBRARIES)


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Held while `folder` is built: runs that need the same libraries at once (a sweep's workers) wait for the first
    one's build instead of each building them. A lock file per key beside it; the lock goes with its holder's process."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def step_key(module: nn.Module, args: tuple[Any, ...], bf16: bool, rule: AdamRule | None = None) -> str:
    """A hash of everything the compiled libraries depend on: the module's structure and settings (every submodule's
    scalar attributes: heads, ε, dropout, ...), its parameters' and buffers' shapes, the arguments' shapes, the
    source of the packages that define it and of this file, the thread count the kernels were built for, the CPU's
    instruction sets (and whether its matmuls go to oneDNN), torch's version, the bfloat16 switch and the update rule's
    constants."""
    settings = [
        (name, type(m).__qualname__, {k: describe(v) for k, v in sorted(vars(m).items()) if not k.startswith("_")})
        for name, m in module.named_modules()
    ]
    leaves, _ = tree_flatten(args)
    tensors = [*module.named_parameters(), *module.named_buffers(), *enumerate(leaves)]
    shapes = [(str(name), list(t.shape), str(t.dtype), t.requires_grad) for name, t in tensors]
    state = {
        "settings": settings, "shapes": shapes, "bf16": bf16,  # settings: every module's `training` too
        "update": None if rule is None else dataclasses.asdict(rule),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(), "cpu": cpu_flags(),
        "onednn": onednn_preferred(),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    for path in sources(module):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def describe(value: Any) -> Any:
    """A module attribute as it enters the key: scalars as they are, tensors by a hash of their bytes (a library holds
    them as constants), functions by their module and name, anything else by its type."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, Tensor):
        return hashlib.sha256(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"


def sources(module: nn.Module) -> list[Path]:
    """The .py files of every package that defines one of the module's classes (their free functions included), this
    file and optim.py (the update rule)."""
    folders = {
        Path(sys.modules[cls.__module__].__file__ or "").parent
        for m in module.modules()
        for cls in type(m).__mro__
        if cls.__module__.split(".")[0] not in ("torch", "builtins")
    }
    return sorted({*(p for folder in folders for p in folder.glob("*.py")), Path(__file__), Path(optim.__file__)})


def cpu_flags() -> str:
    """The CPU's feature flags (the libraries use the widest vector instructions the building CPU has)."""
    return next((line for line in cpu_info().splitlines() if line.startswith("flags")), "") or platform.processor()


def build(module: nn.Module, args: tuple[Any, ...], bf16: bool, folder: Path, rule: AdamRule | None = None) -> None:
    """Trace the forward and backward of `module(*args)` (with `rule`'s update appended to the backward), compile both
    with AOTInductor, and move them into `folder`."""
    import torch._inductor

    remember_isa_probes()
    graphs = trace(module, args, bf16)
    if rule is not None:
        with_update(graphs, list(module.parameters()), rule)
    building = folder.parent / f".building-{folder.name}"
    shutil.rmtree(building, ignore_errors=True)  # what a build killed half-way left (the lock is this run's now)
    building.mkdir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own deprecation notices from inside the compiler
            for name, (graph, example) in graphs.items():
                with onednn_lowerings() if onednn_preferred() and onednn_matmuls(graph) else nullcontext():
                    torch._inductor.aot_compile(graph, example, options={"aot_inductor.output_path": str(building / f"{name}.so")})
        for path in building.iterdir():  # the generated C++ sources and objects: only the libraries are kept
            if path.name not in LIBRARIES:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.rename(building, folder)  # all or nothing: a folder named by its key holds both libraries
    finally:
        shutil.rmtree(building, ignore_errors=True)  # a failed build's files (gone after the rename)


def trace(module: nn.Module, args: tuple[Any, ...], bf16: bool) -> dict[str, tuple[torch.fx.GraphModule, list[Any]]]:
    """The forward and backward graphs of `module(*args)` ("forward", "backward": each with its example inputs), as
    AOTAutograd partitions them for torch.compile. The forward takes the parameters, buffers and the leaves of `args`,
    in that order, and returns the output and the activations the backward takes before the output's gradient."""
    from functorch.compile import aot_function, make_boxed_func, min_cut_rematerialization_partition

    params, buffers = dict(module.named_parameters()), dict(module.named_buffers())
    leaves, spec = tree_flatten(args)
    n_p, n_b = len(params), len(buffers)

    def forward(*flat: Tensor) -> Tensor:
        state = (dict(zip(params, flat[:n_p], strict=True)), dict(zip(buffers, flat[n_p : n_p + n_b], strict=True)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.func.functional_call(module, state, tree_unflatten(list(flat[n_p + n_b :]), spec))
        return out.float()

    graphs: dict[str, tuple[torch.fx.GraphModule, list[Any]]] = {}

    def keep(name: str) -> Callable[..., Any]:
        def compiler(graph: torch.fx.GraphModule, example: list[Any]) -> Any:
            graphs[name] = (graph, example)
            return make_boxed_func(graph.forward)

        return compiler

    traced = aot_function(forward, keep("forward"), keep("backward"), partition_fn=min_cut_rematerialization_partition)
    flat = [*params.values(), *buffers.values(), *leaves]
    # traced as torch.compile traces (code that asks torch.compiler.is_compiling() takes its compiled branch)
    with torch.compiler._compile_session_context(), torch.random.fork_rng(devices=[]):
        out = traced(*flat)
        torch.autograd.grad(out, [t for t in flat if t.requires_grad], torch.ones_like(out))
    return graphs


def with_update(graphs: dict[str, tuple[torch.fx.GraphModule, list[Any]]], params: list[Tensor], rule: AdamRule) -> None:
    """Append the update `rule` of `params` to the backward graph of `graphs` (from `trace`), in place: the backward
    takes the parameters, their moments and the step's scalars after the output's gradient, writes the new values into
    them (`aten.copy_`, which AOTInductor compiles into writes where they lie) and returns the gradient's global norm
    instead of the gradients (optim.adam_update).

    The activations that are only views of a parameter (the weights themselves, their transposes) are no longer
    returned by the forward: the backward takes them as views of the parameters it updates, so that every read of a
    weight is of the one input it writes, and the compiler orders the reads before the write (a second input
    holding the same memory would be read after it)."""
    from torch.fx.proxy import GraphAppendingTracer, Proxy

    (forward, _), (backward, example) = graphs["forward"], graphs["backward"]
    fw_output, bw_output = (next(iter(reversed(g.graph.nodes))) for g in (forward, backward))
    out, *saved = fw_output.args[0]
    weights = [n for n in forward.graph.nodes if n.op == "placeholder"][: len(params)]
    inputs = [n for n in backward.graph.nodes if n.op == "placeholder"]  # the saved activations, then the gradient
    grads = bw_output.args[0][: len(params)]
    if any(g is None for g in grads):
        raise ValueError("a parameter gets no gradient from this model's loss: its update cannot be compiled")

    fake = example[-1].fake_mode.from_tensor
    graph, last = backward.graph, inputs[-1]
    new_inputs: dict[str, list[torch.fx.Node]] = {}
    for kind, tensors in [("weight", params), ("exp_avg", params), ("exp_avg_sq", params), ("scalars", [torch.zeros(4)])]:
        new_inputs[kind] = []
        for i, t in enumerate(tensors):
            with graph.inserting_after(last):
                last = graph.placeholder(f"{kind}_{i}")
            last.meta["val"] = fake(torch.empty_like(t))  # memory of its own: inputs that share memory are not compiled
            new_inputs[kind].append(last)
    example[:] = [*example, *(node.meta["val"] for nodes in new_inputs.values() for node in nodes)]

    # the activations that are views of a weight: rebuilt from the weight's new input, and dropped from the forward
    keep, body = [], next(n for n in graph.nodes if n.op != "placeholder")
    for position, (node, placeholder) in enumerate(zip(saved, inputs, strict=False)):
        chain = view_chain(node, weights)
        if chain is None:
            keep.append(node)
            continue
        view = new_inputs["weight"][weights.index(chain[0])]
        with graph.inserting_before(body):
            for step in chain[1:]:
                view = graph.call_function(step.target, (view, *step.args[1:]), dict(step.kwargs))
        placeholder.replace_all_uses_with(view)
        graph.erase_node(placeholder)
        example[position] = None
    example[:] = [e for e in example if e is not None]
    fw_output.args = ((out, *keep),)
    forward.recompile()

    tracer = GraphAppendingTracer(graph)
    proxies = {kind: [Proxy(n, tracer) for n in nodes] for kind, nodes in new_inputs.items()}
    with graph.inserting_before(bw_output):
        updated, norm = optim.adam_update(
            rule, proxies["weight"], [Proxy(g, tracer) for g in grads], proxies["exp_avg"], proxies["exp_avg_sq"], proxies["scalars"][0]
        )
        for new, old in zip(updated, zip(proxies["weight"], proxies["exp_avg"], proxies["exp_avg_sq"], strict=True), strict=True):
            for value, target in zip(new, old, strict=True):
                graph.call_function(torch.ops.aten.copy_.default, (target.node, value.node))
    bw_output.args = ((norm.node,),)
    graph.eliminate_dead_code()
    backward.recompile()


VIEWS = {
    torch.ops.aten.t.default, torch.ops.aten.permute.default, torch.ops.aten.transpose.int, torch.ops.aten.view.default,
    torch.ops.aten._unsafe_view.default, torch.ops.aten.reshape.default, torch.ops.aten.unsqueeze.default,
    torch.ops.aten.squeeze.dim, torch.ops.aten.expand.default, torch.ops.aten.slice.Tensor, torch.ops.aten.select.int,
    torch.ops.aten.alias.default,
}  # fmt: skip
"""The view operations an activation that shares a weight's memory can be made of."""


def view_chain(node: torch.fx.Node, roots: list[torch.fx.Node]) -> list[torch.fx.Node] | None:
    """[root, view, view, ..., node] if `node` is a chain of views (`VIEWS`, each of its first argument) of one of
    `roots`, else None."""
    chain = [node]
    while chain[0] not in roots:
        if chain[0].op != "call_function" or chain[0].target not in VIEWS:
            return None
        chain.insert(0, chain[0].args[0])
    return chain


def onednn_matmuls(graph: torch.fx.GraphModule) -> bool:
    """Rewrite `graph`'s float32 matmuls as oneDNN's linear layer (`mkldnn._linear_pointwise`): mm(a, b) as a·(bᵀ)ᵀ,
    addmm(bias, a, b) with a bias row as the same plus bias. Returns whether any was rewritten (none without oneDNN)."""
    aten, linear = torch.ops.aten, torch.ops.mkldnn._linear_pointwise.default
    if not torch.backends.mkldnn.is_available():
        return False
    rewritten = False
    for node in list(graph.graph.nodes):
        if node.target is aten.mm.default and not node.kwargs:
            bias, a, b = None, *node.args
        elif node.target is aten.addmm.default and not node.kwargs and node.args[0].meta["val"].dim() == 1:
            bias, a, b = node.args
        else:
            continue
        if node.meta["val"].dtype != torch.float32:
            continue
        with graph.graph.inserting_before(node):
            weight = graph.graph.call_function(aten.permute.default, (b, [1, 0]))  # (n, k): linear's weight layout
            onednn = graph.graph.call_function(linear, (a, weight, bias, "none", [], ""))
        onednn.meta = dict(node.meta)
        node.replace_all_uses_with(onednn)
        graph.graph.erase_node(node)
        rewritten = True
    graph.recompile()
    return rewritten


@contextmanager
def onednn_lowerings() -> Iterator[None]:
    """While held, Inductor lowers oneDNN's linear layer (and its fusion with an add that Inductor's own passes make of
    it, `.binary`) on any operands: Inductor's lowerings take only a constant weight, packed ahead, which these
    libraries do not have (the weights are arguments). The weight is read with the strides it has (a transposed view in
    place) unless it is in another layout (a slice of wider rows), which oneDNN reads far slower (models/linear.py). The
    input is made contiguous, by Inductor's tiled transpose where it is not (a weight gradient's gᵀ): oneDNN's linear
    would copy it itself, with ATen's slower copy."""
    from torch._inductor import lowering
    from torch._inductor.ir import ExternKernel, FixedLayout, TensorBox
    from torch._inductor.mkldnn_ir import LinearBinary, LinearUnary, _create_output_node

    def lower(kind: type, operands: list[Any], bias: Any, args: list[Any]) -> TensorBox:
        operands = [ExternKernel.realize_input(t) for t in operands]
        for t in operands:
            if hasattr(t, "freeze_layout"):
                t.freeze_layout()
        x, *others = operands
        operands = [ExternKernel.require_contiguous(x), *(t if dense(t.get_size(), t.get_stride()) else ExternKernel.require_contiguous(t) for t in others)]
        x, w = operands[0], operands[-1]  # (..., k) and (n, k)
        layout = FixedLayout(x.get_device(), x.get_dtype(), [*x.get_size()[:-1], w.get_size()[0]])
        if bias is None:
            args = [None, *args]
        else:
            operands.append(ExternKernel.require_contiguous(ExternKernel.realize_input(bias)))
        return TensorBox.create(_create_output_node(kind(layout=layout, inputs=operands, constant_args=args)))

    ops = {
        torch.ops.mkldnn._linear_pointwise.default: lambda x, w, b, attr, scalars, algorithm: lower(
            LinearUnary, [x, w], b, [attr, scalars or [-1], algorithm]
        ),
        torch.ops.mkldnn._linear_pointwise.binary: lambda x, y, w, b, attr: lower(LinearBinary, [x, y, w], b, [attr]),
    }
    saved = {op: lowering.lowerings.get(op) for op in ops}
    lowering.lowerings.update(ops)
    try:
        yield
    finally:
        for op, before in saved.items():
            if before is None:
                lowering.lowerings.pop(op, None)
            else:
                lowering.lowerings[op] = before


def remember_isa_probes() -> None:
    """Skip Inductor's vector-ISA load probes after their first success.

    Before it compiles for the CPU, Inductor builds a small library per vector ISA the CPU lists (AVX2, AVX-512, ...)
    and loads each in a fresh Python process, about ten processes at every compiled run's start. The library lies
    in Inductor's on-disk cache at a path that hashes its code, flags, compiler and torch version, so one that loaded
    once loads again: its success is remembered in a file beside it and the process is not started again."""
    from torch._inductor.cpu_vec_isa import VecISA

    probe = VecISA._probe_load
    if getattr(probe, "remembers", False):
        return

    def remembered(self: VecISA, output_path: str) -> bool:
        loaded = Path(f"{output_path}.loaded")
        if loaded.exists():
            return True
        ok = probe(self, output_path)
        if ok:
            loaded.touch()
        return ok

    remembered.remembers = True  # type: ignore[attr-defined]
    VecISA._probe_load = remembered  # type: ignore[method-assign]

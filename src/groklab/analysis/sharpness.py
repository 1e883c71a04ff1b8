"""Sharpness of the train loss: the top Hessian eigenvalue and ε-sharpness (Power et al. report that
flatter minima go with generalization; Keskar et al. 2017 define ε-sharpness).

Both take a closure ``loss_fn() -> scalar tensor`` over the parameters ``params``, so they work for any
model and any loss (tests use a known quadratic).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor

EPS_SHARPNESS = 1e-3
"""Default ε: the box is ε·(|θ| + 1) around each parameter θ (Keskar et al.'s scaled box)."""


def _hvp(grads: list[Tensor], params: list[Tensor], vec: list[Tensor]) -> list[Tensor]:
    dot = sum((g * v).sum() for g, v in zip(grads, vec, strict=True))
    out = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for h, p in zip(out, params, strict=True)]


def top_hessian_eigenvalue(loss_fn: Callable[[], Tensor], params: list[Tensor], iters: int = 20, tol: float = 1e-4, seed: int = 0) -> float:
    """The largest Hessian eigenvalue of loss_fn at `params`, from Hessian-vector products.

    Lanczos iteration (power iteration's Krylov-space refinement: after k products it is at least as
    accurate as k power-iteration steps, and far better when the top eigenvalues are close), with full
    reorthogonalization. Each product costs about two backward passes; iteration stops after `iters`
    products or once the top Ritz value's residual is below `tol` × its size. Deterministic for a `seed`.
    """
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def hvp(flat: Tensor) -> Tensor:
        vec = [v.view(s) for v, s in zip(torch.split(flat, sizes), shapes, strict=True)]
        return torch.cat([h.reshape(-1) for h in _hvp(grads, params, vec)]).detach().double()

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
    q = q / q.norm()
    basis, alphas, betas = [q], [], []
    top = float("nan")
    for _ in range(iters):
        w = hvp(q.to(params[0].dtype).to(params[0].device)).cpu()
        alphas.append(float(w @ q))
        stack = torch.stack(basis)  # (j, n) orthonormal Krylov basis so far
        for _ in range(2):  # full reorthogonalization, twice for stability
            w = w - stack.T @ (stack @ w)
        tridiag = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiag += torch.diag(off, 1) + torch.diag(off, -1)
        ritz, vecs = torch.linalg.eigh(tridiag)
        top, beta = float(ritz[-1]), float(w.norm())
        # ‖H y − θ y‖ = β·|last entry of the Ritz vector|: an eigenvalue of H lies within it of θ.
        if beta * float(vecs[-1, -1].abs()) <= tol * max(abs(top), 1e-12):
            return top
        betas.append(beta)
        q = w / beta
        basis.append(q)
    return top


def eps_sharpness(loss_fn: Callable[[], Tensor], params: list[Tensor], eps: float = EPS_SHARPNESS) -> float:
    """Relative loss increase at the first-order worst point of the box ε·(|θ| + 1): (L(θ + δ) − L(θ)) / (1 + L(θ)).

    δ = ε·(|θ| + 1)·sign(∇L) maximizes the linearized loss in that box (one ascent step, as a cheap
    stand-in for Keskar's inner maximization). The parameters are restored afterwards.
    """
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    base = float(loss.detach())
    with torch.no_grad():
        deltas = [torch.zeros_like(p) if g is None else eps * (p.abs() + 1) * g.sign() for p, g in zip(params, grads, strict=True)]
        for p, d in zip(params, deltas, strict=True):
            p.add_(d)
        try:
            perturbed = float(loss_fn())
        finally:
            for p, d in zip(params, deltas, strict=True):
                p.sub_(d)
    return (perturbed - base) / (1 + base)

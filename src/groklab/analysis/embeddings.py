"""Embedding geometry: PCA and t-SNE projections, and the circularity of modular embeddings (Power et al. Fig 3)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def pca(emb: Tensor, k: int = 2) -> Tensor:
    """Projection of the centered rows of emb (n, d) onto their top-k principal axes: (n, k), float64."""
    e = emb.detach().double()
    e = e - e.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(e, full_matrices=False)
    proj = e @ vh[:k].T
    # Fix each axis's sign (SVD's is arbitrary) so repeated analyses plot the same way.
    signs = torch.sign(proj[proj.abs().argmax(0), torch.arange(proj.shape[1])])
    return proj * torch.where(signs == 0, 1.0, signs)


def tsne(emb: Tensor, seed: int = 0, perplexity: float = 20.0) -> Tensor:
    """A 2-D t-SNE map (scikit-learn) of emb (n, d): (n, 2), the same for the same input (fixed seed, PCA init).

    For plots, not for metrics. Perplexity 20 suits the p ≈ 100 tokens of a modular task (each token's
    neighbourhood is a handful of tokens, as on Power et al.'s circles); it is capped below n/3 for small p.
    One BLAS/OpenMP thread: with torch's threads already spinning, more threads oversubscribe the cores and slow it down.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    e = emb.detach().double().cpu().numpy()
    with threadpool_limits(1):
        out = TSNE(n_components=2, perplexity=min(perplexity, (len(e) - 1) / 3), random_state=seed, init="pca").fit_transform(e)
    return torch.from_numpy(out)


def circularity(points: Tensor) -> float:
    """How well 2-D points (p, 2), row k for token k, lie on a circle traversed at one frequency: in [0, 1].

    Each centered point becomes a unit complex number u_k; the score is max over f in 1..p−1 of
    |(1/p) Σ_k u_k e^{−2πi f k/p}|. Tokens placed at angle 2πfk/p + φ (Power et al.'s circles, any
    radius) score 1; random points score about 1/√p.
    """
    pts = points.detach().double()
    pts = pts - pts.mean(0, keepdim=True)
    p = pts.shape[0]
    z = torch.complex(pts[:, 0], pts[:, 1])
    u = z / z.abs().clamp_min(1e-12)
    dft = torch.fft.fft(u) / p  # dft[f] = (1/p) Σ_k u_k e^{−2πi f k/p}
    return float(dft[1:].abs().max()) if p > 1 else 0.0


def embedding_summary(emb: Tensor) -> dict[str, object]:
    """{pca, circularity, tsne} for an input embedding (p, d): both projections as [[x, y], ...], one row per token."""
    proj = pca(emb, 2)
    return {"pca": _rows(proj), "circularity": circularity(proj), "tsne": _rows(tsne(emb))}


def _rows(points: Tensor) -> list[list[float]]:
    return [[round(float(x), 6), round(float(y), 6)] for x, y in points]

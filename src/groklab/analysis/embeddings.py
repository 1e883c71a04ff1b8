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


def tsne(emb: Tensor, seed: int = 0, perplexity: float = 10.0) -> Tensor:
    """A 2-D t-SNE map (scikit-learn) of emb (n, d): (n, 2). Slower than PCA; for plots, not for metrics."""
    from sklearn.manifold import TSNE

    e = emb.detach().double().cpu().numpy()
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
    """{pca: [[x, y], ...] one row per token, circularity} for an input embedding (p, d)."""
    proj = pca(emb, 2)
    return {"pca": [[round(float(x), 6), round(float(y), 6)] for x, y in proj], "circularity": circularity(proj)}

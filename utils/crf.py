"""The fully connected CRF as post-processing of any semantic model (chapter 10).

Krähenbühl & Koltun, "Efficient inference in fully connected CRFs with
Gaussian edge potentials", NeurIPS 2011 (https://arxiv.org/abs/1210.5644);
DeepLab v1/v2 (Chen et al., ICLR 2015, TPAMI 2018) refine their network's
output with it. Every pixel ``i`` takes a label ``x_i``, and a labelling costs

    E(x) = sum_i psi_u(x_i) + sum_{i < j} mu(x_i, x_j) k(f_i, f_j)

- unary ``psi_u(l) = -log P_i(l)``: the network's probabilities;
- Potts compatibility ``mu(l, l') = [l != l']``;
- two Gaussian kernels on the pixels' positions ``p`` and colours ``I``:

      k(f_i, f_j) = w1 exp(-|p_i - p_j|^2 / 2 theta_alpha^2
                           - |I_i - I_j|^2 / 2 theta_beta^2)     (appearance)
                  + w2 exp(-|p_i - p_j|^2 / 2 theta_gamma^2)     (smoothness)

  The appearance (bilateral) kernel asks nearby pixels of similar colour to
  agree, which snaps labels to colour edges; the smoothness kernel removes
  small isolated regions.

**Mean-field inference** approximates ``P(x)`` by a product of per-pixel
distributions ``Q_i``, and lowers ``KL(Q || P)`` by repeating the update

    Q_i(l) ∝ exp(-psi_u(l) - sum_{l'} mu(l, l') sum_{j != i} k(f_i, f_j) Q_j(l')).

With Potts, ``sum_{l' != l} Q_j(l') = 1 - Q_j(l)``, and the part that does not
depend on ``l`` cancels in the normalisation:

    Q_i(l) ∝ exp(-psi_u(l) + sum_{j != i} k(f_i, f_j) Q_j(l)).

The sum over all ``j`` (the "message") is the whole cost: ``N^2`` kernel
values for ``N`` pixels.

- ``method="exact"`` evaluates it: the ``N x N`` kernel, built in chunks of
  rows (and kept between iterations while it fits in ``cache_bytes``).
- ``method="grid"`` approximates it for larger images. The smoothness kernel
  is a Gaussian filter, exact and cheap as two 1-D convolutions (truncated at
  4 theta_gamma). For the appearance kernel the pixels are grouped into cells
  of ``grid_cell`` standard deviations in every feature (``grid_cell *
  theta_alpha`` pixels in position, ``grid_cell * theta_beta`` in each colour
  channel); each cell sends one message from its centroid carrying the sum of
  its pixels' ``Q``, and every pixel receives at full resolution with its own
  colour, so edges stay sharp. Its cost is ``N x M`` for ``M`` occupied cells.
  The chapter measures its error against the exact sums.
- ``method="auto"`` (default): exact up to ``max_exact_pixels``, grid above.

Defaults are DeepLab v2's (ResNet-101, PASCAL VOC, images of about 500 x 500
pixels, colours in 0..255): ``w1 = 4, theta_alpha = 67, theta_beta = 3,
w2 = 3, theta_gamma = 1``, 10 iterations; ``theta_beta`` here is in the
course's image units, 3 / 255. On small images scale ``theta_alpha`` with the
image (chapter 10 tunes all of them on Shapes).

Deviations from the paper: the paper's inference filters with the
permutohedral lattice (Adams et al. 2010) in O(N); here the sums are exact
or the cell approximation above. The authors' code lets a pixel send a
message to itself; the sums here leave ``j = i`` out, as the equations do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

METHODS = ("auto", "exact", "grid")


@dataclass(frozen=True)
class DenseCRFConfig:
    """The parameters of :func:`dense_crf` (DeepLab v2's by default)."""

    theta_alpha: float = 67.0  # appearance kernel: position std, pixels
    theta_beta: float = 3 / 255  # appearance kernel: colour std, image units [0, 1]
    theta_gamma: float = 1.0  # smoothness kernel: position std, pixels
    w1: float = 4.0  # weight of the appearance kernel
    w2: float = 3.0  # weight of the smoothness kernel
    iterations: int = 10  # mean-field updates
    method: str = "auto"  # "exact", "grid", or "auto": exact up to max_exact_pixels
    max_exact_pixels: int = 96 * 96  # "auto" is exact up to this many pixels
    grid_cell: float = 0.5  # "grid": cell side in standard deviations of each feature
    cache_bytes: int = 1 << 28  # keep kernels up to this size between iterations
    eps: float = 1e-8  # probabilities are clamped to >= eps before the log

    def __post_init__(self):
        for name in ("theta_alpha", "theta_beta", "theta_gamma", "grid_cell", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        for name in ("w1", "w2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be an int >= 0, got {self.iterations!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")


# ---------------------------------------------------------------- features

def appearance_features(image: torch.Tensor, theta_alpha: float,
                        theta_beta: float) -> torch.Tensor:
    """``[N, 2 + C]`` (the image's float dtype): ``(y / theta_alpha,
    x / theta_alpha, I / theta_beta)`` for each pixel of ``image`` ``[C, H, W]``,
    in raster order; then ``k = exp(-|f_i - f_j|^2 / 2)`` is the appearance
    kernel."""
    C, H, W = image.shape
    position = smoothness_features(H, W, theta_alpha, image.device).to(image.dtype)
    colour = image.flatten(1).T / theta_beta  # (N, C)
    return torch.cat([position, colour], 1)


def smoothness_features(height: int, width: int, theta_gamma: float,
                        device=None) -> torch.Tensor:
    """``float32 [N, 2]``: ``(y, x) / theta_gamma`` of each pixel in raster
    order."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                            torch.arange(width, dtype=torch.float32, device=device),
                            indexing="ij")
    return torch.stack([ys, xs]).flatten(1).T / theta_gamma


def gaussian_kernel(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[n, m]``: ``exp(-|f_i - g_j|^2 / 2)`` for features ``f [n, D]`` and
    ``g [m, D]``."""
    # Centring first keeps |f|^2 + |g|^2 - 2 f.g accurate in float32.
    centre = g.mean(0, keepdim=True)
    f, g = f - centre, g - centre
    norms = f.pow(2).sum(1, keepdim=True) + g.pow(2).sum(1)[None]  # (n, m)
    squared = torch.addmm(norms, f, g.T, alpha=-2)  # |f|^2 + |g|^2 - 2 f.g
    return squared.clamp_(min=0).mul_(-0.5).exp_()


def pairwise_kernel(appearance: torch.Tensor, smoothness: torch.Tensor,
                    w1: float, w2: float, rows: slice = slice(None)
                    ) -> torch.Tensor:
    """``[n, N]``: ``w1 k_appearance + w2 k_smoothness`` between the pixels
    ``rows`` and every pixel, with ``k(f_i, f_i)`` (a pixel with itself) set
    to 0: the message leaves ``j = i`` out."""
    k = w1 * gaussian_kernel(appearance[rows], appearance)
    k += w2 * gaussian_kernel(smoothness[rows], smoothness)
    start = rows.start or 0
    n = k.shape[0]
    k[torch.arange(n, device=k.device), torch.arange(start, start + n,
                                                     device=k.device)] = 0
    return k


def mean_field_update(unary: torch.Tensor, q: torch.Tensor,
                      appearance: torch.Tensor, smoothness: torch.Tensor,
                      w1: float, w2: float) -> torch.Tensor:
    """One exact mean-field update: ``Q_i(l) ∝ exp(-unary_i(l) +
    sum_{j != i} k(f_i, f_j) Q_j(l))`` (Potts).

    ``unary`` and ``q``: ``float [K, N]``; ``appearance`` ``[N, Da]`` and
    ``smoothness`` ``[N, Ds]``: features already divided by their standard
    deviations (:func:`appearance_features`, :func:`smoothness_features`).
    Returns the new ``Q``, ``[K, N]``, each column summing to 1.
    """
    kernel = pairwise_kernel(appearance, smoothness, w1, w2)  # (N, N)
    message = q @ kernel.T  # (K, N): sum_j k(f_i, f_j) Q_j(l)
    return torch.softmax(-unary + message, dim=0)


# ---------------------------------------------------------------- messages

def gaussian_filter(q: torch.Tensor, height: int, width: int, theta: float,
                    radius: int) -> torch.Tensor:
    """``[K, N]``: ``sum_j exp(-|p_i - p_j|^2 / 2 theta^2) Q_j`` over the
    pixels ``j`` within ``radius`` rows and columns of ``i`` (every pixel of
    the image when ``radius >= max(H, W) - 1``), by two 1-D convolutions: the
    Gaussian of a 2-D offset is the product of the Gaussians of its rows and
    columns offsets."""
    K = q.shape[0]
    taps = torch.arange(-radius, radius + 1, dtype=q.dtype, device=q.device)
    taps = torch.exp(-0.5 * (taps / theta) ** 2)
    x = q.reshape(K, 1, height, width)
    x = F.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))  # zeros outside
    x = F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))
    return x.reshape(K, -1)


class _Messages:
    """``sum_{j != i} (w1 k_appearance + w2 k_smoothness)(f_i, f_j) Q_j``.

    The smoothness part is a Gaussian filter (exact when it spans the image);
    the appearance part is a matrix from every pixel to ``sources``: every
    pixel itself (exact), or the centroids of the occupied cells (grid),
    built in row chunks and cached while it fits in ``cache_bytes``."""

    def __init__(self, image: torch.Tensor, config: DenseCRFConfig, exact: bool):
        C, H, W = image.shape
        self.config, self.height, self.width, self.exact = config, H, W, exact
        self.appearance = appearance_features(image, config.theta_alpha,
                                              config.theta_beta)  # (N, 2 + C)
        n = H * W
        if exact:
            self.sources, self.cell = self.appearance, None
            self.radius = max(H, W) - 1
        else:
            self.sources, self.cell = self._cells(self.appearance, config.grid_cell)
            self.radius = min(math.ceil(4 * config.theta_gamma), max(H, W) - 1)
        m = len(self.sources)
        self.chunk = max(1, min(n, (1 << 24) // m))  # rows per chunk: ~64 MB
        self.kernel = self._kernel(slice(None)) if n * m * 4 <= config.cache_bytes \
            else None

    @staticmethod
    def _cells(features: torch.Tensor, cell: float):
        """Centroids ``[M, D]`` of the occupied cells of side ``cell`` and
        each pixel's cell ``int64 [N]``."""
        index = torch.floor(features / cell).long()
        index -= index.min(0).values
        key = torch.zeros(len(index), dtype=torch.int64, device=index.device)
        for d in range(index.shape[1]):
            key = key * (int(index[:, d].max()) + 1) + index[:, d]
        _, cell_of, counts = torch.unique(key, return_inverse=True,
                                          return_counts=True)
        sums = torch.zeros(len(counts), features.shape[1], device=features.device)
        sums.index_add_(0, cell_of, features)
        return sums / counts[:, None], cell_of

    @property
    def cells(self) -> int:
        """The number of message sources: ``N`` (exact) or occupied cells."""
        return len(self.sources)

    def _kernel(self, rows: slice) -> torch.Tensor:
        k = gaussian_kernel(self.appearance[rows], self.sources)
        if self.exact:  # leave j = i out
            start = rows.start or 0
            i = torch.arange(k.shape[0], device=k.device)
            k[i, i + start] = 0
        return k

    def __call__(self, q: torch.Tensor) -> torch.Tensor:  # q: (K, N) -> (K, N)
        K, n = q.shape
        if self.exact:
            mass = q.T  # (N, K)
        else:  # each cell sends the sum of its pixels' Q
            mass = torch.zeros(self.cells, K, dtype=q.dtype, device=q.device)
            mass.index_add_(0, self.cell, q.T)
        if self.kernel is not None:
            appearance = (self.kernel @ mass).T
        else:
            appearance = torch.empty_like(q)
            for start in range(0, n, self.chunk):
                rows = slice(start, min(n, start + self.chunk))
                appearance[:, rows] = (self._kernel(rows) @ mass).T
        if not self.exact:
            appearance = appearance - q  # k(f_i, f_i) = 1 is in i's own cell
        out = self.config.w1 * appearance
        if self.config.w2:
            smooth = gaussian_filter(q, self.height, self.width,
                                     self.config.theta_gamma, self.radius)
            out = out + self.config.w2 * (smooth - q)  # leave j = i out
        return out


# ---------------------------------------------------------------- the CRF

def _check_inputs(image: torch.Tensor, probabilities: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a float tensor [3, H, W] or [B, 3, H, W] "
                        f"in [0, 1], got {getattr(image, 'dtype', type(image))}")
    if not isinstance(probabilities, torch.Tensor) or \
            not probabilities.is_floating_point():
        raise TypeError("probabilities must be a float tensor [K, H, W] or "
                        "[B, K, H, W] (a softmax output), got "
                        f"{getattr(probabilities, 'dtype', type(probabilities))}")
    batched = probabilities.ndim == 4
    if probabilities.ndim not in (3, 4) or image.ndim != probabilities.ndim:
        raise ValueError(
            f"image and probabilities must be [C, H, W] and [K, H, W], or "
            f"[B, C, H, W] and [B, K, H, W]; got {list(image.shape)} and "
            f"{list(probabilities.shape)}")
    if not batched:
        image, probabilities = image[None], probabilities[None]
    if image.shape[0] != probabilities.shape[0] or \
            image.shape[-2:] != probabilities.shape[-2:]:
        raise ValueError(f"image {list(image.shape)} and probabilities "
                         f"{list(probabilities.shape)} differ in batch or size")
    if image.numel() and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"image values must be in [0, 1], got "
                         f"[{image.min().item():.3g}, {image.max().item():.3g}] "
                         "(pass the image before normalisation)")
    if probabilities.numel() and (
        probabilities.min() < 0
        or not torch.allclose(probabilities.sum(1), torch.ones(()).to(probabilities),
                              atol=1e-3)):
        raise ValueError("probabilities must be >= 0 and sum to 1 over the class "
                         "dimension (softmax the logits first)")
    return image, probabilities, batched


def unary_from_probabilities(probabilities: torch.Tensor, eps: float = 1e-8
                             ) -> torch.Tensor:
    """``-log max(P, eps)``, the unary potential of each label."""
    return -torch.log(probabilities.float().clamp(min=eps))


def message_function(image: torch.Tensor, config: DenseCRFConfig):
    """The message operator of one image ``[C, H, W]``: a function from
    ``Q [K, N]`` to ``sum_{j != i} (w1 k1 + w2 k2)(f_i, f_j) Q_j`` ``[K, N]``,
    exact or approximate as ``config.method`` says."""
    C, H, W = image.shape
    method = config.method
    if method == "auto":
        method = "exact" if H * W <= config.max_exact_pixels else "grid"
    return _Messages(image.float(), config, exact=method == "exact")


def dense_crf(image: torch.Tensor, probabilities: torch.Tensor,
              config: DenseCRFConfig | None = None, **overrides) -> torch.Tensor:
    """Refine a semantic model's probabilities with the fully connected CRF.

    - ``image``: ``float [3, H, W]`` or ``[B, 3, H, W]``, values in [0, 1]
      (the image as the dataset gives it, before any normalisation; any
      number of channels works, e.g. 1 for a grey image);
    - ``probabilities``: ``float [K, H, W]`` or ``[B, K, H, W]``, summing to 1
      over ``K`` (``logits.softmax(1)``);
    - ``config``: :class:`DenseCRFConfig` (DeepLab v2's parameters by
      default); keyword arguments replace single fields, e.g.
      ``dense_crf(image, p, theta_alpha=10, iterations=5)``.

    Returns the mean-field marginals ``Q``, ``float32``, shaped like
    ``probabilities`` and on its device; ``Q.argmax(-3)`` is the refined
    labelling. ``iterations=0`` returns the normalised input.
    """
    config = config or DenseCRFConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    image, probabilities, batched = _check_inputs(image, probabilities)
    out = torch.empty_like(probabilities, dtype=torch.float32)
    for b in range(probabilities.shape[0]):
        K, H, W = probabilities[b].shape
        unary = unary_from_probabilities(probabilities[b], config.eps).view(K, -1)
        q = torch.softmax(-unary, dim=0)
        if config.iterations:
            messages = message_function(image[b].to(probabilities.device), config)
            for _ in range(config.iterations):
                q = torch.softmax(-unary + messages(q), dim=0)
        out[b] = q.view(K, H, W)
    return out if batched else out[0]


def free_energy(image: torch.Tensor, probabilities: torch.Tensor,
                q: torch.Tensor, config: DenseCRFConfig | None = None,
                **overrides) -> float:
    """The mean-field objective ``KL(Q || P) - log Z`` of marginals ``q``,
    exactly (``O(N^2)``: small images only):

        sum_i sum_l Q_i(l) (psi_u(l) + log Q_i(l))
          + 1/2 sum_i sum_{j != i} k(f_i, f_j) (1 - sum_l Q_i(l) Q_j(l)).

    ``image [C, H, W]``, ``probabilities`` and ``q`` ``[K, H, W]`` (one image).
    Mean-field updates lower it in practice (each single-pixel update
    provably does; the parallel update of all pixels at once usually does).
    """
    config = config or DenseCRFConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    image, probabilities, batched = _check_inputs(image, probabilities)
    if batched:
        raise ValueError("free_energy takes one image, not a batch")
    K, H, W = probabilities[0].shape
    unary = unary_from_probabilities(probabilities[0], config.eps).view(K, -1)
    unary, q = unary.double(), q.reshape(K, -1).double()
    appearance = appearance_features(image[0].double(), config.theta_alpha,
                                     config.theta_beta)
    smoothness = smoothness_features(H, W, config.theta_gamma,
                                     image.device).double()
    n = H * W
    message = torch.empty_like(q)  # sum_{j != i} k_ij Q_j
    total_k = torch.zeros((), dtype=torch.float64)  # sum_{i != j} k_ij
    for start in range(0, n, 1024):
        rows = slice(start, min(n, start + 1024))
        k = pairwise_kernel(appearance, smoothness, config.w1, config.w2, rows)
        message[:, rows] = q @ k.T
        total_k += k.sum()
    entropy_term = (q * torch.log(q.clamp(min=1e-300))).sum()
    unary_term = (q * unary).sum()
    # sum_{j != i} k_ij (1 - Q_i . Q_j) = sum_j k_ij - Q_i . message_i
    pairwise = 0.5 * (total_k - (q * message).sum())
    return float(entropy_term + unary_term + pairwise)

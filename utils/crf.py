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
distributions ``Q_i`` and lowers ``KL(Q || P)`` by repeating the update

    Q_i(l) ∝ exp(-psi_u(l) - sum_{l'} mu(l, l') sum_{j != i} k(f_i, f_j) Q_j(l')),

which with Potts (``sum_{l' != l} Q_j(l') = 1 - Q_j(l)``; what does not depend
on ``l`` cancels in the normalisation) is

    Q_i(l) ∝ exp(-psi_u(l) + sum_{j != i} k(f_i, f_j) Q_j(l)).

**Normalised kernels.** The sum over ``j`` grows with the number of similar
pixels, so the right ``w1, w2`` would depend on the image's size. The
authors' code divides each kernel by its row sums (symmetrically in their 2013
release, pydensecrf's default, which DeepLab's parameter values assume):
``k_ij / sqrt(d_i d_j)`` with ``d_i = sum_j k_ij``. That kernel is still
symmetric, so the model stays a CRF with a well-defined energy.
``normalize=True`` (the default) does the same; ``normalize=False`` uses the
paper's raw sums.

The sum over ``j`` (the "message") is the whole cost: ``N^2`` kernel values
for ``N`` pixels.

- ``method="exact"`` evaluates it: the ``N x N`` kernel, built in chunks of
  rows, kept between iterations while it fits in ``cache_bytes``.
- ``method="lattice"`` approximates each Gaussian filter with the
  permutohedral lattice (Adams, Baek & Davis, Eurographics 2010), as the
  paper does, in O(N): splat every pixel onto the vertices of its enclosing
  simplex in a lattice over the (scaled) feature space, blur along the
  lattice's d + 1 axes, and slice back. The chapter measures its error
  against the exact sums.
- ``method="auto"`` (default): exact up to ``max_exact_pixels``, the lattice
  above.

Defaults are DeepLab v2's (ResNet-101, PASCAL VOC, images of about 500 x 500
pixels, colours in 0..255): ``w1 = 4, theta_alpha = 67, theta_beta = 3,
w2 = 3, theta_gamma = 1``, 10 iterations; ``theta_beta`` here is in the
course's image units, 3 / 255. :data:`SHAPES` holds values for the Shapes
images of chapter 10.

Deviations from the paper: the messages leave ``j = i`` out, as the paper's
equations do (the authors' lattice code includes it); with normalised
kernels its weight is ``1 / d_i``, small.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

METHODS = ("auto", "exact", "lattice")


@dataclass(frozen=True)
class DenseCRFConfig:
    """The parameters of :func:`dense_crf` (DeepLab v2's by default)."""

    theta_alpha: float = 67.0  # appearance kernel: position std, pixels
    theta_beta: float = 3 / 255  # appearance kernel: colour std, image units [0, 1]
    theta_gamma: float = 1.0  # smoothness kernel: position std, pixels
    w1: float = 4.0  # weight of the appearance kernel
    w2: float = 3.0  # weight of the smoothness kernel
    iterations: int = 10  # mean-field updates
    normalize: bool = True  # k_ij / sqrt(d_i d_j), as the authors' code (see above)
    method: str = "auto"  # "exact", "lattice", or "auto": exact up to max_exact_pixels
    max_exact_pixels: int = 96 * 96  # "auto" is exact up to this many pixels
    cache_bytes: int = 1 << 29  # keep the exact kernel between iterations up to this
    eps: float = 1e-8  # probabilities are clamped to >= eps before the log

    def __post_init__(self):
        for name in ("theta_alpha", "theta_beta", "theta_gamma", "eps"):
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


# Shapes at 64 x 64 pixels (chapter 10): chosen on the validation split by
# ``python -m benchmarks.classical_and_crf --tune`` (FCN-8s's outputs, cpu
# profile), which prints the grid it searched.
SHAPES = DenseCRFConfig(theta_alpha=40.0, theta_beta=0.025, theta_gamma=1.0,
                        w1=10.0, w2=3.0)


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
    """``[n, N]``: ``w1 k_appearance + w2 k_smoothness`` (the paper's raw,
    unnormalised kernels) between the pixels ``rows`` and every pixel, with
    ``k(f_i, f_i)`` (a pixel with itself) set to 0: the message leaves
    ``j = i`` out."""
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
    """One exact mean-field update with the paper's (unnormalised) kernels:
    ``Q_i(l) ∝ exp(-unary_i(l) + sum_{j != i} k(f_i, f_j) Q_j(l))`` (Potts).

    ``unary`` and ``q``: ``float [K, N]``; ``appearance`` ``[N, Da]`` and
    ``smoothness`` ``[N, Ds]``: features already divided by their standard
    deviations (:func:`appearance_features`, :func:`smoothness_features`).
    Returns the new ``Q``, ``[K, N]``, each column summing to 1.
    """
    kernel = pairwise_kernel(appearance, smoothness, w1, w2)  # (N, N)
    message = q @ kernel.T  # (K, N): sum_j k(f_i, f_j) Q_j(l)
    return torch.softmax(-unary + message, dim=0)


# ------------------------------------------------- the permutohedral lattice

class PermutohedralLattice:
    """Gaussian filtering ``out_i ≈ sum_j exp(-|f_i - f_j|^2 / 2) v_j`` in O(N)
    for features ``f [N, d]`` (Adams, Baek & Davis 2010), transcribed from
    the authors' code that Krähenbühl & Koltun released with the paper.

    The features are scaled and lifted onto the hyperplane ``sum = 0`` of
    R^(d+1), tiled by simplices whose vertices (the lattice points) have
    integer coordinates. Filtering = *splat* each value onto the d + 1
    vertices of its simplex with barycentric weights, *blur* the lattice
    with ``[1/2, 1, 1/2]`` along each of its d + 1 axes, *slice* back with
    the same weights. Only the occupied lattice points are stored (found with
    ``torch.unique`` instead of a hash table).
    """

    def __init__(self, features: torch.Tensor):
        f = features.double()
        N, d = f.shape
        self.d = d
        device = f.device
        # Elevate onto the hyperplane (Adams et al., p. 5), scaled so that the
        # blur below matches a Gaussian of standard deviation 1.
        inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
        i = torch.arange(d, dtype=torch.float64, device=device)
        scaled = f * (inv_std / torch.sqrt((i + 1) * (i + 2)))  # (N, d)
        suffix = torch.cat([scaled.flip(1).cumsum(1).flip(1),
                            torch.zeros(N, 1, dtype=torch.float64, device=device)], 1)
        j = torch.arange(1, d + 1, dtype=torch.float64, device=device)
        elevated = suffix.clone()  # (N, d + 1)
        elevated[:, 1:] -= j * scaled
        # The nearest lattice point of "colour 0" (coordinates multiples of d+1).
        v = elevated / (d + 1)
        up, down = torch.ceil(v) * (d + 1), torch.floor(v) * (d + 1)
        rem0 = torch.where(up - elevated < elevated - down, up, down)
        total = (rem0 / (d + 1)).sum(1, keepdim=True).round().long()
        # Rank of each coordinate's remainder (ties: the earlier index first).
        diff = elevated - rem0
        less = diff[:, :, None] < diff[:, None, :]  # (N, i, j): diff_i < diff_j
        upper = torch.ones(d + 1, d + 1, dtype=torch.bool, device=device).triu(1)
        rank = (less & upper).sum(2) + (~less.transpose(1, 2) & upper.T).sum(2)
        rank = rank + total
        rem0 = rem0.long()
        low, high = rank < 0, rank > d
        rank = torch.where(low, rank + d + 1, torch.where(high, rank - d - 1, rank))
        rem0 = torch.where(low, rem0 + d + 1, torch.where(high, rem0 - d - 1, rem0))
        # Barycentric weights (p. 10).
        b = torch.zeros(N, d + 2, dtype=torch.float64, device=device)
        part = (elevated - rem0) / (d + 1)
        b.scatter_add_(1, d - rank, part)
        b.scatter_add_(1, d - rank + 1, -part)
        b[:, 0] += 1.0 + b[:, d + 1]
        self.weights = b[:, : d + 1].float()  # (N, d + 1)
        # The d + 1 vertices: rem0 + the canonical simplex's vertex r, whose
        # coordinate i is r, or r - (d + 1) where rank_i > d - r.
        r = torch.arange(d + 1, device=device)[:, None, None]  # (d + 1, 1, 1)
        keys = rem0[None, :, :d] + torch.where(rank[None, :, :d] <= d - r, r, r - d - 1)
        keys = keys.reshape(-1, d)  # (vertex r of pixel n at r * N + n, d)
        # Pack a key into one int64 (the last coordinate is implied by the
        # plane sum = 0), with room for the blur's neighbours (+-d).
        low_key = keys.min(0).values - d - 1
        span = keys.max(0).values + d + 2 - low_key
        if float(torch.prod(span.double())) >= 2.0**62:
            raise ValueError("features too spread for the lattice: increase the "
                             "kernel's standard deviations or use method='exact'")
        self.stride = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        packed = ((keys - low_key) * self.stride).sum(1)
        self.points, inverse = torch.unique(packed, return_inverse=True)
        self.vertex = inverse.view(d + 1, N).T + 1  # (N, d + 1); row 0: "none"
        # Blur neighbours along each axis j: key -+ 1 everywhere, with key_j
        # +- d instead (axis d: the implied coordinate).
        ones = self.stride.sum()
        self.neighbours = []
        for axis in range(d + 1):
            shift = ones - (d + 1) * self.stride[axis] if axis < d else ones
            self.neighbours.append((self._find(self.points - shift),
                                    self._find(self.points + shift)))
        self.alpha = 1.0 / (1.0 + 2.0 ** -d)  # the authors' scaling constant
        self.self_weight = self._self_weight(rank)

    def _self_weight(self, rank: torch.Tensor) -> torch.Tensor:
        """``[N]``: how much of its own value each pixel gets back, through
        its own simplex: the filter's ``k(f_i, f_i)``, which should be 1 and
        is not (the lattice only approximates the Gaussian), so that messages
        can leave ``j = i`` out. Consecutive vertices ``r, r + 1`` of a simplex
        are neighbours along the axis whose coordinate has rank ``d - r``, so
        the blur restricted to the simplex is d + 1 steps along its edges.
        Paths through other lattice points are not counted (they add little
        where the lattice is sparse, where this matters)."""
        d = self.d
        x = self.weights.double().clone()  # (N, d + 1): splat of a unit value
        rows = torch.arange(len(x), device=x.device)
        for axis in range(d + 1):
            a = d - rank[:, axis]  # the edge (a, a + 1) along this axis
            b = (a + 1) % (d + 1)
            xa, xb = x[rows, a], x[rows, b]
            x[rows, a], x[rows, b] = xa + 0.5 * xb, xb + 0.5 * xa
        return (self.alpha * (x * self.weights.double()).sum(1)).float()

    def _find(self, packed: torch.Tensor) -> torch.Tensor:
        """Row of each packed key among the lattice points (+1), 0 if absent."""
        at = torch.searchsorted(self.points, packed).clamp(max=len(self.points) - 1)
        return torch.where(self.points[at] == packed, at + 1, 0)

    @property
    def size(self) -> int:
        """The number of occupied lattice points."""
        return len(self.points)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``[N, c]`` values in, the filtered ``[N, c]`` out."""
        N, c = values.shape
        lattice = torch.zeros(self.size + 1, c, dtype=values.dtype,
                              device=values.device)
        weights = self.weights.to(values.dtype)
        for r in range(self.d + 1):  # splat
            lattice.index_add_(0, self.vertex[:, r], weights[:, r, None] * values)
        lattice[0] = 0
        for n1, n2 in self.neighbours:  # blur, one axis at a time
            blurred = lattice[1:] + 0.5 * (lattice[n1] + lattice[n2])
            lattice = torch.cat([lattice[:1], blurred])
        out = torch.zeros_like(values)
        for r in range(self.d + 1):  # slice
            out += weights[:, r, None] * lattice[self.vertex[:, r]]
        return out * self.alpha


# ---------------------------------------------------------------- messages

class _Messages:
    """``sum_{j != i} (w1 k_appearance + w2 k_smoothness)(f_i, f_j) Q_j``,
    each kernel normalised if ``config.normalize``.

    Every filter below sums over all ``j``, the pixel itself included (with
    ``k = 1``), as the lattice cannot leave it out; the messages then take
    ``j = i`` away."""

    def __init__(self, image: torch.Tensor, config: DenseCRFConfig, exact: bool):
        C, H, W = image.shape
        self.config = config
        self.kernels = []  # (weight, filter, 1 / sqrt(d_i) or None)
        if config.w1:
            features = appearance_features(image, config.theta_alpha,
                                           config.theta_beta)
            self.kernels.append((config.w1, _ExactFilter(features, config.cache_bytes)
                                 if exact else PermutohedralLattice(features)))
        if config.w2:
            # A Gaussian of position only is a blur: exact over the whole image,
            # or truncated at 4 standard deviations (a relative error < 1e-3).
            radius = max(H, W) - 1 if exact else \
                min(math.ceil(4 * config.theta_gamma), max(H, W) - 1)
            self.kernels.append((config.w2, _SpatialFilter(
                H, W, config.theta_gamma, radius, image.dtype, image.device)))
        ones = torch.ones(H * W, 1, dtype=image.dtype, device=image.device)
        self.kernels = [(w, f, f(ones)[:, 0].clamp(min=1e-20).rsqrt()
                         if config.normalize else None) for w, f in self.kernels]

    def __call__(self, q: torch.Tensor) -> torch.Tensor:  # q: (K, N) -> (K, N)
        out = torch.zeros_like(q)
        for weight, filt, scale in self.kernels:
            own = getattr(filt, "self_weight", 1.0)  # the filter's k(f_i, f_i)
            if scale is None:
                message = filt(q.T).T - own * q  # j = i left out
            else:  # k_ij / sqrt(d_i d_j), j = i left out
                message = scale * filt((q * scale).T).T - own * q * scale**2
            out += weight * message
        return out


class _ExactFilter:
    """``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` over all ``j``, with the full
    kernel (kept if it fits in ``cache_bytes``, else built in row chunks)."""

    def __init__(self, features: torch.Tensor, cache_bytes: int):
        self.features = features
        n = len(features)
        self.chunk = max(1, min(n, (1 << 24) // n))  # rows per chunk: ~64 MB
        self.kernel = gaussian_kernel(features, features) \
            if n * n * 4 <= cache_bytes else None

    def __call__(self, values: torch.Tensor) -> torch.Tensor:  # (N, c) -> (N, c)
        if self.kernel is not None:
            return self.kernel @ values
        n = len(values)
        out = torch.empty_like(values)
        for start in range(0, n, self.chunk):
            rows = slice(start, min(n, start + self.chunk))
            out[rows] = gaussian_kernel(self.features[rows], self.features) @ values
        return out


class _SpatialFilter:
    """``sum_j exp(-|p_i - p_j|^2 / 2 theta^2) v_j`` over the pixels ``j``
    within ``radius`` rows and columns of ``i``, by two 1-D convolutions (the
    Gaussian of a 2-D offset is the product of two 1-D Gaussians); exact when
    ``radius >= max(H, W) - 1``."""

    def __init__(self, height, width, theta, radius, dtype, device):
        self.shape, self.radius = (height, width), radius
        taps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
        self.taps = torch.exp(-0.5 * (taps / theta) ** 2)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:  # (N, c) -> (N, c)
        c, r = values.shape[1], self.radius
        x = values.T.reshape(c, 1, *self.shape)
        x = F.conv2d(x, self.taps.view(1, 1, -1, 1), padding=(r, 0))  # zeros outside
        x = F.conv2d(x, self.taps.view(1, 1, 1, -1), padding=(0, r))
        return x.reshape(c, -1).T


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


def _config(config: DenseCRFConfig | None, overrides: dict) -> DenseCRFConfig:
    config = config or DenseCRFConfig()
    return dataclasses.replace(config, **overrides) if overrides else config


def unary_from_probabilities(probabilities: torch.Tensor, eps: float = 1e-8
                             ) -> torch.Tensor:
    """``-log max(P, eps)``, the unary potential of each label."""
    return -torch.log(probabilities.float().clamp(min=eps))


def message_function(image: torch.Tensor, config: DenseCRFConfig | None = None,
                     **overrides):
    """The message operator of one image ``[C, H, W]``: a function from
    ``Q [K, N]`` to ``[K, N]``, ``sum_{j != i} (w1 k1 + w2 k2)(f_i, f_j) Q_j``
    (kernels normalised if ``config.normalize``), exact or by the lattice as
    ``config.method`` says."""
    config = _config(config, overrides)
    C, H, W = image.shape
    method = config.method
    if method == "auto":
        method = "exact" if H * W <= config.max_exact_pixels else "lattice"
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
    labelling. ``iterations=0`` returns the input (renormalised).
    """
    config = _config(config, overrides)
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


class Refined(torch.nn.Module):
    """A semantic ``model`` followed by :func:`dense_crf`: ``forward(images)``
    takes ``float [B, 3, H, W]`` in [0, 1] and returns ``log Q`` ``[B, K, H, W]``
    (float32, the log of the CRF's marginals, clamped at ``log eps``), so that
    anything that scores logits (argmax, cross-entropy, the course's
    evaluators) scores the refined prediction. Inference only: no gradient
    flows through the CRF."""

    def __init__(self, model: torch.nn.Module, config: DenseCRFConfig | None = None,
                 **overrides):
        super().__init__()
        self.model = model
        self.config = _config(config, overrides)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probabilities = self.model(images).float().softmax(1)  # (B, K, H, W)
        q = dense_crf(images.float(), probabilities, self.config)  # (B, K, H, W)
        return q.clamp(min=self.config.eps).log()


def free_energy(image: torch.Tensor, probabilities: torch.Tensor,
                q: torch.Tensor, config: DenseCRFConfig | None = None,
                **overrides) -> float:
    """The mean-field objective ``KL(Q || P) - log Z`` of marginals ``q``,
    exactly (``O(N^2)``: small images only):

        sum_i sum_l Q_i(l) (psi_u(l) + log Q_i(l))
          + 1/2 sum_i sum_{j != i} k(f_i, f_j) (1 - sum_l Q_i(l) Q_j(l)),

    with the kernel normalised if ``config.normalize``. ``image [C, H, W]``,
    ``probabilities`` and ``q`` ``[K, H, W]`` (one image). Mean-field updates
    lower it in practice (each single-pixel update provably does; the
    parallel update of all pixels at once usually does).
    """
    config = _config(config, overrides)
    image, probabilities, batched = _check_inputs(image, probabilities)
    if batched:
        raise ValueError("free_energy takes one image, not a batch")
    K, H, W = probabilities[0].shape
    unary = unary_from_probabilities(probabilities[0], config.eps).view(K, -1)
    unary, q = unary.double(), q.reshape(K, -1).double()
    messages = _Messages(image[0].double(), dataclasses.replace(config, cache_bytes=0),
                         exact=True)
    entropy_term = (q * torch.log(q.clamp(min=1e-300))).sum()
    unary_term = (q * unary).sum()
    # sum_{j != i} k_ij (1 - Q_i . Q_j) = sum_{j != i} k_ij - Q_i . message_i
    total_k = messages(torch.ones(1, H * W, dtype=torch.float64)).sum()
    pairwise = 0.5 * (total_k - (q * messages(q)).sum())
    return float(entropy_term + unary_term + pairwise)

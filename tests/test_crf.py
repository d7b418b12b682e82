"""The fully connected CRF (chapter 10) against mean-field written out pixel
by pixel, label by label."""

import csv
import dataclasses
import math

import pytest
import torch

from utils import crf
from utils.crf import DenseCRFConfig, dense_crf, free_energy
from utils.data import shapes

CONFIG = DenseCRFConfig(theta_alpha=2.0, theta_beta=0.3, theta_gamma=1.5,
                        w1=1.5, w2=0.7, iterations=1, normalize=False)


def tiny_problem(seed, K=3, H=3, W=4):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, H, W, generator=g)
    probabilities = torch.rand(K, H, W, generator=g).softmax(0)
    return image, probabilities


def naive_kernel(image, i, j, c: DenseCRFConfig):
    """k(f_i, f_j) from the paper's formula, for flat pixel indices."""
    W = image.shape[2]
    (yi, xi), (yj, xj) = divmod(i, W), divmod(j, W)
    position = (yi - yj) ** 2 + (xi - xj) ** 2
    colour = float((image[:, yi, xi] - image[:, yj, xj]).double().pow(2).sum())
    appearance = math.exp(-position / (2 * c.theta_alpha ** 2)
                          - colour / (2 * c.theta_beta ** 2))
    smoothness = math.exp(-position / (2 * c.theta_gamma ** 2))
    return c.w1 * appearance + c.w2 * smoothness


def naive_update(image, unary, q, c: DenseCRFConfig):
    """Q_i(l) ∝ exp(-psi_u(l) - sum_{l'} mu(l, l') sum_{j != i} k_ij Q_j(l'))
    with Potts mu(l, l') = [l != l'], no simplification."""
    K, N = q.shape
    new = torch.empty(K, N, dtype=torch.float64)
    for i in range(N):
        cost = []
        for label in range(K):
            pairwise = 0.0
            for j in range(N):
                if j == i:
                    continue
                k = naive_kernel(image, i, j, c)
                pairwise += sum(k * float(q[other, j]) for other in range(K)
                                if other != label)
            cost.append(float(unary[label, i]) + pairwise)
        z = sum(math.exp(-v) for v in cost)
        for label in range(K):
            new[label, i] = math.exp(-cost[label]) / z
    return new


@pytest.mark.parametrize("seed", range(3))
def test_mean_field_update_matches_the_update_written_out(seed):
    image, p = tiny_problem(seed)
    K, H, W = p.shape
    unary = -torch.log(p).view(K, -1)
    q = torch.rand(K, H * W, generator=torch.Generator().manual_seed(9)).softmax(0)
    got = crf.mean_field_update(
        unary, q, crf.appearance_features(image, CONFIG.theta_alpha, CONFIG.theta_beta),
        crf.smoothness_features(H, W, CONFIG.theta_gamma), CONFIG.w1, CONFIG.w2)
    expected = naive_update(image, unary, q, CONFIG)
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_dense_crf_iterates_the_written_out_update():
    image, p = tiny_problem(5)
    K, H, W = p.shape
    unary = -torch.log(p).view(K, -1)
    q = p.view(K, -1).double()
    for _ in range(3):
        q = naive_update(image, unary, q, CONFIG)
    got = dense_crf(image, p, CONFIG, iterations=3, method="exact")
    assert got.shape == p.shape and got.dtype == torch.float32
    assert torch.allclose(got.double().view(K, -1), q, atol=1e-5)


def test_normalised_kernels_are_the_symmetric_normalisation():
    """normalize=True: k_ij / sqrt(d_i d_j), d_i = sum_j k_ij over all j (j = i
    included), each kernel on its own, messages over j != i."""
    image, p = tiny_problem(6)
    K, H, W = p.shape
    N = H * W
    config = dataclasses.replace(CONFIG, normalize=True)
    kernels = []
    for w, only in ((config.w1, "appearance"), (config.w2, "smoothness")):
        c = dataclasses.replace(config, w1=1.0 if only == "appearance" else 0.0,
                                w2=1.0 if only == "smoothness" else 0.0)
        k = torch.tensor([[naive_kernel(image, i, j, c) for j in range(N)]
                          for i in range(N)], dtype=torch.float64)
        d = k.sum(1)
        kernels.append(w * k / torch.sqrt(d[:, None] * d[None]))
    k = sum(kernels)
    k.fill_diagonal_(0)
    q = p.view(K, N).double()
    unary = -torch.log(q)
    expected = torch.softmax(-unary + q @ k.T, 0)
    got = dense_crf(image, p, config, iterations=1, method="exact")
    assert torch.allclose(got.double().view(K, N), expected, atol=1e-5)


def test_exact_messages_do_not_depend_on_chunks_or_the_cache():
    image, p = tiny_problem(1, K=4, H=9, W=11)
    cached = dense_crf(image, p, CONFIG, iterations=4, method="exact")
    chunked = dense_crf(image, p, CONFIG, iterations=4, method="exact", cache_bytes=0)
    assert torch.allclose(cached, chunked, atol=1e-6)


def coarse_prediction(target, stride=16, K=shapes.NUM_CLASSES):
    """What a stride-16 network might say: each block's class fractions,
    upsampled bilinearly and mixed with a little uniform doubt."""
    one_hot = torch.nn.functional.one_hot(target.clamp(max=K - 1), K)
    one_hot = one_hot.permute(2, 0, 1)[None].float()
    fractions = torch.nn.functional.avg_pool2d(one_hot, stride)
    p = torch.nn.functional.interpolate(fractions, size=target.shape,
                                        mode="bilinear", align_corners=False)[0]
    p = 0.8 * p + 0.2 / K
    return p / p.sum(0)


def shapes_problem(index=0, size=32):
    image, target = shapes.Shapes("val", 4, shapes.ShapesConfig(image_size=size))[index]
    return image, target, coarse_prediction(target, stride=8)


def test_lattice_filters_like_a_gaussian_up_to_its_scale():
    """On densely sampled features the permutohedral lattice's output is a
    constant fraction of the exact Gaussian sums (the authors' lattice is not
    normalised; the CRF's normalisation cancels the constant)."""
    axes = [torch.arange(0, 6, 0.05)] * 2
    f = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    values = torch.rand(len(f), 2, generator=torch.Generator().manual_seed(0))
    centre = ((f - 3).abs() < 1).all(1)
    exact = crf.gaussian_kernel(f[centre], f) @ values
    ratio = crf.PermutohedralLattice(f)(values)[centre] / exact
    assert ratio.std() < 0.02 * ratio.mean() and 0.7 < ratio.mean() < 1.1


def test_lattice_self_weight_is_a_points_own_response():
    f = torch.rand(40, 5, generator=torch.Generator().manual_seed(1)) * 1000
    lattice = crf.PermutohedralLattice(f)  # points far apart: no paths between
    own = lattice(torch.eye(40)).diagonal()
    assert torch.allclose(lattice.self_weight, own, atol=1e-6)


@pytest.mark.parametrize("index", range(2))
def test_lattice_approximation_is_close_to_the_exact_sums(index):
    image, _, p = shapes_problem(index, size=48)
    config = DenseCRFConfig(theta_alpha=8.0, theta_beta=0.1)
    exact = dense_crf(image, p, config, method="exact")
    lattice = dense_crf(image, p, config, method="lattice")
    assert (exact - lattice).abs().mean() < 0.01
    assert (exact.argmax(0) == lattice.argmax(0)).float().mean() > 0.99


@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("normalize", [False, True])
def test_mean_field_lowers_the_free_energy(index, normalize):
    image, _, p = shapes_problem(index, size=24)
    config = DenseCRFConfig(theta_alpha=8.0, theta_beta=0.1, method="exact",
                            normalize=normalize)
    K = p.shape[0]
    unary = crf.unary_from_probabilities(p).view(K, -1)
    messages = crf.message_function(image, config)
    q = torch.softmax(-unary, 0)
    energies = [free_energy(image, p, q, config)]
    for _ in range(5):
        q = torch.softmax(-unary + messages(q), 0)
        energies.append(free_energy(image, p, q, config))
    assert all(b <= a + 1e-6 for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < energies[0]


def test_free_energy_matches_its_definition():
    image, p = tiny_problem(2)
    K, H, W = p.shape
    q = torch.rand(K, H, W, generator=torch.Generator().manual_seed(3)).softmax(0)
    N = H * W
    qf, unary = q.view(K, N).double(), -torch.log(p).view(K, N).double()
    expected = float((qf * (unary + qf.log())).sum())
    for i in range(N):
        for j in range(N):
            if i != j:
                agree = float((qf[:, i] * qf[:, j]).sum())
                expected += 0.5 * naive_kernel(image, i, j, CONFIG) * (1 - agree)
    assert free_energy(image, p, q, CONFIG) == pytest.approx(expected, rel=1e-7)


def test_the_crf_sharpens_a_coarse_prediction():
    image, target, p = shapes_problem(1, size=48)
    refined = dense_crf(image, p, crf.SHAPES)
    valid = target != 255
    before = (p.argmax(0) == target)[valid].float().mean()
    after = (refined.argmax(0) == target)[valid].float().mean()
    assert after > before


def test_batches_are_refined_image_by_image():
    images, probabilities = zip(*(tiny_problem(s, H=5, W=6) for s in range(3)))
    batch = dense_crf(torch.stack(images), torch.stack(probabilities), CONFIG,
                      iterations=2)
    for b in range(3):
        one = dense_crf(images[b], probabilities[b], CONFIG, iterations=2)
        assert torch.allclose(batch[b], one, atol=1e-6)


def test_zero_iterations_return_the_input_and_weights_zero_change_nothing():
    image, p = tiny_problem(4)
    assert torch.allclose(dense_crf(image, p, iterations=0), p, atol=1e-6)
    assert torch.allclose(dense_crf(image, p, w1=0.0, w2=0.0), p, atol=1e-6)


def test_dense_crf_rejects_bad_input():
    image, p = tiny_problem(0)
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(image, p * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dense_crf(image * 255, p)
    with pytest.raises(ValueError, match="differ"):
        dense_crf(image[:, :2], p)
    with pytest.raises(ValueError, match=r"\[K, H, W\]"):
        dense_crf(image[None], p)
    with pytest.raises(TypeError, match="float"):
        dense_crf(image, p.argmax(0))
    with pytest.raises(ValueError, match="method"):
        dense_crf(image, p, method="grid")
    with pytest.raises(ValueError, match="theta_alpha"):
        DenseCRFConfig(theta_alpha=0)


# ------------------------------------------------- post-processing of a model


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given: one tensor per batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        return self.logits[: len(images)]


def test_refined_model_returns_the_log_of_the_crf_marginals():
    image, probabilities = tiny_problem(11, K=3, H=6, W=5)
    logits = torch.log(probabilities)[None].repeat(2, 1, 1, 1) * 1.7  # (2, 3, 6, 5)
    images = torch.stack([image, image.flip(-1)])
    config = dataclasses.replace(CONFIG, iterations=3)
    got = crf.Refined(FixedLogits(logits), config)(images)
    for b in range(2):
        q = dense_crf(images[b], logits[b].softmax(0), config)
        assert torch.allclose(got[b].exp(), q, atol=1e-6)


def test_command_line_reports_metrics_without_and_with_the_crf(tmp_path, capsys):
    from utils.train.cli import main

    out = tmp_path / "run"
    argv = ["--model", "tiny_fcn", "--data", "shapes", "--out", str(out), "--epochs",
            "1", "--train-size", "16", "--val-size", "4", "--image-size", "32",
            "--batch-size", "8", "--width", "0.25", "--no-progress", "--crf"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    plain = [line for line in lines if line.startswith("model  ")]
    refined = [line for line in lines if line.startswith("model + CRF ")]
    assert len(plain) == 1 and len(refined) == 1, lines
    # the plain line is the last epoch's validation mIoU (same model, same images)
    with open(out / "metrics.csv", newline="") as f:
        miou = float(list(csv.DictReader(f))[-1]["miou"])
    assert f"miou {miou:.4f}" in plain[0], (plain, miou)
    value = float(refined[0].split("miou ")[1].split(",")[0])
    assert 0 <= value <= 1


def test_command_line_refuses_the_crf_for_other_tasks(tmp_path, capsys, monkeypatch):
    from utils.models import MODELS
    from utils.train.cli import main

    fake = type("SomeInstanceModel", (), {"task": "instance"})
    monkeypatch.setitem(MODELS, "some_instance_model", fake)
    assert main(["--model", "some_instance_model", "--out", str(tmp_path / "x"),
                 "--crf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--crf refines semantic models" in err[0], err

import pytest
import torch

from utils import budgets, runtime


def test_profile_from_environment(monkeypatch):
    for name in runtime.PROFILES:
        monkeypatch.setenv("COURSE_PROFILE", name)
        assert runtime.profile() == name


def test_misspelled_profile_fails_loudly(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpuu")
    with pytest.raises(ValueError, match="'cpuu' is not a profile"):
        runtime.profile()


def test_unset_profile_follows_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE")
    assert runtime.profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_budget_lookup_and_overrides():
    b = budgets.budget("00_introduction", "ci", epochs=1)
    assert b.epochs == 1
    assert b.image_size == budgets.BUDGETS["00_introduction"]["ci"].image_size
    with pytest.raises(KeyError, match="known chapters"):
        budgets.budget("99_nothing", "ci")
    with pytest.raises(TypeError, match="unknown budget field"):
        budgets.budget("00_introduction", "ci", epoch=3)
    with pytest.raises(ValueError, match="not one of"):
        budgets.budget("00_introduction", "fast")


def test_every_budget_has_every_profile():
    for chapter, entry in budgets.BUDGETS.items():
        assert set(entry) == set(runtime.PROFILES), chapter


def test_device_choice(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert runtime.device("ci") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="is not a device"):
        runtime.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.device("gpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("COURSE_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.device("gpu")


def test_seeding_validates_and_repeats():
    with pytest.raises(TypeError):
        runtime.seed_everything(1.5)
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)
    runtime.seed_everything(7)
    a = torch.rand(3)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.rand(3))


def test_determinism_switch():
    with pytest.raises(TypeError):
        runtime.set_deterministic("yes")
    runtime.set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    runtime.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_setup_in_ci():
    rt = runtime.setup("00_introduction", seed=3)
    assert rt.profile == "ci" and rt.device.type == "cpu" and rt.deterministic
    assert not rt.progress and not rt.amp
    runtime.set_deterministic(False)


def test_describe_device_names_the_cpu_and_its_threads():
    text = runtime.describe_device(torch.device("cpu"))
    assert text.startswith("CPU (") and f"{torch.get_num_threads()} threads" in text

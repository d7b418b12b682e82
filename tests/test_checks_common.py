"""The check framework (utils/checks/common.py): short messages, tiered hints,
the reference refused however it is reached, the learner's line named; and the
rules every chapter's check module keeps (a forbid list, tiered hints that do
not hand out code), tested for every utils/checks/chNN.py present."""

import functools
import importlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from utils.checks import common
from utils.checks.common import (
    CheckFailed,
    assert_close,
    assert_equal,
    assert_same_model,
    exercise,
    fail,
    learner,
    ok,
)
from utils.course import notebooks


def reference_square(x):
    """Stands in for the course's canonical code."""
    return x * x


@torch.no_grad()
def reference_decorated(x):
    return x * x


@torch.no_grad()
def innocent_decorated(x):
    return x + 0


class Reference(nn.Module):
    def forward(self, x):
        return x * 2


HINTS = ["tier one: the idea", "tier two: closer", "tier three: closest"]


def make_check(forbid=(reference_square,), hints=HINTS):
    """A check in the style of the chapters' modules, fresh for each test (its
    own name, so its failures are counted apart)."""
    def check(fn):
        for x in (0.0, 1.5, -3.0):
            got = learner(fn, torch.tensor(x), what=f"square({x})")
            assert_close(got, reference_square(torch.tensor(x)), f"square({x})")
        ok("square squares")

    check.__name__ = check.__qualname__ = f"check_{next(_COUNTER)}"
    return exercise(forbid=forbid, hints=hints)(check)


_COUNTER = iter(range(10**6))


def message(check, fn) -> str:
    with pytest.raises(CheckFailed) as info:
        check(fn)
    return str(info.value)


def test_an_independent_correct_answer_passes(capsys):
    make_check()(lambda x: x ** 2)
    assert capsys.readouterr().out == "✓ square squares\n"


def test_check_failed_is_an_assertion_error_with_a_short_rendering():
    err = CheckFailed("square(1.5): 1 of 1 values differ\n  hint: think")
    assert isinstance(err, AssertionError)  # nbgrader counts it as a failure
    lines = err._render_traceback_()
    assert len(lines) == 2 and "Check failed" in lines[0]
    assert lines[0].endswith("square(1.5): 1 of 1 values differ")
    assert lines[1] == "  hint: think"


@pytest.mark.parametrize("answer", [
    pytest.param(reference_square, id="the reference itself"),
    pytest.param(lambda x: reference_square(x), id="a thin wrapper"),
    pytest.param(functools.partial(reference_square), id="functools.partial"),
    pytest.param(lambda x: (lambda f: f(x))(globals()["reference_square"]),
                 id="looked up by name"),
])
def test_the_reference_is_refused_however_it_is_reached(answer):
    text = message(make_check(), answer)
    assert "your code calls" in text and "reference_square" in text
    assert "course's own solution" in text


def test_a_learner_that_catches_the_refusal_is_still_refused():
    def sneaky(x):
        try:
            return reference_square(x)
        except BaseException:  # noqa: BLE001 - the point of the test
            return x * x
    assert "your code calls" in message(make_check(), sneaky)


def test_a_subclass_or_a_method_of_a_forbidden_class_is_refused():
    @exercise(forbid=[Reference], hints=["h1", "h2"])
    def check_double(cls):
        model = learner(cls, what="the model")
        got = learner(model, torch.ones(2), what="the model's output")
        assert_close(got, torch.full((2,), 2.0), "the model's output")

    class Mine(Reference):
        pass

    class Borrowing(nn.Module):
        forward = Reference.forward

    class Own(nn.Module):
        def forward(self, x):
            return x + x

    for cls in (Reference, Mine, Borrowing):
        assert "your code calls" in message(check_double, cls)
    check_double(Own)


def test_decorated_references_are_refused_by_their_own_code_only():
    check = make_check(forbid=(reference_decorated,))
    assert "reference_decorated" in message(check, reference_decorated)
    # torch.no_grad's wrapper is shared by every decorated function: another
    # decorated function is not the reference.
    make_check(forbid=(reference_decorated,))(
        lambda x: innocent_decorated(x) * x)


def test_a_forbidden_builtin_is_refused():
    @exercise(forbid=[sorted], hints=["h1", "h2"])
    def check_sort(fn):
        got = learner(fn, [3, 1, 2], what="my_sort([3, 1, 2])")
        if got != [1, 2, 3]:
            fail("my_sort([3, 1, 2])", [1, 2, 3], got)

    assert "sorted" in message(check_sort, sorted)
    assert "sorted" in message(check_sort, lambda xs: sorted(xs))
    check_sort(lambda xs: [min(xs), *[x for x in xs if min(xs) < x < max(xs)],
                           max(xs)])


def test_the_watch_is_removed_afterwards_and_cannot_be_switched_off():
    before = sys.getprofile()
    make_check()(lambda x: x * x)
    assert sys.getprofile() is before
    message(make_check(), reference_square)
    assert sys.getprofile() is before

    def switch_off(x):
        sys.setprofile(None)
        return x * x
    assert "switched off" in message(make_check(), switch_off)


def test_hints_come_one_tier_per_failure_then_stop():
    check = make_check()
    wrong = lambda x: x + x  # noqa: E731
    first, second, third, fourth = (message(check, wrong) for _ in range(4))
    assert "tier one" in first and "tier two" not in first
    assert "run the check again for a further hint" in first
    assert "tier one" in second and "tier two" in second and "tier three" not in second
    assert "tier three" in third and "further hint" not in third
    assert fourth == third


def test_a_diagnosis_replaces_the_tiers():
    @exercise(forbid=[reference_square], hints=["h1", "h2"])
    def check_diag(fn):
        got = learner(fn, torch.tensor(2.0), what="square(2)")
        if float(got) == 5.0:
            fail("square(2)", 4.0, float(got), hint="off by one")
        ok("fine")

    text = message(check_diag, lambda x: x * x + 1)
    assert "hint: off by one" in text and "h1" not in text


def test_not_done_yet_names_the_stub_and_spends_no_tier():
    def stub(x):
        # YOUR CODE HERE
        raise NotImplementedError()
    check = make_check()
    text = message(check, stub)
    assert "not done yet" in text and "cell above" in text
    assert "tier one" not in text
    assert message(check, stub) == text  # run again: still no tier spent
    # The first real attempt gets the first tier.
    assert "tier one" in message(check, lambda x: x + x)


@pytest.mark.parametrize("mistake, words", [
    (lambda: torch.zeros(1280).reshape(5, 5), ["1280 values", "[5, 5] needs 25",
                                                "extra"]),
    (lambda: torch.zeros(20).view(5, 5), ["20 values", "missing"]),
    (lambda: torch.zeros(10).view(3, -1), ["10 values", "do not divide"]),
    (lambda: torch.zeros(1, 4, 4, 6) + torch.zeros(1, 4, 3, 5),
     ["dimension 3", "6 and 5", "crop, pad or resize"]),
    (lambda: torch.bincount(torch.tensor([[1, 2]])), ["flat (1-D)"]),
    (lambda: torch.nn.functional.one_hot(torch.tensor([1, 255]), 4),
     ["ignore label 255"]),
    (lambda: np.zeros((256, 3))[np.array([300])], ["index past the end"]),
    (lambda: np.zeros(4)[np.array([1.0])], ["integers"]),
    (lambda: torch.zeros(2, 3) @ torch.zeros(4, 5), ["inner size"]),
    (lambda: nn.Conv2d(3, 4, 3)(torch.zeros(1, 8, 8, 3)), ["[B, C, H, W]"]),
    (lambda: nn.Linear(2, 2).weight.copy_(torch.ones(2, 2)), ["switched off"]),
    (lambda: torch.zeros(2, requires_grad=True).numpy(), ["stay in torch"]),
    (lambda: torch.zeros(2).sum().backward(), ["cut off from autograd"]),
    (lambda: torch.nn.functional.cross_entropy(torch.zeros(2, 3),
                                               torch.tensor([0.0, 1.0])),
     ["int64"]),
    (lambda: torch.tensor([1, 2]).mean(), ["floats first"]),
])
def test_common_tensor_mistakes_are_diagnosed(mistake, words):
    check = make_check()

    def answer(x):
        mistake()
        return x * x
    text = message(check, answer)
    assert "raised" in text and "hint: " in text, text
    assert all(w in text for w in words), text


def test_an_unknown_error_gets_the_tiers_and_a_check_s_diagnosis_wins():
    def odd(x):
        raise ValueError("something the course never saw")
    text = message(make_check(), odd)
    assert "something the course never saw" in text and "tier one" in text

    @exercise(forbid=[reference_square], hints=["h1", "h2"])
    def check_own(fn):
        learner(fn, torch.tensor(2.0), what="square(2)",
                diagnose=lambda err: "the check's own reading")

    text = message(check_own, lambda x: torch.zeros(6).view(4, 4))
    assert "the check's own reading" in text and "6 values" not in text


def test_the_sizes_in_the_two_commonest_messages_are_read():
    try:
        torch.zeros(1280).reshape(5, 5)
    except RuntimeError as err:
        assert common.reshape_sizes(err) == ([5, 5], 1280)
    try:
        torch.zeros(3, 4) + torch.zeros(3, 5)
    except RuntimeError as err:
        assert common.mismatched_sizes(err) == (4, 5, 1)
    assert common.reshape_sizes(ValueError("other")) is None
    assert common.mismatched_sizes(ValueError("other")) is None


def test_an_error_in_the_learners_code_names_its_line():
    def broken(x):
        y = x.reshape(7, 7)  # a mistake the check did not foresee
        return y
    text = message(make_check(), broken)
    assert text.startswith("square(0.0) raised RuntimeError")
    assert "in your code, line" in text and "y = x.reshape(7, 7)" in text
    assert "Traceback" not in text and "utils/checks" not in text


def test_a_result_that_breaks_the_comparison_still_fails_as_a_check():
    @exercise(forbid=[reference_square], hints=["h1", "h2"])
    def check_len(fn):
        got = learner(fn, 3, what="f(3)")
        assert len(got) == 3  # a check that trusts the result too much

    text = message(check_len, lambda x: 5)
    assert "could not check your answer" in text and "TypeError" in text


def test_exercise_needs_hints():
    with pytest.raises(ValueError, match="at least one hint"):
        exercise(forbid=[reference_square], hints=[])


@pytest.mark.parametrize("got, expected, words", [
    (None, torch.zeros(2), ["returned None", "return statement"]),
    (np.zeros(2), torch.zeros(2), ["wrong type", "torch.Tensor"]),
    (torch.zeros(6), torch.zeros(2, 3), ["wrong shape", "reshape"]),
    (torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.int64),
     ["wrong dtype", "torch.int64"]),
    (torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]),
     ["1 of 3 values differ", "index [2]"]),
])
def test_assert_equal_says_what_differs(got, expected, words):
    with pytest.raises(CheckFailed) as info:
        assert_equal(got, expected, "x")
    assert all(w in str(info.value) for w in words), str(info.value)


def test_assert_close_tolerates_rounding_and_nan():
    assert_close(torch.tensor([1.0, float("nan")]),
                 torch.tensor([1.0 + 1e-8, float("nan")]), "x")
    with pytest.raises(CheckFailed, match="max abs difference 0.1"):
        assert_close(torch.tensor([1.0, 2.1]), torch.tensor([1.0, 2.0]), "x")


class Scorer(nn.Module):
    """A model whose second layer starts at zero, as FCN's scoring layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        nn.init.zeros_(self.b.weight)
        nn.init.zeros_(self.b.bias)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class ScorerWithoutReLU(Scorer):
    def forward(self, x):
        return self.b(self.a(x))


def test_assert_same_model_pins_given_code_and_sees_past_zero_layers(capsys):
    assert_same_model(Scorer(), Scorer(), torch.randn(5, 3), what="Scorer")
    assert "✓ Scorer is the canonical model" in capsys.readouterr().out
    # With b at zero both would give zeros; the helper makes b random first.
    with pytest.raises(CheckFailed, match="differs from the canonical"):
        assert_same_model(ScorerWithoutReLU(), Scorer(), torch.randn(5, 3),
                          what="Scorer")
    with pytest.raises(CheckFailed, match="layers differ"):
        assert_same_model(nn.Linear(3, 2), Scorer(), torch.randn(5, 3),
                          what="Scorer")


# --- every chapter's check module keeps the rules --------------------------

CHECK_MODULES = sorted(p.stem for p in (ROOT / "utils" / "checks").glob("ch*.py"))
CODE_LIKE = notebooks.CODE_LIKE  # what hands out code in a hint


def checks_of(module_name):
    module = importlib.import_module(f"utils.checks.{module_name}")
    return [(name, getattr(module, name)) for name in dir(module)
            if name.startswith("check_") and callable(getattr(module, name))]


@pytest.mark.parametrize("module_name", CHECK_MODULES)
def test_every_check_refuses_its_reference_and_hints_in_tiers(module_name):
    found = checks_of(module_name)
    assert found, f"utils/checks/{module_name}.py defines no check_* function"
    for name, check in found:
        assert getattr(check, "forbid", ()), f"{module_name}.{name}: no forbid list " \
            "(use @exercise(forbid=[the canonical code], ...))"
        hints = getattr(check, "hints", ())
        assert len(hints) >= 2, f"{module_name}.{name}: give at least two hint tiers"
        for hint in hints:
            assert not CODE_LIKE.search(hint), f"{module_name}.{name}: the hint " \
                f"{hint!r} hands out code"


def test_the_code_detector_catches_the_hints_that_were_removed():
    # The hints chapters 00-03 had before issue 10.
    for removed in [
        "pad by 13 on every side with zeros, F.unfold(padded, 27), then reshape",
        "encoder, then classifier, then F.interpolate(scores, size=(H, W), "
        "mode='bilinear', align_corners=False)",
        "factor f = (k + 1) // 2, centre c = (k - 1) / 2",
        "`conv.weight.copy_(linear.weight.view(conv.weight.shape))`",
        "`t = 1 - (torch.arange(k) - c).abs() / f`",
    ]:
        assert CODE_LIKE.search(removed), removed
    for allowed in ["upsample bilinearly with align_corners=False",
                    "F.unfold cuts every window", "scaled (self.pool4_scale, "
                    "self.pool3_scale) before they are scored"]:
        assert not CODE_LIKE.search(allowed), allowed


def test_common_no_longer_has_the_transitional_call():
    assert not hasattr(common, "call")

"""What every chapter's checks share: one short message, tiered hints, the
learner's own code called safely, and the reference refused as an answer.

A chapter's check module (``utils.checks.chNN``) writes each check as::

    @exercise(forbid=[upsampling.bilinear_kernel],
              hints=["a nudge that names the idea",
                     "a more specific one, still not the code"])
    def check_bilinear_kernel(bilinear_kernel):
        for k in (1, 2, 3, 4, 7, 16):
            got = learner(bilinear_kernel, k, what=f"bilinear_kernel({k})")
            assert_close(got, upsampling.bilinear_kernel(k), f"bilinear_kernel({k})")
        ok("bilinear_kernel matches the reference for k = 1, ..., 16")

and gets, without writing it again:

- **one short message.** Every failure is a :class:`CheckFailed` (an
  ``AssertionError``, so nbgrader and ``utils.course grade`` count it as a
  failed check) whose text is what was expected, what came and a hint.
  Jupyter shows that text alone, no traceback through ``utils`` (IPython
  renders an exception that defines ``_render_traceback_`` as that method
  returns). An error *inside the learner's code* names its type, message and
  the line of the learner's cell it came from.
- **tiered hints.** The first failure shows the first hint; each further
  failure of the same check in the same kernel shows one hint more. A check may
  name a *diagnosis* instead (``fail(..., hint=...)`` or ``diagnose=``) when it
  recognises a particular mistake, which is more useful than any fixed hint.
- **common tensor mistakes diagnosed.** An error raised inside the learner's
  code that no ``diagnose=`` of the check explains is read by
  :func:`diagnose_error`: a reshape to the wrong number of values, two maps of
  different sizes combined, a label past the end of a table, a float index,
  ``one_hot`` given the ignore label, an in-place copy into a parameter, a
  result cut off from autograd, ... each gets a sentence saying what it means.
  :func:`reshape_sizes` and :func:`mismatched_sizes` read the numbers out of
  the two most common messages, for checks that can say more from them.
- **the reference refused.** While the learner's code runs (:func:`learner`),
  entering any function in ``forbid`` (the canonical copy the check compares
  with, or a builtin the exercise asks to write by hand) fails the check with
  "uses the reference": also through an alias, a subclass or a thin wrapper,
  since what is watched is the code being run, not a name.
- **not done yet.** ``NotImplementedError`` (the student notebook's stub)
  gives "not done yet" and what to do, but none of the tiered hints: the
  exercise's text has one already, and a tier is only spent on an attempt.

What a check may not do: test code the chapter gives. A chapter that gives a
model pins it to the canonical copy with :func:`assert_same_model` in a plain
cell (not a ``checks.`` call, so not graded): an unsolved notebook must score 0
(``tests/test_course.py`` grades every chapter's blank release).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import linecache
import re
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

_COURSE = Path(__file__).resolve().parents[1]  # the utils/ package
_FAILURES: Counter = Counter()  # failed runs of each check in this kernel


class CheckFailed(AssertionError):
    """A failed check: one short message, shown without a traceback."""

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback
        """The message, "Check failed" in red, wrapped at 80 columns (nbgrader's
        validate cuts longer lines)."""
        lines = []
        for k, line in enumerate(str(self).splitlines()):
            text = line.lstrip()
            hang = len(line) - len(text) + (6 if text.startswith("hint: ") else 2)
            wrapped = textwrap.wrap(("Check failed: " if k == 0 else "") + line, 80,
                                    subsequent_indent=" " * hang,
                                    break_long_words=False, break_on_hyphens=False)
            lines += wrapped or [""]
        lines[0] = lines[0].replace("Check failed", "\x1b[0;31mCheck failed\x1b[0m", 1)
        return lines


class _NotDone(CheckFailed):
    """The exercise still raises ``NotImplementedError``: no hint tier spent."""


class _UsesReference(BaseException):
    """Raised by the profile hook inside the learner's code; a BaseException so
    that a learner's ``except Exception`` does not swallow it."""


@dataclass
class _Exercise:
    name: str
    forbid: tuple  # functions, classes and builtins the learner may not call
    hints: tuple[str, ...]
    codes: set = field(default_factory=set)  # code objects of ``forbid``
    builtins: set = field(default_factory=set)  # C functions of ``forbid``
    key: str = ""  # module.name: what the failures of this check are counted by


_CURRENT: contextvars.ContextVar[_Exercise | None] = contextvars.ContextVar(
    "exercise", default=None)


def _collect(forbid) -> tuple[set, set]:
    """Code objects and builtin functions of the objects in ``forbid``.

    A decorated function (``@torch.no_grad()``, ``functools.wraps``) counts by
    the code it wraps: the decorator's wrapper is shared by every function it
    decorates, and forbidding it would refuse innocent calls.
    """
    codes, builtins = set(), set()
    for obj in forbid:
        if inspect.isclass(obj):
            for value in vars(obj).values():
                value = getattr(value, "__func__", value)  # static/class methods
                value = getattr(value, "fget", value)  # properties
                value = inspect.unwrap(value) if callable(value) else value
                if inspect.isfunction(value):
                    codes.add(value.__code__)
        elif inspect.isfunction(obj) or inspect.ismethod(obj):
            codes.add(inspect.unwrap(getattr(obj, "__func__", obj)).__code__)
        elif callable(obj):
            builtins.add(obj)
        else:
            raise TypeError(f"cannot forbid {obj!r}: not a function or a class")
    return codes, builtins


def exercise(*, forbid=(), hints=()):
    """Decorator for a check function: see the module docstring."""
    hints = tuple(hints)
    if not hints:
        raise ValueError("an exercise's check needs at least one hint")

    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            codes, builtins = _collect(forbid)
            ex = _Exercise(check.__name__, tuple(forbid), hints, codes, builtins,
                           f"{check.__module__}.{check.__qualname__}")
            token = _CURRENT.set(ex)
            try:
                return check(*args, **kwargs)
            except _NotDone as err:
                raise CheckFailed(str(err)) from None
            except CheckFailed as err:
                raise _with_hints(ex, str(err)) from None
            except AssertionError as err:
                raise _with_hints(ex, str(err) or f"{ex.name} failed") from None
            except Exception as err:  # the learner's result broke the comparison
                raise _with_hints(ex, f"{ex.name} could not check your answer: "
                                      f"{_one_line(err)}") from None
            finally:
                _CURRENT.reset(token)

        run.forbid = tuple(forbid)
        run.hints = hints
        return run

    return wrap


def _with_hints(ex: _Exercise, message: str) -> CheckFailed:
    """The failure with its hint: a diagnosis given by the check, else the hints
    of the tiers reached so far (one more per failed run of this check)."""
    _FAILURES[ex.key] += 1
    if "\n  hint: " in message:  # the check diagnosed the mistake itself
        return CheckFailed(message)
    shown = ex.hints[: _FAILURES[ex.key]]
    lines = [message] + [f"  hint: {h}" for h in shown]
    if len(shown) < len(ex.hints):
        lines.append("  (run the check again for a further hint)")
    return CheckFailed("\n".join(lines))


def ok(message: str) -> None:
    """The one line a passing check prints."""
    print(f"✓ {message}")


def fail(what: str, expected=None, got=None, hint: str | None = None):
    """Fail the check: ``what`` went wrong, with expected and got if given, and
    ``hint`` as a diagnosis of this particular mistake (else the tiered hints)."""
    lines = [what]
    if expected is not None or got is not None:
        lines += [f"  expected: {_short(expected)}", f"  got:      {_short(got)}"]
    if hint:
        lines.append(f"  hint: {hint}")
    raise CheckFailed("\n".join(lines))


def learner(fn, *args, what: str, diagnose=None, **kwargs):
    """Call the learner's ``fn(*args, **kwargs)`` and return its result.

    - ``NotImplementedError``: "not done yet";
    - entering a function the enclosing :func:`exercise` forbids: "uses the
      reference" (also when the learner's code catches what the watch raises);
      switching the watch off (``sys.setprofile``) fails too;
    - any other exception: its type and message and the line of the learner's
      code it came from, with ``diagnose(err)``'s hint for it if that returns
      one, else :func:`diagnose_error`'s.
    """
    ex = _CURRENT.get()
    watch = _Watch(ex) if ex is not None and (ex.codes or ex.builtins) else None
    try:
        return _run_watched(watch, fn, args, kwargs)
    except _UsesReference as err:
        fail(f"{what}: your code calls {err.args[0]}, the course's own solution "
             "that this check compares with; write it yourself",
             hint="build it from torch, NumPy and the code the chapter gives")
    except _WatchOff:
        fail(f"{what}: your code switched off the check's watch (sys.setprofile)",
             hint="leave sys.setprofile alone while the check runs")
    except NotImplementedError:
        raise _NotDone(f"{what}: the exercise is not done yet (it still raises "
                       "NotImplementedError)\n  hint: write it in the cell above, run "
                       "that cell, then this one; the exercise's text has a hint, "
                       "and each failed attempt here shows one more") from None
    except CheckFailed:
        raise
    except Exception as err:
        hint = diagnose(err) if diagnose is not None else None
        fail(f"{what} raised {_one_line(err)}{_where(err)}",
             hint=hint or diagnose_error(err))


def reshape_sizes(err: BaseException) -> tuple[list[int], int] | None:
    """``(shape, size)`` of torch's "shape '[5, 5]' is invalid for input of
    size 1280" (a reshape or view to a shape that the values cannot fill),
    else None."""
    found = re.search(r"shape '\[([-\d, ]*)\]' is invalid for input of size (\d+)",
                      str(err))
    if found is None:
        return None
    shape = [int(v) for v in found.group(1).split(",") if v.strip()]
    return shape, int(found.group(2))


def mismatched_sizes(err: BaseException) -> tuple[int, int, int] | None:
    """``(size a, size b, dimension)`` of torch's "The size of tensor a (4)
    must match the size of tensor b (3) at non-singleton dimension 2" (two
    tensors combined elementwise that do not broadcast), else None."""
    found = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b "
                      r"\((\d+)\) at non-singleton dimension (\d+)", str(err))
    return tuple(int(v) for v in found.groups()) if found else None


def _reshape_hint(err) -> str | None:
    shape, size = reshape_sizes(err)
    known = [v for v in shape if v != -1]
    wanted = int(np.prod(known)) if known else 1
    if -1 in shape:
        return (f"the tensor holds {size} values, which the sizes {known} do not "
                "divide: count what it should hold, and where the extra or "
                "missing values come from")
    return (f"the tensor holds {size} values but the shape {shape} needs "
            f"{wanted}: count what it should hold, and where the "
            f"{'extra' if size > wanted else 'missing'} values come from")


def _size_hint(err) -> str | None:
    a, b, dim = mismatched_sizes(err)
    return (f"two tensors combined elementwise differ in size along dimension "
            f"{dim} ({a} and {b}): bring them to one size first (crop, pad or "
            "resize), or check that they are the ones you meant")


# What torch, NumPy and Python say -> what it usually means in this course.
# Each entry: (pattern of the message, hint or function of the error).
_DIAGNOSES = [
    (r"shape '\[[-\d, ]*\]' is invalid for input of size", _reshape_hint),
    (r"size of tensor a \(\d+\) must match the size of tensor b", _size_hint),
    (r"Sizes of tensors must match except in dimension",
     "the tensors you concatenate or stack differ in a size other than the one "
     "they are joined along"),
    (r"bincount only supports 1-d non-negative",
     "bincount counts a flat (1-D) tensor of non-negative integers: flatten "
     "first, and leave out negative values"),
    (r"\bbincount\S* not implemented for '(Float|Double|Half)'",
     "bincount counts integers: the values are floats"),
    (r"Class values must be smaller than num_classes",
     "one_hot got a label >= the number of classes: the ignore label 255? Give "
     "the ignored pixels a valid label first and mask them out afterwards"),
    (r"one_hot is only applicable to index tensor",
     "one_hot takes int64 labels"),
    (r"index -?\d+ is out of bounds for (axis|dimension) \d+ with size (\d+)",
     "an index past the end: a table with N rows takes indices 0..N-1; is the "
     "table long enough for every value (255 included)?"),
    (r"(arrays|tensors) used as indices must be",
     "indices must be integers (or booleans for a mask), not floats"),
    (r"mat1 and mat2 shapes cannot be multiplied",
     "a matrix product (or a Linear layer) got a matrix whose inner size does "
     "not match: check what is flattened and in which order"),
    (r"expected input\[.*\] to have \d+ channels, but got \d+ channels",
     "a convolution got another number of channels than its weight expects: is "
     "the channel dimension where torch wants it, [B, C, H, W]?"),
    (r"a leaf Variable that requires grad is being used in an in-place",
     "copying into a parameter in place must not be recorded for autograd: do "
     "it with gradient tracking switched off"),
    (r"Can't call numpy\(\) on Tensor that requires grad",
     "a tensor that autograd tracks cannot become a NumPy array; stay in torch "
     "(or detach it where no gradient is needed)"),
    (r"does not require grad and does not have a grad_fn",
     "the result is cut off from autograd: something was detached, converted "
     "to a number or computed under no_grad"),
    (r"expected (target dtype|scalar type) (to be )?Long",
     "labels and indices are int64 here, not floats"),
    (r"only supports boolean masks",
     "a mask must be a bool tensor (a comparison gives one)"),
    (r"(nan)?mean\(\): (could not infer output dtype|expected input to have "
     r"floating point)",
     "a mean of integer counts needs floats first"),
]


def diagnose_error(err: BaseException) -> str | None:
    """A sentence on what an error raised in the learner's code usually means
    (the messages of :data:`_DIAGNOSES`), or None when it is none of those."""
    text = str(err)
    for pattern, hint in _DIAGNOSES:
        if re.search(pattern, text):
            return hint(err) if callable(hint) else hint
    return None


class _WatchOff(BaseException):
    """The learner's code replaced the profile hook while it ran."""


def _run_watched(watch, fn, args, kwargs):
    """``fn(*args, **kwargs)`` under ``watch`` (a profile hook), if any."""
    if watch is None:
        return fn(*args, **kwargs)
    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        result = fn(*args, **kwargs)
    finally:
        switched_off = sys.getprofile() is not watch
        sys.setprofile(previous)
        if watch.entered:  # wins over whatever the learner's code did with it
            raise _UsesReference(watch.entered)
    if switched_off:
        raise _WatchOff()
    return result


class _Watch:
    """The profile hook that watches the learner's code for the reference. It
    remembers what it saw, because the learner's code may catch the exception
    it raises (and CPython then switches the hook off)."""

    def __init__(self, ex: _Exercise):
        self.codes, self.builtins, self.entered = ex.codes, ex.builtins, ""

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code in self.codes:
            self.entered = self.entered or _qualname(frame.f_code)
            raise _UsesReference(self.entered)
        if event == "c_call" and _is_in(arg, self.builtins):
            self.entered = self.entered or getattr(arg, "__qualname__", repr(arg))
            raise _UsesReference(self.entered)


def _is_in(obj, objects: set) -> bool:
    try:
        return obj in objects
    except TypeError:  # an unhashable callable is none of ours
        return False


def _qualname(code) -> str:
    module = _module_of(code.co_filename)
    name = getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+
    return f"{module}.{name}" if module else name


def _module_of(filename: str) -> str:
    try:
        rel = Path(filename).resolve().relative_to(_COURSE.parent)
    except ValueError:
        return ""
    return ".".join(rel.with_suffix("").parts)


def _where(err: BaseException) -> str:
    """", in your code, line N: <source>" for the innermost frame of the
    traceback that is the learner's (not the course's, not a library's)."""
    tb, found = err.__traceback__, None
    library = (str(_COURSE), sys.prefix, sys.base_prefix)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(library) and not filename.startswith("<frozen"):
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    line = linecache.getline(found.tb_frame.f_code.co_filename,
                             found.tb_lineno).strip()
    return f"\n  in your code, line {found.tb_lineno}: {line}" if line else ""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    if len(message) > 200:
        message = message[:200] + " ..."
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _short(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:160] + " ..."


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_array(got, expected, what: str, hint: str | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays, failing with a diagnosis for the common mistakes (the
    caller's ``hint``, when it has one, wins)."""
    if got is None:
        fail(f"{what}: your code returned None", "a tensor" if isinstance(
            expected, torch.Tensor) else "an array", None,
            hint=hint or "did you forget the return statement?")
    want_tensor = isinstance(expected, torch.Tensor)
    if want_tensor and not isinstance(got, torch.Tensor):
        fail(f"{what}: wrong type", "a torch.Tensor", type(got).__name__,
             hint=hint or "build the result with torch operations (torch.as_tensor "
                          "converts an array)")
    try:
        g = to_numpy(got)
    except (TypeError, ValueError, RuntimeError):
        fail(f"{what}: wrong type", type(expected).__name__, type(got).__name__,
             hint=hint)
    e = to_numpy(expected)
    if g.shape != e.shape:
        if hint is None and g.size == e.size:
            hint = "the right number of values in the wrong shape: check the " \
                   "order of your reshape/permute"
        elif hint is None and (g.shape == e.shape[1:] or g.shape[1:] == e.shape):
            hint = "a batch dimension is missing or extra"
        fail(f"{what}: wrong shape", list(e.shape), list(g.shape), hint=hint)
    return g, e


def assert_equal(got, expected, what: str, hint: str | None = None) -> None:
    """Exact equality of arrays or tensors, shape and dtype kind included
    (for tensors the exact dtype: ``int64`` labels are not ``uint8`` ones)."""
    g, e = _as_array(got, expected, what, hint)
    if isinstance(expected, torch.Tensor) and got.dtype != expected.dtype:
        fail(f"{what}: wrong dtype", expected.dtype, got.dtype, hint)
    if g.dtype.kind != e.dtype.kind and not (
        g.dtype.kind in "iu" and e.dtype.kind in "iu"
    ):
        fail(f"{what}: wrong dtype", e.dtype, g.dtype, hint)
    if not np.array_equal(g, e):
        where = np.argwhere(g != e)[0].tolist()
        count = int((g != e).sum())
        fail(f"{what}: {count} of {e.size} values differ (first at index {where})",
             e[tuple(where)], g[tuple(where)], hint)


def assert_close(got, expected, what: str, hint: str | None = None, atol=1e-6,
                 rtol=1e-5) -> None:
    """Closeness of arrays or tensors (NaN equals NaN)."""
    g, e = _as_array(got, expected, what, hint)
    g, e = g.astype(np.float64), e.astype(np.float64)
    close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        where = np.argwhere(~close)[0].tolist()
        fail(
            f"{what}: {int((~close).sum())} of {e.size} values differ (first at "
            f"index {where}, max abs difference {np.nanmax(np.abs(g - e)):.3g})",
            e[tuple(where)],
            g[tuple(where)],
            hint,
        )


def assert_same_model(mine: torch.nn.Module, canonical: torch.nn.Module, *inputs,
                      what: str, method: str = "forward", atol: float = 1e-5,
                      rtol: float = 1e-5) -> None:
    """For code a chapter GIVES (not an exercise, so not a graded check): the
    chapter's ``mine`` takes ``canonical``'s weights and gives its outputs
    (``method`` of each, on every one of ``inputs``).

    Parameters that are all zero in ``canonical`` (FCN's zero-initialised
    scoring layers, say) get random values first, so that no branch of the
    network hides behind a zero. Raises ``AssertionError`` with a short message.
    """
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in canonical.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    try:
        mine.load_state_dict(canonical.state_dict())
    except RuntimeError as err:
        raise CheckFailed(f"{what}: its layers differ from the canonical model's "
                          f"({_one_line(err)})") from None
    mine.eval()
    canonical.eval()
    with torch.no_grad():
        for x in inputs:
            got = getattr(mine, method)(x)
            expected = getattr(canonical, method)(x)
            close = got.shape == expected.shape and torch.allclose(
                got, expected, atol=atol, rtol=rtol)
            if not close:
                raise CheckFailed(f"{what}: its output on an input of shape "
                                  f"{list(x.shape)} differs from the canonical "
                                  "model's") from None
    print(f"✓ {what} is the canonical model: same weights in, same outputs out")

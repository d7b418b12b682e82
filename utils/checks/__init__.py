"""Check functions called under the exercises, one module per chapter
(``from utils.checks import ch00 as checks``). Each compares the learner's code
with the reference in ``utils`` on fixed inputs, prints one "✓ ..." line on
success and raises ``AssertionError`` with what was expected and a hint."""

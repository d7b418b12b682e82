"""Check functions called under the exercises, one module per chapter
(``from utils.checks import ch00 as checks`` in the chapter's setup cell).

Each check tests what the learner wrote against the course's own code on fixed
inputs, refuses that code as an answer, prints one "✓ ..." line on success and
fails with one short message and tiered hints; the framework is
:mod:`utils.checks.common`.
"""

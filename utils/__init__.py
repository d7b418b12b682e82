"""Shared code for Segmentation from Scratch: what the chapters use but do not teach.

Rooms (see ``shared/COURSE_DESIGN.md`` §6): ``runtime`` (profiles, budgets,
device, seeding), ``data``, ``models``, ``metrics``, ``losses``, ``train``,
``plot``, ``checks`` and ``course``.
"""

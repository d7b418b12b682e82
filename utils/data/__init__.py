"""Datasets, joint transforms and palettes.

Shapes (chapter 00) is built in. The readers of the real datasets that
``data_scripts/`` prepares are :mod:`utils.data.voc`, :mod:`utils.data.pets`,
:mod:`utils.data.camvid`, :mod:`utils.data.cityscapes` and
:mod:`utils.data.coco`; :data:`utils.data.registry.DATASETS` names them all for
``python -m utils.train --data NAME``.
"""

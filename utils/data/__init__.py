"""Datasets, joint transforms and palettes.

Shapes (chapter 00) is built in. The readers of the real datasets that
``data_scripts/`` prepares are :mod:`utils.data.voc`, :mod:`utils.data.pets`,
:mod:`utils.data.camvid`, :mod:`utils.data.cityscapes` and
:mod:`utils.data.coco`; :data:`utils.data.registry.DATASETS` names them all for
``python -m utils.train --data NAME``.
"""

# The data contract's "no label here" value, in semantic targets and as the
# category of void pixels in panoptic ones (VOC's convention).
IGNORE_INDEX = 255

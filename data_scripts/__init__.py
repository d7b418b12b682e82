"""Download, verify, extract and convert real datasets and weights.

Every script is ``python -m data_scripts.NAME --root DIR [--mirror URL]``. They
share one downloader (:mod:`data_scripts.download`), one safe extractor
(:mod:`data_scripts.extract`) and one table of URLs and checksums
(:mod:`data_scripts.sources`). The readers of the prepared copies live in
:mod:`utils.data`.
"""

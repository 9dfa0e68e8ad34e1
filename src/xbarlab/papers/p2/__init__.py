"""P2 beyond classification: detection and segmentation on multi-object Fashion-MNIST canvases (docs/p2_tasks.md).

* :mod:`xbarlab.papers.p2.canvas` -- deterministic canvas generator with exact boxes, classes and masks;
* :mod:`xbarlab.papers.p2.detection` -- a tiny CenterNet-style detector with BN, decoding, NMS and VOC mAP@0.5;
* :mod:`xbarlab.papers.p2.segmentation` -- a tiny encoder-decoder with BN and mIoU (background included);
* :mod:`xbarlab.papers.p2.train_tasks` -- resumable training of both, safetensors + JSON checkpoints;
* :mod:`xbarlab.papers.p2.noise` -- P2's Gaussian weight-noise model σ = η·max|W| expressed on crossbars;
* :mod:`xbarlab.papers.p2.trial` -- the ``p2_task`` sweep trial kind (one chip of a task model → mAP / mIoU);
* :mod:`xbarlab.papers.p2.experiments` -- ``xbarlab p2 evaluate`` / ``drift`` as sweeps into one results store;
* ``sweeps/`` -- the shipped P2 sweep files (classification, segmentation, detection, drift).
"""

from __future__ import annotations

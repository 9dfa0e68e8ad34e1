"""Detection and segmentation tasks on multi-object Fashion-MNIST canvases (P2 beyond classification).

* :mod:`xbarlab.tasks.canvas` -- deterministic canvas generator with exact boxes, classes and masks;
* :mod:`xbarlab.tasks.detection` -- a tiny CenterNet-style detector with BN, decoding, NMS and VOC mAP@0.5;
* :mod:`xbarlab.tasks.segmentation` -- a tiny encoder-decoder with BN and mIoU (background included);
* :mod:`xbarlab.tasks.train_tasks` -- resumable training of both, safetensors + JSON checkpoints;
* :mod:`xbarlab.tasks.p2_eval` -- clean / noisy / BN-adapted (offline, online) evaluation over chips.
"""

from __future__ import annotations

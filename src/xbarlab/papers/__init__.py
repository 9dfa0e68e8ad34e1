"""Paper code on top of the simulator core: what only one paper needs.

* :mod:`xbarlab.papers.p2` -- P2 (noise-aware normalisation) beyond classification: detection and segmentation
  on Fashion-MNIST canvases, their training, and the noise / drift experiments over chips;
* :mod:`xbarlab.papers.p3` -- P3 (CorrectNet / CorrectNet+): the pipeline plain → Lipschitz → compensation
  (RL / greedy placement) → quantisation search, and its table and figures.

P1 needs no code of its own: its experiments are sweep files (``xbarlab/papers/p1/sweeps/p1-*.yaml``) run by
the generic sweep engine; each paper's sweep files sit in its ``sweeps/`` folder (P2, P3 as well). Modules here
import the core; no core module imports them (``tests/test_import_graph.py``).
"""

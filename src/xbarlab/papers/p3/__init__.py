"""P3 (CorrectNet / CorrectNet+): plain → Lipschitz → + compensation (RL placement) → + quantisation search.

One module per concept (the pipeline itself is described in :mod:`xbarlab.papers.p3.pipeline`):

* :mod:`~xbarlab.papers.p3.config` -- :class:`P3Config` (every setting of a run), the P3 hardware, the stages;
* :mod:`~xbarlab.papers.p3.data` -- the model loader, the data loaders of a run, Monte-Carlo accuracy;
* :mod:`~xbarlab.papers.p3.cache` -- stage records and keys, what a rerun reuses or recomputes;
* :mod:`~xbarlab.papers.p3.stages` -- the stage computations (models, sweep, placement, quant, perchip);
* :mod:`~xbarlab.papers.p3.report` -- ``results.md`` and the figures;
* :mod:`~xbarlab.papers.p3.pipeline` -- :func:`prepare_p3` (every check, nothing written) and :func:`run_p3`;
* :mod:`~xbarlab.papers.p3.placement` -- where to put compensation branches (RL, greedy, all, none, random);
* :mod:`~xbarlab.papers.p3.quant_search` -- bits per cell and per-layer ADC bits against ADC energy.

The command line is ``xbarlab correctnet run`` (:mod:`xbarlab.cli.correctnet`); docs/correctnet.md.
"""

from __future__ import annotations

from xbarlab.papers.p3.cache import STAGE_FORMAT, P3Plan
from xbarlab.papers.p3.config import P3_HARDWARE, STAGES, P3Config, config_path, list_configs, p3_hardware
from xbarlab.papers.p3.data import load_model
from xbarlab.papers.p3.pipeline import prepare_p3, run_p3
from xbarlab.papers.p3.report import write_figures, write_table

__all__ = [
    "P3_HARDWARE",
    "STAGES",
    "STAGE_FORMAT",
    "P3Config",
    "P3Plan",
    "config_path",
    "list_configs",
    "load_model",
    "p3_hardware",
    "prepare_p3",
    "run_p3",
    "write_figures",
    "write_table",
]

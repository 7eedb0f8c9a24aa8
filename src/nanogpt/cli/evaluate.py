"""The ``nanogpt-eval`` console script: Hydra's command line (``configs/eval.yaml``) over
:func:`nanogpt.evaluate.evaluate`.

An override of a key it does not read (``model.block_size=4096``, ``data.batch_size=8``) is refused,
not ignored: :data:`EVAL_KEYS` are the ones it reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from nanogpt import CONFIG_DIR
from nanogpt.cli.errors import user_errors_in_one_line
from nanogpt.data import CorpusConfig
from nanogpt.evaluate import evaluate
from nanogpt.metrics.bleu import BleuSettings

# The keys nanogpt-eval reads, and the config groups it composes (data=shakespeare_gpt2 picks one).
# eval.yaml holds more, which it never reads: the data group's training options (its batch_size,
# eval_batches, ...), and model.block_size and seed, there only because the data group refers to them.
EVAL_GROUPS = ("data", "bleu", "paths")
EVAL_KEYS = (
    *("ckpt_path", "batch_size", "device"),
    *(f"data.{f.name}" for f in dataclasses.fields(CorpusConfig)),
    *(f"bleu.{f.name}" for f in dataclasses.fields(BleuSettings)),
    *("paths.root_dir", "paths.data_dir"),  # data.data_dir is under them
)
# why a key a user may reach for is not one of them
NOT_READ = {
    "model.block_size": "the windows are the checkpoint's own context",
    "data.block_size": "the windows are the checkpoint's own context",
    "data.batch_size": "windows per forward pass are batch_size",
    "data.eval_batches": "nanogpt-eval scores the whole val split",
    "data.final_eval_batches": "nanogpt-eval scores the whole val split",
    "seed": "nanogpt-eval draws nothing at random; BLEU sampling uses bleu.seed",
}


def refuse_unread_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override of a key nanogpt-eval does not read, which would change nothing, silently."""
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in EVAL_KEYS or key in EVAL_GROUPS or key.startswith(("hydra.", "hydra/")):
            continue
        why = f" ({NOT_READ[key]})" if key in NOT_READ else ""
        raise ValueError(
            f"{override.input_line}: nanogpt-eval does not read {key}{why}; drop it. The keys it reads: "
            + ", ".join(EVAL_KEYS)
        )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    with user_errors_in_one_line():
        refuse_unread_overrides(HydraConfig.get().overrides.task)
        evaluate(cfg)


if __name__ == "__main__":
    main()

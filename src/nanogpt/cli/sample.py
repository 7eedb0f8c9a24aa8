"""The ``nanogpt-sample`` console script: Hydra's command line (``configs/sample.yaml``) over
:func:`nanogpt.sample.sample`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nanogpt import CONFIG_DIR
from nanogpt.cli.errors import user_errors_in_one_line
from nanogpt.sample import sample


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    with user_errors_in_one_line():
        sample(cfg)


if __name__ == "__main__":
    main()

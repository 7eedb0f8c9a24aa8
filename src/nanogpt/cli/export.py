"""The ``nanogpt-export`` console script: Hydra's command line (``configs/export.yaml``) over
:func:`nanogpt.hf.export.export`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nanogpt import CONFIG_DIR
from nanogpt.cli.errors import user_errors_in_one_line
from nanogpt.hf.export import export


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors_in_one_line():
        out_dir = export(cfg)
        files = ", ".join(sorted(p.name for p in out_dir.iterdir()))
        print(f"wrote {out_dir}: {files}")


if __name__ == "__main__":
    main()

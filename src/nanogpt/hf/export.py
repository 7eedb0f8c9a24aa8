"""``nanogpt-export``: write a trained checkpoint as a Hugging Face GPT-2 or Llama folder.

A model with GPT-2's components (learned positions, LayerNorm, GELU: :mod:`nanogpt.hf.gpt2`) is
written as ``GPT2LMHeadModel``, one with rotary positions, RMSNorm and SwiGLU as ``LlamaForCausalLM``
(:mod:`nanogpt.hf.llama`); any other is refused, naming the options that neither format holds.
The folder is what ``save_pretrained`` writes (``config.json``, ``model.safetensors``), so
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads it. A GPT-2 BPE model also gets
its tokenizer files (``vocab.json``, ``merges.txt``) for ``AutoTokenizer``; any other tokenizer is
described in ``nanogpt_tokenizer.json`` and the folder's ``README.md`` says how to use it.

The folder is built under a temporary name beside ``out_dir`` and renamed into place when complete,
so a failed export leaves no half-written folder. An existing one is replaced only with
``overwrite=true``, and only when it holds nothing but an earlier export's files: a run folder, a
checkpoint, or any other file is never deleted.

``export(cfg)`` is the whole job; the console script is :mod:`nanogpt.cli.export`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import secrets
import shutil
import socket
from pathlib import Path

from omegaconf import DictConfig

from nanogpt.data import Tokenizer
from nanogpt.hf.fields import GPT2, LLAMA, misfits, required
from nanogpt.hf.gpt2 import as_overrides, hf_model_from_gpt, hydra_value, write_gpt2_tokenizer
from nanogpt.hf.llama import hf_llama_from_gpt
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.runs.folder import CHECKPOINTS, CONFIG_FILE, RESULT_FILE

# hf_format's answer -> the format's name and the function that builds it as a transformers model
FORMATS = {GPT2: ("GPT-2", hf_model_from_gpt), LLAMA: ("Llama", hf_llama_from_gpt)}
TOKENIZER_FILE = "nanogpt_tokenizer.json"  # our tokenizer's meta(), for tokenizers HF has no files for
README = "README.md"


# What an export writes: save_pretrained's model and generation config (a big model's weights in
# shards, with their index), a GPT-2 tokenizer's files, or ours, and the README. overwrite=true
# replaces a folder holding nothing else, so it never deletes a file that an export did not write.
EXPORT_FILES = (
    *("config.json", "generation_config.json", "model.safetensors"),
    *("model-*-of-*.safetensors", "model.safetensors.index.json"),
    *("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
    *(TOKENIZER_FILE, README),
)
NEW_FOLDER_FIX = "pass a new out_dir, e.g. out_dir=exports/<name>"


def is_export_file(path: Path) -> bool:
    return path.is_file() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in EXPORT_FILES)


def is_run_folder(folder: Path) -> bool:
    return (folder / RESULT_FILE).is_file() or (
        (folder / CONFIG_FILE).is_file() and (folder / CHECKPOINTS).is_dir()
    )


def run_files_in(folder: Path) -> Path | None:
    """A run's ``result.json`` or a checkpoint in ``folder`` or at most two levels below it (where
    ``runs/`` holds its runs, ``runs/<name>/<time>``), or None."""
    for depth in range(3):
        for pattern in (RESULT_FILE, "*.ckpt"):
            found = next(folder.glob("*/" * depth + pattern), None)
            if found is not None:
                return found
    return None


def refuse_existing(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` the export must not write: a file, a run folder, a folder holding runs or
    checkpoints, or one inside a run's checkpoints; and one that holds files unless ``overwrite``, and
    then only if they are all an earlier export's (:data:`EXPORT_FILES`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir={out_dir} is a file; {NEW_FOLDER_FIX}")
    real = out_dir.resolve()
    for parent in real.parents:
        if parent.name == CHECKPOINTS and (is_run_folder(parent.parent) or run_files_in(parent)):
            raise FileExistsError(
                f"out_dir={out_dir} is inside {parent}, a run's checkpoints; {NEW_FOLDER_FIX}"
            )
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if is_run_folder(real):
        raise FileExistsError(
            f"out_dir={out_dir} is a run folder, which an export must not replace; {NEW_FOLDER_FIX}"
        )
    found = run_files_in(real)
    if found is not None:
        what = "a run's record" if found.name == RESULT_FILE else "a checkpoint"
        raise FileExistsError(
            f"out_dir={out_dir} holds {what} ({found.relative_to(real)}), which an export must not "
            f"replace; {NEW_FOLDER_FIX}"
        )
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out_dir.iterdir() if not is_export_file(p))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"out_dir={out_dir} holds files that no export wrote ({shown}); {NEW_FOLDER_FIX} "
            "(overwrite=true replaces only an earlier export)"
        )
    if not overwrite:
        raise FileExistsError(
            f"out_dir={out_dir} already holds an export; {NEW_FOLDER_FIX}, or overwrite=true to replace it"
        )


def hf_format(config: GPTConfig, source: str) -> str:
    """The Hugging Face format that holds ``config``'s model, a key of :data:`FORMATS`; an error naming
    each option that keeps it out of both (each format's :func:`~nanogpt.hf.fields.required` values)."""
    fields = dataclasses.asdict(config)
    gpt2 = misfits(GPT2, fields)
    if not gpt2:
        return GPT2
    llama = misfits(LLAMA, fields)
    if not llama:
        return LLAMA

    def misfit(fields: dict, has: dict, name: str) -> str:
        asked = as_overrides(fields)
        return f"{name}'s for {asked} ({name} has {', '.join(f'{k}={hydra_value(has[k])}' for k in fields)})"

    raise ValueError(
        f"ckpt_path={source}: nanogpt-export writes Hugging Face's GPT-2 or Llama format, and neither has "
        f"a place for this model: {misfit(gpt2, required(GPT2), FORMATS[GPT2][0])}, "
        f"{misfit(llama, required(LLAMA), FORMATS[LLAMA][0])}; train with the components of one of them"
    )


def readme(ckpt_path: str, meta: dict, fmt: str) -> str:
    """The exported folder's README.md: where it came from and how to read its tokens."""
    lines = [
        f"# A nanogpt model in Hugging Face {FORMATS[fmt][0]} format",
        "",
        f"Exported by `nanogpt-export` from `{ckpt_path}`. Load it with",
        "`transformers.AutoModelForCausalLM.from_pretrained(<this folder>)`.",
        "",
    ]
    if meta["kind"] == "gpt2":
        lines += ["Its tokenizer is GPT-2's BPE: `AutoTokenizer.from_pretrained(<this folder>)` loads it."]
    elif meta["kind"] == "char":
        lines += [
            "Its tokenizer is **not** GPT-2's BPE, and `AutoTokenizer` cannot load it: it is nanogpt's own",
            f"character vocabulary, one token per character, in `{TOKENIZER_FILE}` (token `i` is",
            "`vocab[i]`). Encode and decode with it like this:",
            "",
            "```python",
            "import json",
            "",
            "import torch",
            "from transformers import AutoModelForCausalLM",
            "",
            'folder = "<this folder>"',
            "model = AutoModelForCausalLM.from_pretrained(folder)",
            f'vocab = json.load(open(f"{{folder}}/{TOKENIZER_FILE}"))["vocab"]',
            "stoi = {ch: i for i, ch in enumerate(vocab)}",
            'ids = torch.tensor([[stoi[ch] for ch in "ROMEO:"]])  # every character must be in vocab',
            "out = model.generate(ids, max_new_tokens=200, do_sample=True, top_k=50)",
            'print("".join(vocab[i] for i in out[0].tolist()))',
            "```",
        ]
    else:
        lines += [
            f"Its tokenizer is described in `{TOKENIZER_FILE}` (`{json.dumps(meta)}`);",
            "`AutoTokenizer` cannot load it. For a tiktoken encoding:",
            "`tiktoken.get_encoding(name).encode_ordinary(text)`.",
        ]
    return "\n".join(lines) + "\n"


def write_folder(folder: Path, model: GPT, tokenizer: Tokenizer, source: str, fmt: str) -> None:
    """Write ``model`` in format ``fmt`` and ``tokenizer`` (read from checkpoint ``source``) into the
    empty ``folder``."""
    meta = tokenizer.meta()
    bpe = meta["kind"] == "gpt2"
    build = FORMATS[fmt][1]
    hf = build(model, tokenizer.vocab_size, eos_token_id=tokenizer.eot_token if bpe else None)
    # safetensors, not pickle: loading it runs no code (transformers 5 writes nothing else)
    hf.save_pretrained(folder, safe_serialization=True)
    if bpe:
        write_gpt2_tokenizer(folder, model_max_length=model.config.block_size)
    else:
        (folder / TOKENIZER_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    (folder / README).write_text(readme(source, meta, fmt))


def export(cfg: DictConfig) -> Path:
    """Write ``cfg.ckpt_path`` as a Hugging Face GPT-2 or Llama folder at ``cfg.out_dir``; return it."""
    if not cfg.get("out_dir"):
        raise ValueError("no out_dir given; pass out_dir=/path/to/new/folder")
    out_dir = Path(cfg.out_dir).expanduser().absolute()
    refuse_existing(out_dir, cfg.get("overwrite", False))
    model, tokenizer, _ = load_checkpoint(cfg.get("ckpt_path"), "cpu")
    fmt = hf_format(model.config, str(cfg.ckpt_path))  # before anything is written
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # beside out_dir, so the rename into place stays on one file system; mkdir (unlike mkdtemp)
    # gives the folder the user's usual permissions
    name = f".{out_dir.name}.{secrets.token_hex(4)}.pid{os.getpid()}.{socket.gethostname()}"
    tmp, old = out_dir.parent / f"{name}.tmp", out_dir.parent / f"{name}.old.tmp"
    tmp.mkdir()
    try:
        write_folder(tmp, model, tokenizer, str(cfg.ckpt_path), fmt)
        if out_dir.exists():  # empty, or overwrite=true: set it aside until the new one is in place
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out_dir.exists():  # put the old folder back
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir

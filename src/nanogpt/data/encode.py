"""Documents in, token files out: the one path every corpus takes to ``train.bin`` and ``val.bin``.

The corpus text is its documents joined by the tokenizer's separator: ``<|endoftext|>`` (one token)
for a BPE, as nanoGPT's OpenWebText preparation, and a blank line (``"\\n\\n"``) for a char
vocabulary, which has no such token. The separator goes *between* documents, not after the last,
so a corpus of one file is exactly that file's text, whether it came as ``data.path`` or as
``data.source``. The val split is the last ``val_fraction`` of that text's characters: as nanoGPT
does, the text is split, then each side is encoded. A separator is never cut in two; it belongs to
the side where it begins.

:func:`write_tokens` reads the documents twice. The first pass counts the characters (and collects
a char vocabulary); the second cuts the text into pieces, at the split, at each document's end and,
for a BPE, only where it starts afresh anyway (:func:`bpe_cut`), so that encoding piece by piece
gives the tokens of encoding each split whole. The pieces are tokenized in order, in worker
processes when the corpus is large (``data.num_proc``), and the tokens are written as they come: a
few batches of pieces per process are in flight at a time, so memory does not grow with the corpus.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanogpt.data.corpus import token_dtype
from nanogpt.data.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_meta

CHAR_SEPARATOR = "\n\n"  # between documents of a char vocabulary, which has no end-of-text token
BATCH_CHARS = 1 << 18  # characters tokenized per task: a few tasks per process are in flight
UNCUT_LIMIT = 4 << 20  # characters of text held at most while waiting for a clean BPE cut
# A worker process per this many characters at most: on less, one saves less time than it costs to
# start and to feed (the text goes to it and the tokens come back through pipes).
PROCESS_CHARS = 16 << 20
SEPARATOR = None  # in the stream of text pieces: the place between two documents

Documents = Callable[[], Iterable[Iterable[str]]]  # a fresh pass over the documents, each in pieces


@dataclass(frozen=True)
class Written:
    """What :func:`write_tokens` wrote, for ``meta.json``."""

    tokenizer: Tokenizer
    dtype: str
    documents: int
    train_chars: int
    val_chars: int
    train_tokens: int
    val_tokens: int


def separator(tok: Tokenizer) -> tuple[str, list[int]]:
    """The text that separates two documents, and its tokens."""
    eot = getattr(tok, "eot_token", None)
    if eot is not None:
        return tok.decode([eot]), [eot]
    return CHAR_SEPARATOR, tok.encode(CHAR_SEPARATOR)


def write_tokens(
    documents: Documents, kind: str, val_fraction: float, folder: Path, num_proc: int | None, what: str
) -> Written:
    """Tokenize the corpus with tokenizer ``kind`` into ``folder/train.bin`` and ``folder/val.bin``.

    ``documents()`` is called twice and must give the same documents both times. ``num_proc``
    worker processes tokenize (``None``: one per core), fewer for a small corpus. ``what`` names
    the corpus in errors.
    """
    # A BPE's separator is known before the text; a char vocabulary's needs the text's characters.
    tok = None if kind == "char" else build_tokenizer(kind, ())
    sep_chars = len(CHAR_SEPARATOR if tok is None else separator(tok)[0])
    n_chars, separators, chars, blank = 0, 0, set(), True
    for text in _stream(documents()):
        if text is SEPARATOR:
            n_chars, separators = n_chars + sep_chars, separators + 1
            continue
        n_chars += len(text)
        blank = blank and text.isspace()
        if tok is None:
            chars.update(text)
    if blank:
        raise ValueError(f"{what} holds no text; point data.path or data.source at a corpus with text")
    if tok is None:
        tok = build_tokenizer(kind, chars | (set(CHAR_SEPARATOR) if separators else set()))
    dtype = token_dtype(tok.vocab_size)

    n_train = int(n_chars * (1.0 - val_fraction))
    cut = len if kind == "char" else bpe_cut  # char tokens never straddle a cut
    batches = _batches(_pieces(_stream(documents()), n_train, sep_chars, cut), sep_chars)
    processes = max(1, min(num_proc or _cores(), n_chars // PROCESS_CHARS))
    chars_of, tokens_of = [0, 0], [0, 0]
    encoded = _in_order(batches, tok, dtype, processes)
    # closing: a failed write (a full disk) stops the worker processes at once, not when the
    # generator happens to be collected
    with closing(encoded), open(folder / "train.bin", "wb") as train, open(folder / "val.bin", "wb") as val:
        for (split, n), ids in encoded:
            (train, val)[split].write(ids.tobytes())
            chars_of[split] += n
            tokens_of[split] += ids.size
    if sum(chars_of) != n_chars:  # the documents changed between the two passes
        raise RuntimeError(f"{what} changed while it was being prepared; run again once it is final")
    return Written(tok, dtype.name, separators + 1, *chars_of, *tokens_of)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _stream(documents: Iterable[Iterable[str]]) -> Iterator[str | None]:
    """The documents' text in pieces, with ``SEPARATOR`` between two documents; documents without
    text are left out (no separator for them)."""
    seen = False  # a document with text went before
    for document in documents:
        started = False
        for text in document:
            if not text:
                continue
            if not started:
                if seen:
                    yield SEPARATOR
                started = seen = True
            yield text


def bpe_cut(text: str) -> int:
    """The last index ``i`` at which GPT-2's BPE of ``text[:i]`` plus that of ``text[i:]`` is the BPE
    of ``text``; 0 when there is none.

    GPT-2's pre-tokenizer regex never joins a newline to a neighbouring non-space (its word, number
    and punctuation pieces exclude whitespace and take at most a leading ' '), and a newline alone
    between two non-spaces is its own piece whether or not text follows it. So a cut right after
    such a newline starts a fresh piece on both sides. (Any other newline may belong to a longer
    whitespace piece, whose split the regex's ``\\s+(?!\\S)`` decides by looking past the cut.)

    A text with no such newline in ``UNCUT_LIMIT`` characters (CRLF line ends, one endless line) is
    cut at its last newline, or at its end: holding it whole would cost memory in proportion to the
    file, where the cut may change a token or two.
    """
    i = len(text) - 1
    while (i := text.rfind("\n", 1, i)) > 0:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
    if len(text) > UNCUT_LIMIT:
        return text.rfind("\n") + 1 or len(text)
    return 0


def _pieces(
    stream: Iterable[str | None], n_train: int, sep_chars: int, cut: Callable[[str], int]
) -> Iterator[tuple[int, str | None]]:
    """``(split, text or SEPARATOR)``: split 0 holds the first ``n_train`` characters, 1 the rest,
    in pieces cut only where ``cut`` allows, at the split, or between documents."""
    buf, done, split = "", 0, 0  # done: characters before buf
    for text in stream:
        if text is SEPARATOR:
            if buf:  # documents are encoded apart, so a document's end is always a clean cut
                yield split, buf
                done, buf = done + len(buf), ""
            yield split, SEPARATOR
            done += sep_chars
            split = int(done >= n_train)
            continue
        buf += text
        if split == 0 and done + len(buf) >= n_train:
            head = n_train - done
            if head:
                yield 0, buf[:head]
            done, buf, split = n_train, buf[head:], 1
        if i := cut(buf):
            yield split, buf[:i]
            done, buf = done + i, buf[i:]
    if buf:
        yield split, buf


def _batches(
    pieces: Iterable[tuple[int, str | None]], sep_chars: int
) -> Iterator[tuple[tuple[int, int], list]]:
    """Consecutive pieces of one split in batches of about ``BATCH_CHARS``:
    ``((split, characters), [text or SEPARATOR, ...])``."""
    batch, split, n = [], 0, 0
    for piece_split, text in pieces:
        if batch and (piece_split != split or n >= BATCH_CHARS):
            yield (split, n), batch
            batch, n = [], 0
        split = piece_split
        batch.append(text)
        n += sep_chars if text is SEPARATOR else len(text)
    if batch:
        yield (split, n), batch


class _Encoder:
    """Tokens of a batch of pieces, in one array; separators are given their tokens."""

    def __init__(self, tokenizer: dict, dtype: np.dtype) -> None:
        self.tok = tokenizer_from_meta(tokenizer)
        self.dtype = dtype
        self.separator: list[int] | None = None  # a char vocabulary of one document has no "\n"

    def __call__(self, batch: list[str | None]) -> np.ndarray:
        parts = []  # arrays, not one list: a list holds 8 bytes per token, an array 2 or 4
        for text in batch:
            if text is SEPARATOR:
                self.separator = self.separator or separator(self.tok)[1]
                parts.append(np.array(self.separator, dtype=self.dtype))
            else:
                parts.append(np.array(self.tok.encode(text), dtype=self.dtype))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


_worker: _Encoder | None = None  # each worker process's own
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _start_worker(tokenizer: dict, dtype: np.dtype, parent: int) -> None:
    """A worker's start: it only tokenizes, and the parent alone decides when it stops.

    Ctrl-C reaches every process of the terminal's group, and SIGTERM may (Slurm signals a job's
    processes): a worker ignores the first and dies quietly of the second, so the parent alone turns
    them into an exception, and the workers print no tracebacks of their own. (Forked workers
    inherit the parent's handlers, such as train's SIGTERM handler that raises, hence the reset.)
    A worker dies with its parent, so a ``kill -9`` of the parent leaves no worker waiting forever
    on a queue nobody writes to.
    """
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above could take effect
        os._exit(1)
    _worker = _Encoder(tokenizer, dtype)


def _exit_with(parent: int) -> None:
    """Where the kernel cannot kill a worker with its parent: exit once the parent is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _encode_in_worker(batch: list[str | None]) -> np.ndarray:
    return _worker(batch)


def _in_order(
    batches: Iterable[tuple[object, list]], tok: Tokenizer, dtype: np.dtype, processes: int
) -> Iterator[tuple[object, np.ndarray]]:
    """``(label, tokens)`` of each batch, in order, tokenized by ``processes`` worker processes."""
    if processes == 1:
        encoder = _Encoder(tok.meta(), dtype)
        for label, batch in batches:
            yield label, encoder(batch)
        return
    # fork on Linux: workers start at once, and the caller's script need not guard its top level
    # with `if __name__ == "__main__"`, as spawn needs (it re-runs the script in every worker). They
    # only tokenize, so they wait on no lock another thread of the parent may have held. Elsewhere
    # fork is unsafe (macOS) or missing (Windows).
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    started_before = {p.pid for p in multiprocessing.active_children()}
    pool = ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_start_worker,
        initargs=(tok.meta(), dtype, os.getpid()),
    )
    try:
        # a bounded queue: submitting every batch at once would hold the whole corpus in memory
        pending = deque()
        for label, batch in batches:
            pending.append((label, pool.submit(_encode_in_worker, batch)))
            if len(pending) >= 2 * processes:
                label, done = pending.popleft()
                yield label, done.result()
        while pending:
            label, done = pending.popleft()
            yield label, done.result()
    except BaseException:
        # Ctrl-C, SIGTERM, an error here or in a worker, or the caller closing this generator: no
        # worker may outlive the call, and the exception goes on up as it came (a wait for the
        # workers' shutdown could hang on a broken pool, or end in a TimeoutError of its own).
        _terminate(pool, started_before)
        raise
    pool.shutdown()


def _terminate(pool: ProcessPoolExecutor, started_before: set[int]) -> None:
    """Kill the pool's workers and reap them, so none outlives this process's call.

    ``ProcessPoolExecutor`` has no public way to kill its workers before Python 3.14
    (``terminate_workers``): they are the child processes this process started since the pool was
    made (``multiprocessing.active_children``, less ``started_before``'s pids).
    """
    workers = [p for p in multiprocessing.active_children() if p.pid not in started_before]
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.kill()  # SIGKILL: a worker ignores SIGINT, and a pending result is of no use
    for worker in workers:
        worker.join()

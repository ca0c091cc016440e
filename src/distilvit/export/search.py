"""Greedy and beam search over a KV-cached decoder, in numpy (no torch).

Both work on a ``LanguageModel``-like object with two methods (see ``captioner._Decoder``):

* ``prefill(embeds)``: ``(B, T, D)`` prompt embeddings -> ``(logits (B, V), past)``
* ``step(token_ids, past)``: ``(B,)`` new tokens -> ``(logits (B, V), past)``

``past`` is a list of ``(B, H_kv, P, d_head)`` arrays, one key and one value per layer. Beam search
follows the algorithm of ``transformers``' ``generate(num_beams=...)`` (the same candidate count, length
normalisation and stopping heuristic), so that both give the same captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEG = -1.0e9


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(..., V)`` float32 logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def greedy_search(
    lm, embeds: np.ndarray, *, eos_ids: Sequence[int], max_new_tokens: int, min_new_tokens: int = 0
) -> list[list[int]]:
    """Arg-max decoding of ``(B, T, D)`` prompt embeddings; returns each row's new ids without the EOS token.

    ``min_new_tokens`` forbids EOS for that many steps (fixed-length runs for benchmarks).
    """
    eos = np.asarray(list(eos_ids), dtype=np.int64)
    logits, past = lm.prefill(embeds)
    batch = logits.shape[0]
    done = np.zeros(batch, dtype=bool)
    generated: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        if step < min_new_tokens:
            logits[:, eos] = -np.inf
        tokens = logits.argmax(axis=-1)
        for row in np.flatnonzero(~done):
            if tokens[row] in eos:
                done[row] = True
            else:
                generated[row].append(int(tokens[row]))
        if done.all() or step == max_new_tokens - 1:
            break
        logits, past = lm.step(tokens, past)
    return generated


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values of each row of ``scores``, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class _Beams:
    """Beam search state for ``B`` images x ``n`` beams, sequences of at most ``max_len`` tokens."""

    def __init__(self, batch: int, num_beams: int, max_len: int):
        self.running = np.zeros((batch, num_beams, max_len), dtype=np.int64)
        self.running_scores = np.zeros((batch, num_beams), dtype=np.float32)
        self.running_scores[:, 1:] = NEG  # all beams start equal: only the first one may expand
        self.finished = np.zeros((batch, num_beams, max_len), dtype=np.int64)
        self.finished_len = np.zeros((batch, num_beams), dtype=np.int64)
        self.finished_scores = np.full((batch, num_beams), NEG, dtype=np.float32)
        self.is_finished = np.zeros((batch, num_beams), dtype=bool)
        self.can_improve = np.ones(batch, dtype=bool)


def beam_search(
    lm,
    embeds: np.ndarray,
    *,
    eos_ids: Sequence[int],
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Beam search over ``(B, T, D)`` prompt embeddings; returns each row's best ids without the EOS token.

    A finished hypothesis scores ``sum(log p) / length ** length_penalty``; search stops when no running
    beam can beat the worst kept hypothesis (``transformers``' default ``early_stopping=False`` heuristic).
    """
    eos = np.asarray(list(eos_ids), dtype=np.int64)
    logits, past = lm.prefill(embeds)
    batch, vocab = logits.shape
    n = num_beams
    k = max(2, 1 + len(eos)) * n
    logits = np.repeat(logits, n, axis=0)  # (B*n, V): every beam starts from the same prompt
    past = [np.repeat(p, n, axis=0) for p in past]
    state = _Beams(batch, n, max_new_tokens)
    rows = np.arange(batch)[:, None]
    for cur in range(max_new_tokens):
        scores = log_softmax(logits).reshape(batch, n, vocab) + state.running_scores[:, :, None]
        scores = scores.reshape(batch, n * vocab)
        top = _top_k(scores, k)
        top_scores = np.take_along_axis(scores, top, axis=1)
        beam, token = top // vocab, top % vocab
        top_seqs = state.running[rows, beam]  # (B, K, max_len)
        top_seqs[:, :, cur] = token
        hits = np.isin(token, eos) | (cur + 1 >= max_new_tokens)
        # the best non-finished candidates keep running
        running_scores = top_scores + hits * NEG
        keep = _top_k(running_scores, n)
        state.running = top_seqs[rows, keep]
        state.running_scores = np.take_along_axis(running_scores, keep, axis=1)
        source = np.take_along_axis(beam, keep, axis=1)
        _update_finished(state, top_seqs, top_scores, hits, cur, length_penalty)
        length = cur + 1
        state.can_improve &= _can_improve(state, length, length_penalty)
        if not state.can_improve.any() or hits.all():
            break
        flat = (np.arange(batch)[:, None] * n + source).reshape(-1)
        past = [p[flat] for p in past]
        logits, past = lm.step(state.running[:, :, cur].reshape(-1), past)
    return [_strip(state.finished[b, 0, : state.finished_len[b, 0]], eos) for b in range(batch)]


def _update_finished(state: _Beams, top_seqs, top_scores, hits, cur: int, length_penalty: float) -> None:
    """Merge candidates that just finished (among the top ``n``) into the kept hypotheses."""
    n = state.running.shape[1]
    candidates = top_scores / ((cur + 1) ** length_penalty)
    just_finished = hits & (np.arange(top_scores.shape[1]) < n)[None, :]
    candidates = candidates + (~state.can_improve)[:, None] * NEG + (~just_finished) * NEG
    scores = np.concatenate([state.finished_scores, candidates], axis=1)
    seqs = np.concatenate([state.finished, top_seqs], axis=1)
    lengths = np.concatenate([state.finished_len, np.full(top_scores.shape, cur + 1)], axis=1)
    flags = np.concatenate([state.is_finished, just_finished], axis=1)
    best = _top_k(scores, n)
    rows = np.arange(scores.shape[0])[:, None]
    state.finished_scores = np.take_along_axis(scores, best, axis=1)
    state.finished = seqs[rows, best]
    state.finished_len = np.take_along_axis(lengths, best, axis=1)
    state.is_finished = np.take_along_axis(flags, best, axis=1)


def _can_improve(state: _Beams, length: int, length_penalty: float) -> np.ndarray:
    """Per image: can the best running beam still beat the worst kept hypothesis?"""
    best_running = state.running_scores[:, 0] / (length**length_penalty)
    worst_kept = np.where(state.is_finished, state.finished_scores.min(axis=1, keepdims=True), NEG)
    return (best_running[:, None] > worst_kept).any(axis=1)


def _strip(ids: np.ndarray, eos: np.ndarray) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[:-1] if ids and ids[-1] in eos else ids

"""One long-lived METEOR 1.5 scorer per process.

pycocoevalcap's :class:`~pycocoevalcap.meteor.meteor.Meteor` starts a Java process (about 5-8 s of
JVM start-up and paraphrase-table loading) and then answers requests over a pipe in milliseconds.
Evaluating every few hundred training steps would pay the start-up every time, so this module keeps
one instance alive, starts it lazily on first use, replaces it if its process died, and stops it at
interpreter exit (or on :func:`close_meteor`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import warnings

from pycocoevalcap.meteor.meteor import Meteor

__all__ = ["close_meteor", "get_meteor", "meteor_score"]

logger = logging.getLogger("distilvit.evaluation")

_guard = threading.Lock()
_instance: Meteor | None = None
_atexit_registered = False


def _alive(scorer: Meteor) -> bool:
    return scorer.meteor_p.poll() is None


def _shutdown(scorer: Meteor) -> None:
    """Stop a scorer's Java process. Safe on a scorer whose request failed half-way."""
    # pycocoevalcap's compute_score does not release its lock when it raises, and its __del__
    # acquires that lock: release it so garbage collection cannot dead-lock.
    if scorer.lock.locked():
        try:
            scorer.lock.release()
        except RuntimeError:  # pragma: no cover - released concurrently
            pass
    proc = scorer.meteor_p
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:  # pragma: no cover - broken pipe while closing
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def get_meteor() -> Meteor:
    """Return the process-wide METEOR scorer, starting its JVM on first use.

    Raises ``OSError`` if Java cannot be started.
    """
    global _instance, _atexit_registered
    with _guard:
        if _instance is not None and not _alive(_instance):
            logger.warning("the METEOR Java process exited; starting a new one")
            _shutdown(_instance)
            _instance = None
        if _instance is None:
            logger.info("starting the METEOR 1.5 scorer (Java, takes a few seconds once)")
            _instance = Meteor()
            if not _atexit_registered:
                atexit.register(close_meteor)
                _atexit_registered = True
        return _instance


def close_meteor() -> None:
    """Stop the process-wide METEOR scorer if one is running. The next use starts a new one."""
    global _instance
    with _guard:
        scorer, _instance = _instance, None
    if scorer is not None:
        _shutdown(scorer)


def _discard(scorer: Meteor) -> None:
    """Forget ``scorer`` (if it is still the shared one) and stop it."""
    global _instance
    with _guard:
        if _instance is scorer:
            _instance = None
    _shutdown(scorer)


def meteor_score(gts: dict, res: dict) -> float | None:
    """Corpus METEOR of tokenized ``res`` (``{id: [prediction]}``) against ``gts`` (``{id: refs}``).

    Returns ``None`` (after a warning) if the Java scorer cannot be started or fails; the broken
    process is discarded so that the next call starts a fresh one.
    """
    try:
        scorer = get_meteor()
    except OSError as err:
        warnings.warn(
            f"METEOR is skipped: could not start Java ({err}).", RuntimeWarning, stacklevel=3
        )
        return None
    try:
        score, _ = scorer.compute_score(gts, res)
        return float(score)
    except (OSError, ValueError) as err:
        _discard(scorer)
        warnings.warn(
            f"METEOR is skipped: the METEOR Java process failed ({err!r}).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None

"""Optional caption rewrite through an OpenAI-compatible chat endpoint (``--llm-url``), off by default.

Each caption is sent, with :data:`INSTRUCTIONS`, to ``POST {url}/chat/completions`` through the
``openai`` client (temperature 0). The answer's first line is taken; the rule-based rewrite is then
applied to it as well, so the documented guarantees hold whatever the model answers. An empty answer
falls back to the rule-based rewrite of the original caption.
"""

from __future__ import annotations

import os

from distilvit.errors import DistilViTError

INSTRUCTIONS = (
    "Rewrite the image caption you are given as short, plain alt text. Use neutral words for people (person, "
    "people, child, they); drop any gender, ethnicity, race, religion or nationality; say 'several' for more "
    "than two of anything; never quote or read out text shown in the image. Keep every visible object. Answer "
    "with the rewritten caption only, on one line."
)


class LLMRewriter:
    """Rewrites captions through the chat endpoint at ``url`` with ``model``."""

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0):
        from openai import OpenAI

        if not url.startswith(("http://", "https://")):
            raise DistilViTError(f"--llm-url {url!r} is not an http(s) URL; give the endpoint's base URL, e.g. "
                                 "http://127.0.0.1:8000/v1")
        self.url, self.model = url, model
        self.client = OpenAI(base_url=url, api_key=os.environ.get(api_key_env) or "unused", timeout=timeout,
                             max_retries=2)

    def rewrite(self, caption: str) -> str:
        """The endpoint's rewrite of ``caption`` (may be empty)."""
        try:
            response = self.client.chat.completions.create(
                model=self.model, temperature=0,
                messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": caption}])
        except Exception as err:  # connection refused, HTTP errors, malformed answers
            raise DistilViTError(f"the rewrite endpoint {self.url} failed ({type(err).__name__}: "
                                 f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); check --llm-url "
                                 "and --llm-model, or run without --llm-url (rules only).") from None
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        lines = (content or "").strip().splitlines()
        return lines[0].strip().strip('"') if lines else ""

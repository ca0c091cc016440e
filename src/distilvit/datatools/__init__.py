"""Dataset tools behind ``distilvit data``: merge, de-bias, quality report, prompts for rare objects.

Module map: ``table`` (every source distilvit reads, normalised to one table), ``merge`` (dedup by
image content, seeded leak-free split), ``writer`` (``save_to_disk`` + Parquet shards + dataset
card, written atomically), ``push`` (upload to the Hub), ``rules`` and ``debias`` (the rule-based
caption rewrite; ``debias_rules.json`` is the default word list), ``llm_rewrite`` (optional rewrite
through an OpenAI-compatible endpoint), ``objects`` (nouns of captions), ``stats`` (distribution
measures), ``alignment`` (image-text scores), ``report`` and ``report_html`` (the quality report),
``prompts`` (text-to-image prompts for rare objects).
"""

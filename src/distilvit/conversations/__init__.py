"""Conversations (LLaVA-style visual instruction data): rendering with the LM's chat template and the label
mask (:mod:`~distilvit.conversations.template`), reading conversation files (``formats``), the training set
(``dataset``), batching (``collator``) and the built-in ``shapes-vqa`` questions (``shapes_vqa``).

Import the submodules directly; this package imports nothing, so that model code can use ``template`` without
pulling in the data side.
"""

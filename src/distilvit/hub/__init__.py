"""The Hugging Face Hub round trip: models loaded by Hub id (``resolve``), trained models pushed (``push``)."""

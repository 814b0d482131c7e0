"""Recorded human speech for training and evaluation: the recordings that Debian packages
carry (sources), their transcripts aligned to phones (phonemize, align), and the corpus
built from them in the synthetic corpus's layout (corpus)."""

"""Corpus stage: the built-in synthetic MEAD-layout corpus and dataset manifests."""

"""SCMC metric: audio alignment, encoders, contrastive training, offline distances."""

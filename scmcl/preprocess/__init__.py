"""Preprocessing stage: tracking, crops, reconstruction, alignment, conditioning images."""

"""Shared readers and writers: atomic publishing, video/audio through ffmpeg, tables."""

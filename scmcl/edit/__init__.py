"""The edited video (issue 12): the renderer's conditioning of edited expressions, the renderer
in sequence, the generated faces put back into the source's full frames, the source's audio."""

"""scmcl: SCMCL speech-preserving facial expression manipulation as a resumable workflow."""

__version__ = "0.1.0"

"""The evaluation (issue 12): the edited videos of every method scored against the paired ground
truth, the face classifier that judges them, the naive baseline, and the report's figures."""

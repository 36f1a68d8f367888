"""Expression manipulator (method.md §4): NED's networks and their released weight files, the
training windows and pseudo-targets, both trainers, the edits and the classifier that judges them.
Nothing is imported here, so `scmcl <any stage>` starts without torch until it needs it."""

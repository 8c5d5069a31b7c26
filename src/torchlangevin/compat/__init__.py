"""Doors for code written against other libraries: ``compat.devinterp`` takes devinterp 2.0's
calls unchanged and runs them on torchlangevin."""

"""The built-in bug variants (each a mixin overriding one correct routine).

Filled in by the kernel-model work; every variant names the review thread
or commit that describes the mistake it models.
"""

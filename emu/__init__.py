"""ptemu: the arch-independent machine (memory, vCPUs, scheduler, kernel model, CLI)."""

__version__ = "0.1.0"

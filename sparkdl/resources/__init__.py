"""Package data: sample photos and the ImageNet class index."""
import importlib.resources

__all__ = ["samplesDir"]


def samplesDir():
    """Path of the folder of sample photos shipped with sparkdl (CC0 / public domain)."""
    return str(importlib.resources.files("sparkdl.resources") / "samples")

"""mtl3d: multi-task dense prediction with a 3D-aware regularizer (Li et al., ICLR 2024)."""

__version__ = "0.1.0"

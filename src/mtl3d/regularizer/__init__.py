"""The 3D-aware regularizer (Li et al., ICLR 2024): a training-only tri-plane rendering branch."""

from mtl3d.regularizer.branch import RegularizerBranch, downsample_depth, expected_depth_loss
from mtl3d.regularizer.rays import (
    Rays,
    default_intrinsics,
    make_rays,
    relative_pose,
    render_pixel_centers,
    render_size,
    sample_depths,
    to_box,
)
from mtl3d.regularizer.render import Rendered, alpha_composite, composite, render_rays
from mtl3d.regularizer.triplane import PlaneEncoder, aggregate, sample_planes, sample_triplane

__all__ = [
    "PlaneEncoder",
    "Rays",
    "RegularizerBranch",
    "Rendered",
    "aggregate",
    "alpha_composite",
    "composite",
    "default_intrinsics",
    "downsample_depth",
    "expected_depth_loss",
    "make_rays",
    "relative_pose",
    "render_pixel_centers",
    "render_rays",
    "render_size",
    "sample_depths",
    "sample_planes",
    "sample_triplane",
    "to_box",
]

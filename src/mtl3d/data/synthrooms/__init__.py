"""SynthRooms: a procedural multi-view indoor benchmark with exact labels and no download.

Every scene is a box-shaped room (floor, ceiling, four walls) furnished with 4-12 objects built from
boxes (optionally yawed), spheres and vertical cylinders. A vectorised numpy ray caster renders each
camera view once and derives every label from the same hits, so RGB, semantic labels, metric z-depth,
surface normals and boundaries agree exactly, and several views of one scene share one geometry (what a
3D-aware method needs).

World frame: metres, **y up**; the room spans ``[0, sx] x [0, sy] x [0, sz]`` (``sy`` = room height),
the floor is ``y = 0``. Cameras: OpenCV pinhole (x right, y down, z forward); ``pose`` is camera-to-world.
See ``docs/synthrooms.md`` for the classes, the camera model and the file layout.

Modules, in the order a view is made: ``scene`` (sampling a room), ``camera`` (intrinsics, poses),
``raycast`` (intersections, normals, shadow rays), ``render`` (one view: shading and labels), ``sensor``
(optional corruption), ``writer`` (the dataset on disk: ``prepare``, ``verify``).
"""

from mtl3d.data.synthrooms.camera import camera_poses, intrinsics, look_at
from mtl3d.data.synthrooms.render import edges_from_labels, render
from mtl3d.data.synthrooms.scene import (
    BOX,
    CLASSES,
    CYLINDER,
    FAR,
    IGNORE,
    NEAR,
    SPHERE,
    Material,
    Primitive,
    Scene,
    sample_scene,
    scene_for,
)
from mtl3d.data.synthrooms.writer import FORMAT_VERSION, TASKS, prepare, verify

__all__ = [
    "BOX",
    "CLASSES",
    "CYLINDER",
    "FAR",
    "FORMAT_VERSION",
    "IGNORE",
    "NEAR",
    "SPHERE",
    "TASKS",
    "Material",
    "Primitive",
    "Scene",
    "camera_poses",
    "edges_from_labels",
    "intrinsics",
    "look_at",
    "prepare",
    "render",
    "sample_scene",
    "scene_for",
    "verify",
]

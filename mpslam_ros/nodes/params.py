"""Parameter declaration helpers: every parameter gets a description (shown by ``ros2 param describe``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from mpslam_ros.nodes.msgs import transform_from_params

#: Camera optical frame (z forward, x right, y down) in a body frame (x forward, y left, z up).
OPTICAL_IN_BODY_XYZW = [-0.5, 0.5, -0.5, 0.5]


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare one parameter with its description and return its value."""
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def declare_device(node: Node, default: str, what: str) -> str:
    """The ``device`` parameter (where ``what``'s CG iterations run), checked once at start-up: "cuda" on a
    machine where no GPU (nor the simulator) is usable is logged as an error naming the reason and the node
    runs on the CPU instead of failing every solve; an unknown value is refused the same way."""
    from mpslam_ros.solvers.cuda import DEVICES, resolve_device

    device = str(declare(node, "device", default,
                         f"where {what}'s CG iterations run: cpu, cuda (a GPU through numba-cuda) or auto (the GPU "
                         f"when present and the problem is large enough); see docs/cuda.md"))
    if device not in DEVICES:
        node.get_logger().error(f"parameter device={device!r} is not one of {DEVICES}; using 'cpu'")
        return "cpu"
    if device == "cuda":
        try:
            resolve_device(device, 0)
        except RuntimeError as exc:
            node.get_logger().error(f"parameter device='cuda': {exc}; using 'cpu'")
            return "cpu"
    return device


def declare_camera_extrinsic(node: Node):
    """T_body_left from ``camera_extrinsic.translation`` / ``camera_extrinsic.rotation_xyzw``."""
    t = declare(node, "camera_extrinsic.translation", [0.0, 0.0, 0.0],
                "position (m) of the left camera in the base frame (x forward, y left, z up)")
    q = declare(node, "camera_extrinsic.rotation_xyzw", list(OPTICAL_IN_BODY_XYZW),
                "orientation (x, y, z, w quaternion) of the left camera's optical frame in the base frame; "
                "the default is a camera looking forward along base x")
    return transform_from_params([float(v) for v in t], [float(v) for v in q])


def declare_extrinsic_source(node: Node) -> tuple[bool, float]:
    """(``camera_extrinsic.from_tf_static``, ``camera_extrinsic.tf_static_wait_s``)."""
    use = declare(node, "camera_extrinsic.from_tf_static", True,
                  "take the camera extrinsic from /tf_static (base_frame -> the camera's frame_id) when it has "
                  "that transform, else from camera_extrinsic.translation / rotation_xyzw")
    wait = declare(node, "camera_extrinsic.tf_static_wait_s", 4.0,
                   "when something publishes /tf_static, seconds (steady time) to wait for the camera transform "
                   "after the calibration before falling back to the parameters")
    return bool(use), float(wait)


def declare_dataclass(node: Node, prefix: str, config_cls: type, skip: tuple = ()) -> dict:
    """Declare ``prefix.<field>`` for each scalar field of a config dataclass; returns the overrides.

    The description is the field's ``metadata["help"]``, else its ``#:`` comment in the source.
    """
    comments = _field_comments(config_cls)
    values = {}
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        if not isinstance(default, (bool, int, float, str)):
            continue
        help_text = (f.metadata.get("help") if f.metadata else None) or comments.get(f.name)
        value = declare(node, f"{prefix}.{f.name}", default,
                        help_text or f"{config_cls.__name__}.{f.name} (see {config_cls.__module__})")
        if value != default:
            values[f.name] = type(default)(value)
    return values


def _field_comments(cls: type) -> dict:
    """``#:`` comment lines right above each field of a dataclass (Sphinx's attribute-doc style)."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    found, pending = {}, []
    for line in lines:
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
        elif ":" in text and not text.startswith(("#", '"', "class", "@", "def")):
            name = text.split(":", 1)[0].strip()
            if pending and name.isidentifier():
                found[name] = " ".join(pending)
            pending = []
        elif text:
            pending = []
    return found

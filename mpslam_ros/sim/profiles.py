"""Camera-effect profiles (``clean``, ``realistic``, ``harsh``) and the scene effects a profile spec can add.

A profile spec names a camera profile, optionally followed by scene effects joined by ``+``
(``realistic+textureless+dark``); :func:`profile_settings` turns it into
:class:`~mpslam_ros.sim.sequences.SimOptions` fields. The effects themselves are modelled in
:mod:`mpslam_ros.sim.camera_effects` (camera) and :func:`mpslam_ros.sim.world.with_scene_effects`
(scene). No heavy imports here: the command-line parsers use it.
"""

from __future__ import annotations

import argparse
from typing import Dict

#: Effect settings of each profile (fields of SimOptions; unnamed fields keep their defaults).
#: realistic: a global-shutter machine-vision camera indoors (EuRoC-like noise and distortion,
#: 8 ms exposure, auto exposure, a little mains flicker, 7 % gain mismatch between the two sensors);
#: two people walking, who give way to the robot / the person holding the camera as people do
#: (they keep 0.8 m, centre to camera: the near end of personal distance, so the nearest of them still
#: covers about half the image).
#: harsh: a cheap camera in a dim, flickering place: 4x the noise, 20 ms exposure, strong vignetting
#: and distortion, large exposure swings and flicker, lights switched between visits, five people
#: walking who brush past the camera (0.45 m: about a body's half-width plus the camera's).
PROFILES: Dict[str, dict] = {
    "clean": {},
    "realistic": dict(read_noise=2.0, shot_noise=0.05, vignetting=0.35, exposure_time_s=0.008,
                      blur_px_per_sample=1.5, exposure_variation=0.15, flicker=0.02, right_gain=0.93,
                      distortion=(-0.28, 0.075, 2e-4, -1e-4, 0.0), light_change=0.2, moving_objects=2,
                      mover_clearance_m=0.8, depth_noise=0.0015),
    "harsh": dict(read_noise=4.0, shot_noise=0.12, vignetting=0.5, exposure_time_s=0.02,
                  blur_px_per_sample=1.5, exposure_variation=0.35, flicker=0.08, right_gain=0.8,
                  distortion=(-0.33, 0.1, 5e-4, -4e-4, 0.0), light_change=0.5, moving_objects=5,
                  mover_clearance_m=0.45, depth_noise=0.004),
}

#: Scene effects a profile can add with ``+`` (``realistic+textureless+dark``): fields of SimOptions.
#: textureless: 40 % of the wall faces painted plain (a faint 3 % mottling, no corners);
#: dark: 30 % of the 4 m light cells at 15 % of the light (corners without a lamp; with the
#: profile's noise their signal-to-noise ratio drops ~7x).
SCENE_EFFECTS: Dict[str, dict] = {
    "textureless": dict(textureless_walls=0.4),
    "dark": dict(dark_zones=0.3),
}


def profile_settings(spec: str) -> dict:
    """SimOptions fields of a profile spec: a camera profile (``clean``, ``realistic``, ``harsh``)
    followed by any scene effects, joined by ``+`` (``harsh+textureless+dark``)."""
    name, *effects = str(spec).split("+")
    if name not in PROFILES:
        raise ValueError(f"unknown camera profile {name!r} in {spec!r}; choose from {', '.join(PROFILES)}")
    settings = dict(PROFILES[name])
    for effect in effects:
        if effect not in SCENE_EFFECTS:
            raise ValueError(f"unknown scene effect {effect!r} in profile {spec!r}; choose from "
                             f"{', '.join(SCENE_EFFECTS)}")
        settings.update(SCENE_EFFECTS[effect])
    return settings


def profile_spec(spec: str) -> str:
    """argparse type of a ``--profile`` value: the spec itself when valid, else a clear error."""
    try:
        profile_settings(spec)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return spec


def profile_specs(text: str) -> list:
    """argparse type of a comma-separated list of profile specs (``realistic,realistic+dark``)."""
    return [profile_spec(spec.strip()) for spec in text.split(",") if spec.strip()]


#: --help text of the profile option, shared by the commands that take one.
PROFILE_HELP = ("camera profile clean (pixel noise only), realistic (EuRoC-like noise and lens distortion in raw "
                "images + CameraInfo, 8 ms motion blur, auto exposure, flicker, L/R gain mismatch, light changes, "
                "people walking) or harsh (stronger), optionally with scene effects joined by '+': textureless "
                "(40 %% of the walls plain) and dark (30 %% of the 4 m light cells at 15 %% light), e.g. "
                "realistic+textureless+dark (docs/robustness.md)")


"""TV-L1 optical flow (Zach, Pock & Bischof 2007): its parameters, named and defaulted as OpenCV's.

Two flow methods implement it, OpenCV contrib's ``tvl1`` (:mod:`flowprep.flow`) and our ``tvl1-torch``
(:mod:`flowprep.tvl1_torch`); both take these parameters, defined once here (a leaf module, so that neither
method's module imports the other's).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of TV-L1, named and defaulted as OpenCV's ``DualTVL1OpticalFlow_create``.

    Attributes:
        tau: time step of the primal-dual scheme (stable for tau <= 0.25).
        lambda_: weight of the data term; smaller gives smoother flow.
        theta: coupling between ``u`` and ``v``.
        nscales: number of pyramid levels (fewer if the image gets below 16 pixels).
        warps: warps of ``I1`` per level.
        epsilon: stop a warp once the mean squared update of ``u`` per pixel is below epsilon**2.
        inner_iterations: iterations between two median filterings.
        outer_iterations: median filterings per warp (so at most inner*outer iterations per warp).
        scale_step: size ratio between two pyramid levels, in (0, 1).
        gamma: weight of the illumination-change variable (0 disables it).
        median_filtering: odd window of the median filter applied to the flow; <= 1 disables it.
    """

    # OpenCV's defaults; the one source for both methods (TVL1_DEFAULTS below is this, as a dict).
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def __post_init__(self):
        if not 0.0 < self.scale_step < 1.0:
            raise ConfigError(f"scale_step must lie in (0, 1), got {self.scale_step}")
        if self.nscales < 1 or self.warps < 1:
            raise ConfigError(f"nscales and warps must be >= 1, got {self.nscales} and {self.warps}")
        if self.inner_iterations < 1 or self.outer_iterations < 1:
            raise ConfigError(
                f"inner_iterations and outer_iterations must be >= 1, got "
                f"{self.inner_iterations} and {self.outer_iterations}"
            )
        if self.tau <= 0 or self.theta <= 0 or self.lambda_ <= 0 or self.epsilon < 0:
            raise ConfigError(
                f"tau, theta and lambda_ must be > 0 and epsilon >= 0, got tau={self.tau}, "
                f"theta={self.theta}, lambda_={self.lambda_}, epsilon={self.epsilon}"
            )
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            raise ConfigError(f"median_filtering must be odd (or <= 1 to disable), got {self.median_filtering}")


# The parameters as a dict: the defaults of both methods' ``--param`` overrides.
TVL1_DEFAULTS = asdict(TVL1Params())

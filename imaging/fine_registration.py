"""Fine mosaic ↔ SEM refiners: Mattes mutual information (SimpleITK) and ECC on gradient magnitude.

Both start from a placement already found (landmarks, or the verified polish) and map the SEM
resampled to the mosaic's pixel size (fixed) onto the mosaic (moving). ``imaging.registration``
takes MI's result as the answer for landmarks and uses both as cross-checks otherwise.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from imaging.registration_features import gradient_magnitude

__all__ = ["refine_ecc", "refine_mutual_information"]

#: Held while an MI run has ITK's process-wide thread count at one (see :func:`_run_mi`).
_SINGLE_THREADED = threading.Lock()


def refine_mutual_information(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving0: np.ndarray,
                               *, model: str, seed: int) -> tuple[np.ndarray, dict]:
    """Mattes MI refinement (SimpleITK); fixed = SEM at mosaic pixel size, moving = mosaic.

    ITK transforms map fixed physical points → moving physical points; with unit spacing and
    zero origin those are pixel (x, y) coordinates, so the result is fixed px → mosaic px.
    """
    import SimpleITK as sitk

    fixed_img = sitk.GetImageFromArray(fixed.astype(np.float32))
    moving_img = sitk.GetImageFromArray(moving.astype(np.float32))
    centre = ((fixed.shape[1] - 1) / 2.0, (fixed.shape[0] - 1) / 2.0)
    linear = fixed_to_moving0[:2, :2]
    translation = fixed_to_moving0[:2, 2] + linear @ centre - centre  # ITK: A(p − c) + c + t

    info: dict = {}
    # similarity first (robust, 4 dof), then affine from it when asked
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    angle = float(np.arctan2(linear[1, 0], linear[0, 0]))
    sim = sitk.Similarity2DTransform(scale, angle, tuple(translation), centre)
    sim = _run_mi(fixed_img, moving_img, sim, seed=seed, shrink=(2, 1), smooth=(1.0, 0.0))
    info["similarity_metric"] = round(sim[1], 5)
    matrix = _sitk_to_matrix(sim[0])
    if model == "affine":
        aff = sitk.AffineTransform(2)
        aff.SetCenter(centre)
        aff.SetMatrix(tuple(matrix[:2, :2].ravel()))
        aff.SetTranslation(tuple(matrix[:2, 2] + matrix[:2, :2] @ centre - centre))
        result = _run_mi(fixed_img, moving_img, aff, seed=seed, shrink=(1,), smooth=(0.0,))
        info["affine_metric"] = round(result[1], 5)
        matrix = _sitk_to_matrix(result[0])
    return matrix, info


def _run_mi(fixed_img, moving_img, transform, *, seed: int, shrink, smooth):
    """One multi-resolution Mattes MI run, single-threaded: ITK's threaded metric sums its joint
    histogram in varying order, and the registration method's own thread count does not reach
    the metric, only the process-wide default does. With it at two threads the same pair ended
    12–35 px from its start on three runs, and was accepted or refused by chance."""
    import SimpleITK as sitk

    with _SINGLE_THREADED:
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            return _mattes_mi(fixed_img, moving_img, transform, seed=seed, shrink=shrink, smooth=smooth)
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _mattes_mi(fixed_img, moving_img, transform, *, seed: int, shrink, smooth):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    # A regular (not random) sample grid keeps results reproducible; dense sampling (NONE)
    # measured far worse here (the optimiser ran 20–60 px off on every synthetic pair).
    n_pixels = fixed_img.GetNumberOfPixels()
    method.SetMetricSamplingStrategy(method.REGULAR)
    # SimpleITK reads seed 0 as 'wall clock' (random): shift to keep every seed deterministic
    method.SetMetricSamplingPercentage(min(0.25, 100_000 / n_pixels), int(seed) + 1)
    method.SetNumberOfThreads(1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=0.5, minStep=1e-4, numberOfIterations=200,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smooth))
    method.SetInitialTransform(transform, inPlace=False)
    out = method.Execute(fixed_img, moving_img)
    return out, float(method.GetMetricValue())


def _sitk_to_matrix(transform) -> np.ndarray:
    """3×3 (x, y) matrix of a SimpleITK 2-D linear transform (composite or not)."""
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(transform.GetNumberOfTransforms() - 1)
    # Evaluate on three points: independent of the transform's parameterisation.
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in pts])
    matrix = np.eye(3)
    matrix[:2, 2] = mapped[0]
    matrix[:2, 0] = mapped[1] - mapped[0]
    matrix[:2, 1] = mapped[2] - mapped[0]
    return matrix


def refine_ecc(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving0: np.ndarray,
                *, motion: int) -> tuple[np.ndarray, float] | None:
    """ECC on gradient magnitude: (fixed px → moving px matrix, ECC correlation), or None.

    ``motion`` is an OpenCV motion type; for MOTION_TRANSLATION the start's linear part is kept.
    """
    template = gradient_magnitude(fixed, sigma=1.0)
    image = gradient_magnitude(moving, sigma=1.0)
    warp = fixed_to_moving0[:2].astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        rho, warp = cv2.findTransformECC(template, image, warp, motion, criteria, None, 1)
    except cv2.error:
        return None
    matrix = np.vstack([warp.astype(np.float64), [0, 0, 1]])
    return (matrix, float(rho)) if np.isfinite(matrix).all() else None

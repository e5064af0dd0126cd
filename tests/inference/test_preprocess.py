"""THE pre-processing: hand-worked attenuation numbers, air calibration, channels, padding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.preprocess import (
    ATTENUATION_SCALE,
    PREPROCESS_VERSION,
    ModelInput,
    air_levels,
    attenuation,
    column_gains,
    preprocess,
)
from inference.scan import Scan

H, W = 64, 200
OBJ = (slice(10, 50), slice(60, 140))  # rows, cols of a test object


def _gains(kind: str = "random") -> np.ndarray:
    """Per-row detector gains: each row (detector element) sees a different air level."""
    if kind == "random":
        return np.random.default_rng(7).uniform(0.85, 1.09, H)  # x 60000 stays below 65535
    return np.linspace(0.9, 1.09, H)  # smooth: neighbours' gains are close


def _scene(
    air: float, a_obj: float, dtype: type, gains: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image with per-row gains and an object of attenuation ``a_obj``; also its true a."""
    g = _gains() if gains is None else gains
    a_true = np.zeros((H, W))
    a_true[OBJ] = a_obj
    counts = air * g[:, None] * np.exp(-a_true)
    return np.round(counts).astype(dtype), a_true


def test_constants() -> None:
    assert PREPROCESS_VERSION == "3"
    assert ATTENUATION_SCALE == 4.0


def test_air_calibration_recovers_known_attenuation_16bit() -> None:
    img, _ = _scene(60000, 2.0, np.uint16)
    air = air_levels(img)
    np.testing.assert_allclose(air, np.round(60000 * _gains()), rtol=1e-6)
    a = attenuation(img)
    assert a.dtype == np.float32 and a.shape == (H, W)
    # quantisation: +-0.5 count on ~6500 counts -> < 1e-4 in a
    np.testing.assert_allclose(a[OBJ], 2.0, atol=2e-4)
    np.testing.assert_allclose(a[:5], 0.0, atol=1e-6)  # air rows above the vehicle


def test_model_input_is_attenuation_over_scale() -> None:
    img, _ = _scene(60000, 2.0, np.uint16)
    model = preprocess(Scan.from_arrays(img))
    np.testing.assert_allclose(model.tensor[0, 0][OBJ], 2.0 / ATTENUATION_SCALE, atol=1e-4)


def test_8bit_and_16bit_of_the_same_scene_agree() -> None:
    gains = np.linspace(0.9, 1.09, H)
    img16, _ = _scene(60000, 2.0, np.uint16, gains)
    img8, _ = _scene(200, 2.0, np.uint8, gains)
    a16, a8 = attenuation(img16), attenuation(img8)
    # 8-bit: the object is ~24-30 counts, so +-0.5 count is up to ~0.021 in a, and the
    # 8-bit air level (~180-220 counts) adds up to ~0.003
    tol = 0.5 / (200 * 0.9 * math.exp(-2.0)) + 0.5 / (200 * 0.9) + 1e-3
    assert np.abs(a8 - a16).max() <= tol
    t16 = preprocess(Scan.from_arrays(img16)).tensor
    t8 = preprocess(Scan.from_arrays(img8)).tensor
    assert np.abs(t8 - t16).max() <= tol / ATTENUATION_SCALE


def test_transmission_is_clipped_to_depth_range() -> None:
    img = np.full((H, W), 50000, np.uint16)
    img[20, 20] = 0  # no counts: the most the 16-bit scale can express, not infinity
    img[21, 21] = 65535  # brighter than air (noise): T clipped to 1, a = 0
    a = attenuation(img)
    assert a[20, 20] == pytest.approx(math.log(65536), rel=1e-5)
    assert a[21, 21] == 0.0
    img8 = np.full((H, W), 240, np.uint8)
    img8[0, 0] = 0
    assert attenuation(img8)[0, 0] == pytest.approx(math.log(256), rel=1e-5)


def test_attenuation_with_given_air() -> None:
    img = np.full((H, W), 1000, np.uint16)
    a = attenuation(img, air=np.full(H, 1000 * math.e))
    np.testing.assert_allclose(a, 1.0, atol=1e-5)
    np.testing.assert_allclose(attenuation(img, air=2000.0), math.log(2), atol=1e-5)
    with pytest.raises(ValueError, match="one value per row"):
        attenuation(img, air=np.ones(H + 1))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        attenuation(img.astype(np.float32))


def test_row_fully_covered_by_dense_object_gets_right_air_level() -> None:
    gains = _gains("smooth")
    img, _ = _scene(60000, 2.0, np.uint16, gains)
    dense_rows = slice(20, 26)
    truth = np.round(60000 * gains[:, None] * np.ones((1, W)))
    img[dense_rows, :] = np.round(truth[dense_rows] * math.exp(-3.0)).astype(np.uint16)
    air = air_levels(img)
    # without the fix the estimate would be exp(-3) = 5 % of the true level
    np.testing.assert_allclose(air[dense_rows], 60000 * gains[dense_rows], rtol=0.01)
    a = attenuation(img, air)
    np.testing.assert_allclose(a[dense_rows], 3.0, atol=0.015)


@pytest.mark.parametrize("width", [1500, 2812, 4300])
@pytest.mark.parametrize("noise", [0.003, 0.01, 0.02])
def test_air_estimate_ignores_noise_bias(noise: float, width: int) -> None:
    """Mean air level, not the noise peak: air pixels must come out near a = 0, also for
    rows long enough that their statistics are taken on a sample of the columns (every
    2nd and 3rd: STAT_SAMPLES)."""
    rng = np.random.default_rng(3)
    img = rng.normal(50000, 50000 * noise, (H, width)).round().astype(np.uint16)
    air = air_levels(img)
    np.testing.assert_allclose(air, 50000, rtol=0.005)
    assert float(np.median(attenuation(img))) < 0.01


def test_air_estimate_not_pulled_down_by_empty_container() -> None:
    """Rows that are 80 % thin container wall (T = 0.91) and 20 % air: the walls fall just
    under the air level and must not be taken for it (a real AJNA scan showed this)."""
    rng = np.random.default_rng(4)
    img = rng.normal(50000, 500, (H, 1500))
    img[:, 150:1350] *= 0.91
    air = air_levels(img.round().astype(np.uint16))
    np.testing.assert_allclose(air, 50000, rtol=0.004)


def test_all_black_image_does_not_divide_by_zero() -> None:
    img = np.zeros((H, W), np.uint16)
    assert np.all(air_levels(img) >= 1.0)
    assert np.all(np.isfinite(attenuation(img)))


def test_no_low_channel_copies_high() -> None:
    img, _ = _scene(60000, 1.5, np.uint16)
    model = preprocess(Scan.from_arrays(img))
    assert not model.has_low
    np.testing.assert_array_equal(model.tensor[0, 1], model.tensor[0, 0])


def test_low_channel_is_its_own_attenuation() -> None:
    high, _ = _scene(60000, 1.0, np.uint16)
    low, _ = _scene(60000, 1.2, np.uint16)
    model = preprocess(Scan.from_arrays(high, low))
    assert model.has_low
    np.testing.assert_allclose(model.tensor[0, 1][OBJ], 1.2 / ATTENUATION_SCALE, atol=1e-4)
    np.testing.assert_allclose(model.tensor[0, 0][OBJ], 1.0 / ATTENUATION_SCALE, atol=1e-4)


def test_padding_to_multiple_with_zeros() -> None:
    img, _ = _scene(60000, 2.0, np.uint16)
    img = img[:50, :199]  # 50 x 199 -> 64 x 224
    model = preprocess(Scan.from_arrays(img))
    t = model.tensor
    assert t.dtype == np.float32 and t.flags.c_contiguous
    assert t.shape == (1, 2, 64, 224)
    assert model.original_hw == (50, 199) and model.scaled_hw == (50, 199)
    assert np.all(t[:, :, 50:, :] == 0) and np.all(t[:, :, :, 199:] == 0)
    assert t[0, 0, 10:50, 60:140].min() > 0.4  # the object is there
    assert preprocess(Scan.from_arrays(img), pad_multiple=1).tensor.shape == (1, 2, 50, 199)


def test_already_a_multiple_is_not_padded() -> None:
    img = np.full((64, 96), 40000, np.uint16)
    assert preprocess(Scan.from_arrays(img)).tensor.shape == (1, 2, 64, 96)


def test_scale_resizes_and_to_original_maps_back() -> None:
    img, _ = _scene(60000, 2.0, np.uint16)
    model = preprocess(Scan.from_arrays(img), scale=0.5)
    assert model.scaled_hw == (32, 100) and model.scale == 0.5
    assert model.tensor.shape == (1, 2, 32, 128)
    # area averaging keeps the object's attenuation inside it
    np.testing.assert_allclose(model.tensor[0, 0, 8:22, 32:68], 0.5, atol=2e-3)
    boxes = np.array([[30.0, 5.0, 70.0, 25.0], [90.0, 20.0, 127.0, 40.0]])
    back = model.to_original(boxes)
    np.testing.assert_allclose(back[0], [60, 10, 140, 50])
    np.testing.assert_allclose(back[1], [180, 40, W, H])  # reaches into padding: clipped
    np.testing.assert_allclose(model.to_model(back[:1]), boxes[:1])
    assert model.to_original(np.zeros((0, 4))).shape == (0, 4)


def test_upscale() -> None:
    img, _ = _scene(60000, 2.0, np.uint16)
    model = preprocess(Scan.from_arrays(img), scale=1.5, pad_multiple=16)
    assert model.scaled_hw == (96, 300)
    assert model.tensor.shape == (1, 2, 96, 304)
    np.testing.assert_allclose(model.to_original(np.array([[0, 0, 150, 48]])), [[0, 0, 100, 32]])


def test_to_original_identity_without_scale() -> None:
    model = ModelInput(
        tensor=np.zeros((1, 2, 64, 224), np.float32),
        original_hw=(50, 199),
        scaled_hw=(50, 199),
        scale=1.0,
        has_low=False,
    )
    np.testing.assert_allclose(
        model.to_original(np.array([[1, 2, 3, 4], [-5, -5, 300, 300]])),
        [[1, 2, 3, 4], [0, 0, 199, 50]],
    )
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        model.to_original(np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"pad_multiple": 0}, "pad_multiple"),
        ({"scale": 0.0}, "scale"),
        ({"scale": float("nan")}, "scale"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    img = np.full((32, 32), 1000, np.uint16)
    with pytest.raises(ValueError, match=needle):
        preprocess(Scan.from_arrays(img), **kwargs)


# --------------------------------------------------------------------------- pulses


def _pulsed_scene(pulse_sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows 0-11 are air end to end; every column (one linac pulse) has its own output."""
    rng = np.random.default_rng(3)
    pulses = 1.0 + pulse_sigma * rng.standard_normal(W)
    a_true = np.zeros((H, W))
    a_true[12:, 20:180] = 1.5
    counts = 50000 * _gains()[:, None] * pulses[None, :] * np.exp(-a_true)
    return np.round(counts).astype(np.uint16), a_true, pulses


def test_pulse_jitter_is_removed_using_the_air_band_above_the_vehicle() -> None:
    img, _, pulses = _pulsed_scene()
    gains = column_gains(img / air_levels(img)[:, None])
    assert gains is not None
    np.testing.assert_allclose(gains / gains.mean(), pulses / pulses.mean(), atol=2e-4)
    a = attenuation(img)
    # Without the column correction the error would be the jitter itself (~1 %).
    assert np.abs(a[12:, 20:180] - 1.5).max() < 2e-3
    uncorrected = attenuation(img, air=air_levels(img))
    assert np.abs(uncorrected[12:, 20:180] - 1.5).max() > 0.01


def test_no_air_band_means_no_column_correction() -> None:
    img, _, _ = _pulsed_scene()
    covered = img[12:]  # the vehicle fills every row: nothing to read the pulses from
    t = covered / air_levels(covered)[:, None]
    assert column_gains(t) is None


def test_an_obstruction_in_the_air_band_is_not_taken_for_a_pulse() -> None:
    img, _, _ = _pulsed_scene(pulse_sigma=0.0)
    img = img.copy()
    img[:, 100:104] = (img[:, 100:104] * 0.8).astype(np.uint16)  # a pole through every row
    gains = column_gains(img / air_levels(img)[:, None])
    assert gains is not None
    np.testing.assert_array_equal(gains[100:104], 1.0)

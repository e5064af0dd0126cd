"""The generator's physics against numbers worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.synth.calibration import DEFAULT_PATH, calibration
from training.synth.geometry import Canvas, Fan
from training.synth.physics import (
    DetectorModel,
    Spectrum,
    dual_energy_log_ratio,
    linac_spectrum,
    polychromatic_transmission,
)

# NIST SRD 126, Table 3/4: mu/rho in cm^2/g.
WATER_1MEV = 0.07072
IRON_2MEV = 0.04254


@pytest.mark.parametrize(
    ("material", "density", "thickness_mm", "energy", "mu_rho"),
    [
        ("water", 1.0, 100.0, 1.0, WATER_1MEV),
        ("water", 1.0, 400.0, 1.0, WATER_1MEV),
        ("steel", 7.85, 50.0, 2.0, IRON_2MEV),
        ("steel", 7.85, 10.0, 2.0, IRON_2MEV),
    ],
)
def test_slab_transmission_matches_beer_lambert(material, density, thickness_mm, energy, mu_rho):
    """A box drawn on the canvas, through a single line: T = exp(-mu/rho * rho * t)."""
    c = Canvas(width_px=20, height_px=10, pitch_mm=5.0, top_mm=50.0)
    c.add_box(material, 0.0, 0.0, 100.0, 50.0, thickness_mm, density)
    t = polychromatic_transmission(c.maps, Spectrum.monoenergetic(energy))
    expected = np.exp(-mu_rho * density * thickness_mm / 10.0)
    # Steel is 98.6 % iron (+Mn, C, Si): within half a per cent of pure iron.
    np.testing.assert_allclose(t, expected, rtol=5e-3)


def test_two_materials_on_one_ray_multiply():
    c = Canvas(width_px=4, height_px=4, pitch_mm=5.0, top_mm=20.0)
    c.add_box("water", 0, 0, 20, 20, 100.0, 1.0)
    c.add_box("steel", 0, 0, 20, 20, 10.0, 7.85)
    t = polychromatic_transmission(c.maps, Spectrum.monoenergetic(2.0))
    alone = [
        polychromatic_transmission({k: v}, Spectrum.monoenergetic(2.0)) for k, v in c.maps.items()
    ]
    np.testing.assert_allclose(t, alone[0] * alone[1], rtol=1e-5)


def test_partial_pixel_walls_keep_their_mass():
    """A 2 mm steel sheet at 5 mm pitch adds exactly its mass, spread over the pixels it touches."""
    c = Canvas(width_px=10, height_px=10, pitch_mm=5.0, top_mm=50.0)
    c.add_box("steel", 11.0, 0.0, 13.0, 50.0, 1000.0, 7.85)
    mass_kg = c.total_mass_kg("steel")
    expected_kg = 0.2 * 5.0 * 100.0 * 7.85 / 1000.0  # 2 mm x 50 mm x 1000 mm of steel
    assert mass_kg == pytest.approx(expected_kg, rel=1e-4)


def test_spectra_are_normalised_and_harder_at_higher_energy():
    s6, s4 = linac_spectrum(6.0), linac_spectrum(4.0)
    assert s6.weights.sum() == pytest.approx(1.0)
    assert s4.weights.sum() == pytest.approx(1.0)
    assert s6.energies_mev.max() < 6.0
    assert s6.mean_energy_mev > s4.mean_energy_mev > 1.0
    with pytest.raises(ValueError, match="too low"):
        linac_spectrum(0.15)


def test_beam_hardening_lowers_effective_attenuation_with_thickness():
    """Polychromatic: -ln(T)/mass falls as the beam hardens through more material."""
    s = linac_spectrum(6.0)
    per_mass = []
    for mass in (10.0, 100.0, 300.0):
        t = polychromatic_transmission({"steel": np.full((1, 1), mass, np.float32)}, s)[0, 0]
        per_mass.append(-np.log(t) / mass)
    assert per_mass[0] > per_mass[1] > per_mass[2]


@pytest.mark.parametrize("mass_g_cm2", [40.0, 80.0, 150.0])
def test_dual_energy_ratio_orders_organic_steel_lead(mass_g_cm2):
    """ln T_low / ln T_high falls with Z at MeV energies (pair production at high energy)."""
    high, low = linac_spectrum(6.0), linac_spectrum(4.0)
    organic = dual_energy_log_ratio("food", mass_g_cm2, high, low)
    steel = dual_energy_log_ratio("steel", mass_g_cm2, high, low)
    lead = dual_energy_log_ratio("lead", mass_g_cm2, high, low)
    assert organic > steel > lead
    assert organic > 1.0  # the low energy always attenuates more


def test_noise_variance_grows_with_counts_as_poisson():
    det = DetectorModel(
        air_quanta=5000.0,
        air_level_dn=50000.0,
        blur_sigma_px=0,
        scatter_fraction=0,
        pulse_sigma=0,
        row_gain_sigma=0,
        read_noise_dn=0,
    )
    rng = np.random.default_rng(0)
    levels = (0.05, 0.2, 0.5, 1.0)
    t = np.concatenate([np.full((200, 200), v, np.float32) for v in levels], axis=1)
    img = det.expose(t, rng).astype(np.float64)
    dn_per_quantum = det.air_level_dn / det.air_quanta
    means, variances = [], []
    for k, v in enumerate(levels):
        patch = img[:, k * 200 : (k + 1) * 200]
        means.append(patch.mean())
        variances.append(patch.var())
        assert patch.mean() == pytest.approx(v * det.air_level_dn, rel=0.01)
        # Poisson: variance of counts = mean counts, so var(DN) = mean(DN) * DN per quantum.
        assert patch.var() / patch.mean() == pytest.approx(dn_per_quantum, rel=0.08)
    assert all(np.diff(variances) > 0)


def test_detector_output_is_16_bit_and_air_sits_at_its_level():
    det = DetectorModel()
    img = det.expose(np.ones((64, 256), np.float32), np.random.default_rng(1))
    assert img.dtype == np.uint16
    assert np.median(img) == pytest.approx(det.air_level_dn, rel=0.02)


def test_shipped_material_calibration_matches_the_physics():
    shipped = json.loads(DEFAULT_PATH.read_text())
    fresh = calibration(*shipped["energies_mv"])
    assert shipped["a_high"] == fresh["a_high"]
    for cls in ("organic", "mixed", "metal"):
        np.testing.assert_allclose(shipped[cls], fresh[cls], atol=2e-5)
    # Organic above mixed above metal once there is enough material to tell.
    a = np.array(shipped["a_high"])
    thick = a >= 0.5
    assert np.all(np.array(shipped["organic"])[thick] > np.array(shipped["mixed"])[thick])
    assert np.all(np.array(shipped["mixed"])[thick] > np.array(shipped["metal"])[thick])


def _rows_with_mass(c: Canvas) -> np.ndarray:
    return np.flatnonzero(c.maps["steel"].sum(axis=1) > 0)


@pytest.mark.parametrize("z", [-1000.0, 0.0, 1000.0])
def test_fan_beam_magnifies_each_depth_about_the_source_height(z: float):
    fan = Fan(source_y_mm=600.0, source_dist_mm=10000.0)
    c = Canvas(width_px=40, height_px=900, pitch_mm=5.0, top_mm=4500.0, fan=fan)
    with c.at_z(z):
        c.add_box("steel", 0.0, 3000.0, 100.0, 3020.0, 2.0, 7.85)
    rows = _rows_with_mass(c)
    # By hand: apparent height = 600 + (y - 600) * 10000 / (10000 + z).
    for y, row in ((3020.0, rows.min()), (3000.0, rows.max() + 1)):
        expected = (4500.0 - (600.0 + (y - 600.0) * 10000.0 / (10000.0 + z))) / 5.0
        assert abs(row - expected) <= 1.0
    # The near side (z < 0) appears higher than the far side.
    if z != 0.0:
        centre = Canvas(width_px=40, height_px=900, pitch_mm=5.0, top_mm=4500.0, fan=fan)
        with centre.at_z(0.0):
            centre.add_box("steel", 0.0, 3000.0, 100.0, 3020.0, 2.0, 7.85)
        assert (rows.mean() < _rows_with_mass(centre).mean()) == (z < 0)


def test_wide_objects_keep_their_mass_across_slabs_and_smear():
    fan = Fan(yaw_rad=0.01)
    c = Canvas(width_px=200, height_px=900, pitch_mm=5.0, top_mm=4500.0, fan=fan)
    with c.at_z(-1176.0, 1176.0):  # a floor plate across the whole container
        c.add_box("wood", 100.0, 1400.0, 900.0, 1428.0, 2352.0, 0.65)
    true_kg = 0.8 * 0.028 * 2.352 * 650.0  # m^3 x kg/m^3
    # Summed in the image plane, each slab counts at its vertical magnification.
    slab_centres = [-1176.0 + (k + 0.5) * 2352.0 / 4 for k in range(4)]
    magnification = float(np.mean([fan.scale(z) for z in slab_centres]))
    assert c.total_mass_kg("wood") == pytest.approx(true_kg * magnification, rel=1e-4)
    # Seen edge-on it is no longer a 28 mm line but a band several times taller.
    band_rows = np.flatnonzero(c.maps["wood"].sum(axis=1) > 0)
    assert band_rows.size * 5.0 > 5 * 28.0


def test_vehicle_yaw_shifts_deep_parts_along_the_scan():
    fan = Fan(source_y_mm=600.0, source_dist_mm=10000.0, yaw_rad=np.deg2rad(1.0))
    c = Canvas(width_px=100, height_px=100, pitch_mm=5.0, top_mm=1000.0, fan=fan)
    for z in (-1000.0, 1000.0):
        with c.at_z(z):
            c.add_box("steel", 200.0, 600.0, 205.0, 700.0, 2.0, 7.85)
    cols = np.flatnonzero(c.maps["steel"].sum(axis=0) > 0)
    # 2000 mm apart in depth at 1 degree: 2000 * tan(1 deg) = 34.9 mm = 7 px apart.
    assert (cols.max() - cols.min()) * 5.0 == pytest.approx(34.9 + 5.0, abs=5.0)

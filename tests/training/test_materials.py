"""Tests for the NIST mass attenuation data and the material mixtures built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.synth.materials import (
    ELEMENT_MU_RHO,
    ENERGY_GRID_MEV,
    MATERIALS,
    Material,
    get_material,
    linear_attenuation_per_mm,
    mass_attenuation,
)

REQUIRED_MATERIALS = (
    "food", "textile", "paper", "tobacco", "wood", "cocaine", "heroin", "plastic", "rubber",
    "water", "tissue", "bone", "aluminium", "steel", "copper", "brass", "lead", "glass",
    "ceramic", "air",
)  # fmt: skip


# Spot values (cm^2/g) read off NIST SRD 126 (Hubbell & Seltzer) Table 3 / Table 4 pages,
# https://physics.nist.gov/PhysRefData/XrayMassCoef/ElemTab/zNN.html and .../ComTab/water.html.
@pytest.mark.parametrize(
    ("material", "energy_mev", "nist"),
    [
        ("water", 1.0, 7.072e-02),
        ("water", 6.0, 2.770e-02),
        ("water", 0.1, 1.707e-01),
        ("lead", 1.0, 7.102e-02),
        ("lead", 4.0, 4.197e-02),
        ("lead", 0.1, 5.549e00),
        ("lead", 20.0, 6.206e-02),
        ("aluminium", 1.0, 6.146e-02),
        ("aluminium", 10.0, 2.318e-02),
        ("copper", 6.0, 3.108e-02),
        ("plastic", 1.0, 7.262e-02),  # NIST polyethylene, Table 4
        ("tissue", 1.0, 7.006e-02),  # NIST soft tissue ICRU-44, Table 4
        ("bone", 1.0, 6.566e-02),  # NIST cortical bone ICRU-44, Table 4
        ("air", 1.0, 6.358e-02),  # NIST dry air, Table 4
        ("concrete", 6.0, 2.697e-02),  # NIST ordinary concrete, Table 4
    ],
)
def test_spot_values_match_nist(material: str, energy_mev: float, nist: float) -> None:
    # Compounds come from the mixture rule, so they match Table 4 to its rounding (~0.3%).
    assert mass_attenuation(material, energy_mev) == pytest.approx(nist, rel=3e-3)


@pytest.mark.parametrize(
    ("element", "energy_mev", "nist"),
    [
        ("Fe", 6.0, 3.057e-02),
        ("Fe", 1.0, 5.995e-02),
        ("H", 1.0, 1.263e-01),
        ("C", 1.0, 6.361e-02),
        ("O", 10.0, 2.089e-02),
        ("Pb", 8.0, 4.675e-02),
        ("Zn", 1.0, 5.941e-02),
    ],
)
def test_element_table_values(element: str, energy_mev: float, nist: float) -> None:
    idx = int(np.flatnonzero(np.isclose(ENERGY_GRID_MEV, energy_mev))[0])
    assert ELEMENT_MU_RHO[element][idx] == nist


# NIST Table 4 mu/rho on the whole grid for the reference mixtures whose Table 2
# compositions the module uses: the mixture rule must reproduce them to rounding.
NIST_TABLE4 = {
    "water": (  # ComTab/water.html
        1.707e-01, 1.505e-01, 1.370e-01, 1.186e-01, 1.061e-01, 9.687e-02, 8.956e-02,
        7.865e-02, 7.072e-02, 6.323e-02, 5.754e-02, 4.942e-02, 3.969e-02, 3.403e-02,
        3.031e-02, 2.770e-02, 2.429e-02, 2.219e-02, 1.941e-02, 1.813e-02,
    ),
    "plastic": (  # ComTab/polyethylene.html
        1.719e-01, 1.534e-01, 1.402e-01, 1.217e-01, 1.089e-01, 9.947e-02, 9.198e-02,
        8.078e-02, 7.262e-02, 6.495e-02, 5.910e-02, 5.064e-02, 4.045e-02, 3.444e-02,
        3.045e-02, 2.760e-02, 2.383e-02, 2.145e-02, 1.819e-02, 1.658e-02,
    ),
    "tissue": (  # ComTab/tissue.html
        1.693e-01, 1.492e-01, 1.358e-01, 1.175e-01, 1.052e-01, 9.598e-02, 8.873e-02,
        7.793e-02, 7.006e-02, 6.265e-02, 5.701e-02, 4.895e-02, 3.931e-02, 3.369e-02,
        3.000e-02, 2.741e-02, 2.401e-02, 2.193e-02, 1.915e-02, 1.787e-02,
    ),
    "bone": (  # ComTab/bone.html
        1.855e-01, 1.480e-01, 1.309e-01, 1.113e-01, 9.908e-02, 9.022e-02, 8.332e-02,
        7.308e-02, 6.566e-02, 5.871e-02, 5.346e-02, 4.607e-02, 3.745e-02, 3.257e-02,
        2.946e-02, 2.734e-02, 2.467e-02, 2.314e-02, 2.132e-02, 2.068e-02,
    ),
    "air": (  # ComTab/air.html
        1.541e-01, 1.356e-01, 1.233e-01, 1.067e-01, 9.549e-02, 8.712e-02, 8.055e-02,
        7.074e-02, 6.358e-02, 5.687e-02, 5.175e-02, 4.447e-02, 3.581e-02, 3.079e-02,
        2.751e-02, 2.522e-02, 2.225e-02, 2.045e-02, 1.810e-02, 1.705e-02,
    ),
    "concrete": (  # ComTab/concrete.html
        1.738e-01, 1.436e-01, 1.282e-01, 1.097e-01, 9.783e-02, 8.915e-02, 8.236e-02,
        7.227e-02, 6.495e-02, 5.807e-02, 5.288e-02, 4.557e-02, 3.701e-02, 3.217e-02,
        2.908e-02, 2.697e-02, 2.432e-02, 2.278e-02, 2.096e-02, 2.030e-02,
    ),
}  # fmt: skip


@pytest.mark.parametrize("material", sorted(NIST_TABLE4))
def test_mixture_rule_reproduces_nist_table4(material: str) -> None:
    # Also guards the element table against transcription slips in H..Fe.
    got = mass_attenuation(material, ENERGY_GRID_MEV)
    np.testing.assert_allclose(got, NIST_TABLE4[material], rtol=4e-3)


def test_energy_grid() -> None:
    assert ENERGY_GRID_MEV.dtype == np.float64
    assert ENERGY_GRID_MEV.shape == (20,)
    assert ENERGY_GRID_MEV[0] == 0.1 and ENERGY_GRID_MEV[-1] == 20.0
    assert np.all(np.diff(ENERGY_GRID_MEV) > 0)
    for values in ELEMENT_MU_RHO.values():
        assert len(values) == 20
        assert all(v > 0 for v in values)


GRID_NEIGHBOURS = [(0.1, 0.15), (0.8, 1.0), (3.0, 4.0), (6.0, 8.0), (15.0, 20.0)]


@pytest.mark.parametrize(("lo", "hi"), GRID_NEIGHBOURS)
@pytest.mark.parametrize("material", ["water", "lead", "steel", "food"])
def test_interpolation_is_log_log_between_neighbours(material: str, lo: float, hi: float) -> None:
    mu_lo, mu_hi = mass_attenuation(material, np.array([lo, hi]))
    e = math.sqrt(lo * hi) * 1.05  # not the log midpoint, to exercise the slope
    t = (math.log(e) - math.log(lo)) / (math.log(hi) - math.log(lo))
    expected = math.exp((1 - t) * math.log(mu_lo) + t * math.log(mu_hi))
    got = float(mass_attenuation(material, e))
    assert min(mu_lo, mu_hi) <= got <= max(mu_lo, mu_hi)
    assert got == pytest.approx(expected, rel=1e-12)


def test_grid_points_are_reproduced_exactly_and_shapes_kept() -> None:
    got = mass_attenuation("lead", ENERGY_GRID_MEV)
    np.testing.assert_allclose(got, ELEMENT_MU_RHO["Pb"], rtol=1e-12)
    grid2d = np.array([[1.0, 2.0], [6.0, 10.0]])
    assert mass_attenuation("water", grid2d).shape == (2, 2)
    assert np.ndim(mass_attenuation("water", 1.0)) == 0


@pytest.mark.parametrize("name", sorted(MATERIALS))
def test_weight_fractions_sum_to_one(name: str) -> None:
    mat = MATERIALS[name]
    assert mat.name == name
    assert sum(mat.composition.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(w > 0 for w in mat.composition.values())
    assert set(mat.composition) <= set(ELEMENT_MU_RHO)
    assert mat.density_g_cm3 > 0
    assert mat.description


def test_required_materials_present() -> None:
    assert set(REQUIRED_MATERIALS) <= set(MATERIALS)


@pytest.mark.parametrize(
    ("name", "density"),
    [("water", 1.0), ("tissue", 1.03), ("bone", 1.85), ("aluminium", 2.70), ("steel", 7.85),
     ("copper", 8.96), ("brass", 8.5), ("lead", 11.35), ("plastic", 0.94), ("air", 1.205e-3)],
)  # fmt: skip
def test_nominal_densities(name: str, density: float) -> None:
    assert get_material(name).density_g_cm3 == pytest.approx(density)


def test_compton_region_roughly_equal_across_z() -> None:
    # At 1 MeV Compton scattering dominates and mu/rho ~ Z/A: all within ~20%
    # (hydrogen-rich water/plastic highest because Z/A of H is 1).
    names = ("water", "plastic", "aluminium", "steel", "lead")
    values = {m: float(mass_attenuation(m, 1.0)) for m in names}
    assert max(values.values()) / min(values.values()) < 1.25
    assert values["lead"] == pytest.approx(values["water"], rel=0.05)


@pytest.mark.parametrize("energy", [6.0, 8.0, 10.0])
def test_pair_production_makes_lead_exceed_water(energy: float) -> None:
    assert mass_attenuation("lead", energy) > 1.5 * mass_attenuation("water", energy)
    assert mass_attenuation("steel", energy) > mass_attenuation("water", energy)


def test_lead_minimum_near_3_to_4_mev_water_keeps_falling() -> None:
    fine = np.geomspace(0.5, 20.0, 400)
    lead = mass_attenuation("lead", fine)
    e_min = fine[int(np.argmin(lead))]
    assert 3.0 <= e_min <= 4.5
    water = mass_attenuation("water", fine)
    assert np.all(np.diff(water) < 0)


def test_dual_energy_ratio_separates_organics_from_metals() -> None:
    # What a dual-energy scanner exploits: mu(2 MeV)/mu(8 MeV) falls as Z rises, because
    # pair production (~Z^2) lifts the high-energy end for heavy elements.
    def ratio(m: str) -> float:
        return float(mass_attenuation(m, 2.0) / mass_attenuation(m, 8.0))

    assert ratio("plastic") > ratio("water") > ratio("aluminium") > ratio("steel") > ratio("lead")


@pytest.mark.parametrize("energy", [0.05, 0.0999, 20.01, 100.0, float("nan"), -1.0])
def test_out_of_range_energy_raises(energy: float) -> None:
    with pytest.raises(ValueError, match="MeV"):
        mass_attenuation("water", energy)
    with pytest.raises(ValueError):
        mass_attenuation("water", np.array([1.0, energy]))


def test_unknown_material_raises_keyerror_listing_known() -> None:
    with pytest.raises(KeyError) as info:
        get_material("unobtainium")
    msg = str(info.value)
    assert "unobtainium" in msg
    assert "water" in msg and "lead" in msg
    with pytest.raises(KeyError, match="lead"):
        mass_attenuation("leed", 1.0)


def test_linear_attenuation_per_mm() -> None:
    mu_rho = float(mass_attenuation("lead", 1.0))
    nominal = float(linear_attenuation_per_mm("lead", 1.0))
    assert nominal == pytest.approx(mu_rho * 11.35 / 10.0)
    custom = float(linear_attenuation_per_mm("lead", 1.0, density_g_cm3=5.0))
    assert custom == pytest.approx(mu_rho * 0.5)
    # Half-value layer of lead at 1 MeV is ~8.6 mm.
    assert math.log(2) / nominal == pytest.approx(8.6, abs=0.1)


def test_custom_material_object() -> None:
    pb_water = Material("half", 5.0, {"Pb": 0.5, "H": 0.5 * 0.111898, "O": 0.5 * 0.888102}, "test")
    expected = 0.5 * mass_attenuation("lead", 6.0) + 0.5 * mass_attenuation("water", 6.0)
    assert mass_attenuation(pb_water, 6.0) == pytest.approx(expected, rel=1e-9)
    assert float(linear_attenuation_per_mm(pb_water, 6.0)) == pytest.approx(float(expected) * 0.5)
    assert hash(pb_water) == hash(Material("half", 5.0, dict(pb_water.composition), "test"))


def test_cached_arrays_are_not_mutated_by_callers() -> None:
    first = mass_attenuation("steel", ENERGY_GRID_MEV)
    first *= 0.0
    np.testing.assert_allclose(mass_attenuation("steel", 6.0), 3.054e-02, rtol=2e-3)

"""Mass attenuation coefficients of cargo materials over the MeV range of cargo linacs.

A 4-9 MV bremsstrahlung beam has photons from about 0.1 MeV up to its end point,
where Compton scattering dominates and, above a few MeV, pair production grows as
Z^2. That Z dependence above ~3 MeV is what a dual-energy cargo scanner uses to
tell organics from metals, so the data must reach well past 1 MeV; the usual
Python X-ray tables (xraydb / xraylib Elam data) stop at 1 MeV, so this module
carries its own copy of the NIST figures.

Source of every element's mu/rho (total attenuation with coherent scattering,
which agrees with XCOM):

    J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation
    Coefficients and Mass Energy-Absorption Coefficients from 1 keV to 20 MeV
    for Elements Z = 1 to 92 and 48 Additional Substances of Dosimetric
    Interest", NIST Standard Reference Database 126 (NISTIR 5632), Table 3,
    https://physics.nist.gov/PhysRefData/XrayMassCoef/tab3.html
    (one page per element: .../XrayMassCoef/ElemTab/zNN.html).

The figures were taken from a text copy of those pages (one CSV per element,
each headed with its NIST URL) in the public repository ehsteve/roentgen,
roentgen/data/elements/zNN.csv. Compositions of the NIST reference mixtures
(water, ICRU-44 soft tissue, ICRU-44 cortical bone, polyethylene, ordinary
concrete, dry air) are the weight fractions of NIST Table 2,
https://physics.nist.gov/PhysRefData/XrayMassCoef/tab2.html; the tests check
that the mixture rule reproduces NIST Table 4 for those materials.

Compounds use the mixture rule mu/rho = sum_i w_i (mu/rho)_i with weight
fractions w_i; between the 20 grid energies (no absorption edges lie in
0.1-20 MeV for these elements) mu/rho is interpolated linearly in log-log.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# NIST standard energy grid, 0.1-20 MeV (Table 3 rows without edge entries).
ENERGY_GRID_MEV: np.ndarray = np.array(
    [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25,
     1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0],
    dtype=np.float64,
)  # fmt: skip
ENERGY_GRID_MEV.setflags(write=False)

# mu/rho (cm^2/g) at ENERGY_GRID_MEV, NIST SRD 126 Table 3, copied verbatim
# (4 significant figures as published). Each row: the element's NIST page.
ELEMENT_MU_RHO: Mapping[str, tuple[float, ...]] = types.MappingProxyType(
    {
        # https://physics.nist.gov/PhysRefData/XrayMassCoef/ElemTab/z01.html (hydrogen)
        "H": (
            2.944e-01, 2.651e-01, 2.429e-01, 2.112e-01, 1.893e-01, 1.729e-01, 1.599e-01,
            1.405e-01, 1.263e-01, 1.129e-01, 1.027e-01, 8.769e-02, 6.921e-02, 5.806e-02,
            5.049e-02, 4.498e-02, 3.746e-02, 3.254e-02, 2.539e-02, 2.153e-02,
        ),
        # .../ElemTab/z06.html (carbon, graphite)
        "C": (
            1.514e-01, 1.347e-01, 1.229e-01, 1.066e-01, 9.546e-02, 8.715e-02, 8.058e-02,
            7.076e-02, 6.361e-02, 5.690e-02, 5.179e-02, 4.442e-02, 3.562e-02, 3.047e-02,
            2.708e-02, 2.469e-02, 2.154e-02, 1.959e-02, 1.698e-02, 1.575e-02,
        ),
        # .../ElemTab/z07.html (nitrogen)
        "N": (
            1.529e-01, 1.353e-01, 1.233e-01, 1.068e-01, 9.557e-02, 8.719e-02, 8.063e-02,
            7.081e-02, 6.364e-02, 5.693e-02, 5.180e-02, 4.450e-02, 3.579e-02, 3.073e-02,
            2.742e-02, 2.511e-02, 2.209e-02, 2.024e-02, 1.782e-02, 1.673e-02,
        ),
        # .../ElemTab/z08.html (oxygen)
        "O": (
            1.551e-01, 1.361e-01, 1.237e-01, 1.070e-01, 9.566e-02, 8.729e-02, 8.070e-02,
            7.087e-02, 6.372e-02, 5.697e-02, 5.185e-02, 4.459e-02, 3.597e-02, 3.100e-02,
            2.777e-02, 2.552e-02, 2.263e-02, 2.089e-02, 1.866e-02, 1.770e-02,
        ),
        # .../ElemTab/z11.html (sodium)
        "Na": (
            1.585e-01, 1.335e-01, 1.199e-01, 1.029e-01, 9.185e-02, 8.372e-02, 7.736e-02,
            6.788e-02, 6.100e-02, 5.454e-02, 4.968e-02, 4.282e-02, 3.487e-02, 3.037e-02,
            2.753e-02, 2.559e-02, 2.319e-02, 2.181e-02, 2.023e-02, 1.970e-02,
        ),
        # .../ElemTab/z12.html (magnesium)
        "Mg": (
            1.686e-01, 1.394e-01, 1.245e-01, 1.065e-01, 9.492e-02, 8.647e-02, 7.988e-02,
            7.008e-02, 6.296e-02, 5.629e-02, 5.129e-02, 4.426e-02, 3.613e-02, 3.159e-02,
            2.873e-02, 2.681e-02, 2.445e-02, 2.313e-02, 2.168e-02, 2.127e-02,
        ),
        # .../ElemTab/z13.html (aluminum)
        "Al": (
            1.704e-01, 1.378e-01, 1.223e-01, 1.042e-01, 9.276e-02, 8.445e-02, 7.802e-02,
            6.841e-02, 6.146e-02, 5.496e-02, 5.006e-02, 4.324e-02, 3.541e-02, 3.106e-02,
            2.836e-02, 2.655e-02, 2.437e-02, 2.318e-02, 2.195e-02, 2.168e-02,
        ),
        # .../ElemTab/z14.html (silicon)
        "Si": (
            1.835e-01, 1.448e-01, 1.275e-01, 1.082e-01, 9.614e-02, 8.748e-02, 8.077e-02,
            7.082e-02, 6.361e-02, 5.688e-02, 5.183e-02, 4.480e-02, 3.678e-02, 3.240e-02,
            2.967e-02, 2.788e-02, 2.574e-02, 2.462e-02, 2.352e-02, 2.338e-02,
        ),
        # .../ElemTab/z15.html (phosphorus)
        "P": (
            1.865e-01, 1.432e-01, 1.250e-01, 1.055e-01, 9.359e-02, 8.511e-02, 7.854e-02,
            6.884e-02, 6.182e-02, 5.526e-02, 5.039e-02, 4.358e-02, 3.590e-02, 3.172e-02,
            2.915e-02, 2.747e-02, 2.552e-02, 2.452e-02, 2.364e-02, 2.363e-02,
        ),
        # .../ElemTab/z16.html (sulfur)
        "S": (
            2.020e-01, 1.506e-01, 1.302e-01, 1.091e-01, 9.665e-02, 8.781e-02, 8.102e-02,
            7.098e-02, 6.373e-02, 5.697e-02, 5.193e-02, 4.498e-02, 3.715e-02, 3.293e-02,
            3.036e-02, 2.872e-02, 2.682e-02, 2.589e-02, 2.517e-02, 2.529e-02,
        ),
        # .../ElemTab/z17.html (chlorine)
        "Cl": (
            2.050e-01, 1.480e-01, 1.266e-01, 1.054e-01, 9.311e-02, 8.453e-02, 7.795e-02,
            6.826e-02, 6.128e-02, 5.478e-02, 4.994e-02, 4.328e-02, 3.585e-02, 3.188e-02,
            2.950e-02, 2.798e-02, 2.628e-02, 2.549e-02, 2.496e-02, 2.520e-02,
        ),
        # .../ElemTab/z18.html (argon; only for dry air)
        "Ar": (
            2.043e-01, 1.427e-01, 1.205e-01, 9.953e-02, 8.776e-02, 7.958e-02, 7.335e-02,
            6.419e-02, 5.762e-02, 5.150e-02, 4.695e-02, 4.074e-02, 3.384e-02, 3.019e-02,
            2.802e-02, 2.667e-02, 2.517e-02, 2.451e-02, 2.418e-02, 2.453e-02,
        ),
        # .../ElemTab/z19.html (potassium)
        "K": (
            2.345e-01, 1.582e-01, 1.319e-01, 1.080e-01, 9.495e-02, 8.600e-02, 7.922e-02,
            6.929e-02, 6.216e-02, 5.556e-02, 5.068e-02, 4.399e-02, 3.666e-02, 3.282e-02,
            3.054e-02, 2.915e-02, 2.766e-02, 2.704e-02, 2.687e-02, 2.737e-02,
        ),
        # .../ElemTab/z20.html (calcium)
        "Ca": (
            2.571e-01, 1.674e-01, 1.376e-01, 1.116e-01, 9.783e-02, 8.851e-02, 8.148e-02,
            7.122e-02, 6.388e-02, 5.709e-02, 5.207e-02, 4.524e-02, 3.780e-02, 3.395e-02,
            3.170e-02, 3.035e-02, 2.892e-02, 2.839e-02, 2.838e-02, 2.903e-02,
        ),
        # .../ElemTab/z25.html (manganese; alloying element of steel)
        "Mn": (
            3.367e-01, 1.838e-01, 1.391e-01, 1.062e-01, 9.133e-02, 8.192e-02, 7.509e-02,
            6.537e-02, 5.852e-02, 5.224e-02, 4.769e-02, 4.162e-02, 3.524e-02, 3.213e-02,
            3.045e-02, 2.952e-02, 2.875e-02, 2.871e-02, 2.951e-02, 3.068e-02,
        ),
        # .../ElemTab/z26.html (iron)
        "Fe": (
            3.717e-01, 1.964e-01, 1.460e-01, 1.099e-01, 9.400e-02, 8.414e-02, 7.704e-02,
            6.699e-02, 5.995e-02, 5.350e-02, 4.883e-02, 4.265e-02, 3.621e-02, 3.312e-02,
            3.146e-02, 3.057e-02, 2.991e-02, 2.994e-02, 3.092e-02, 3.224e-02,
        ),
        # .../ElemTab/z29.html (copper)
        "Cu": (
            4.584e-01, 2.217e-01, 1.559e-01, 1.119e-01, 9.413e-02, 8.362e-02, 7.625e-02,
            6.605e-02, 5.901e-02, 5.261e-02, 4.803e-02, 4.205e-02, 3.599e-02, 3.318e-02,
            3.177e-02, 3.108e-02, 3.074e-02, 3.103e-02, 3.247e-02, 3.408e-02,
        ),
        # .../ElemTab/z30.html (zinc)
        "Zn": (
            4.973e-01, 2.341e-01, 1.617e-01, 1.141e-01, 9.539e-02, 8.450e-02, 7.695e-02,
            6.656e-02, 5.941e-02, 5.296e-02, 4.834e-02, 4.235e-02, 3.634e-02, 3.360e-02,
            3.225e-02, 3.160e-02, 3.138e-02, 3.175e-02, 3.335e-02, 3.509e-02,
        ),
        # .../ElemTab/z82.html (lead; 0.1 MeV lies just above the K edge at 88 keV)
        "Pb": (
            5.549e00, 2.014e00, 9.985e-01, 4.031e-01, 2.323e-01, 1.614e-01, 1.248e-01,
            8.870e-02, 7.102e-02, 5.876e-02, 5.222e-02, 4.606e-02, 4.234e-02, 4.197e-02,
            4.272e-02, 4.391e-02, 4.675e-02, 4.972e-02, 5.658e-02, 6.206e-02,
        ),
    }
)  # fmt: skip

# Standard atomic weights (g/mol, IUPAC abridged values), only to turn chemical
# formulas into weight fractions.
_ATOMIC_WEIGHT: Mapping[str, float] = types.MappingProxyType(
    {
        "H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.990, "Mg": 24.305,
        "Al": 26.982, "Si": 28.085, "P": 30.974, "S": 32.06, "Cl": 35.45, "Ar": 39.948,
        "K": 39.098, "Ca": 40.078, "Mn": 54.938, "Fe": 55.845, "Cu": 63.546, "Zn": 65.38,
        "Pb": 207.2,
    }
)  # fmt: skip


@dataclass(frozen=True)
class Material:
    """A material the scene generator can place: nominal density and elemental make-up."""

    name: str
    density_g_cm3: float
    composition: Mapping[str, float]  # element symbol -> weight fraction (sums to 1)
    description: str

    def __hash__(self) -> int:
        # The composition mapping is not hashable itself; hash its sorted items.
        return hash((self.name, self.density_g_cm3, tuple(sorted(self.composition.items()))))


def _formula(**atoms: int) -> dict[str, float]:
    """Weight fractions of a molecule given as atom counts, e.g. _formula(H=2, O=1)."""
    masses = {el: n * _ATOMIC_WEIGHT[el] for el, n in atoms.items()}
    total = sum(masses.values())
    return {el: m / total for el, m in masses.items()}


def _blend(*parts: tuple[float, Mapping[str, float]]) -> dict[str, float]:
    """Weight fractions of a blend of components given as (mass share, composition)."""
    out: dict[str, float] = {}
    for share, comp in parts:
        for el, w in comp.items():
            out[el] = out.get(el, 0.0) + share * w
    return out


def _make(
    name: str, density: float, composition: Mapping[str, float], description: str
) -> Material:
    """Build a Material, normalising the fractions so published 6-digit sums are exactly 1."""
    unknown = set(composition) - set(ELEMENT_MU_RHO)
    if unknown:
        raise ValueError(f"{name}: no attenuation data for elements {sorted(unknown)}")
    total = sum(composition.values())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"{name}: weight fractions sum to {total}, not 1")
    comp = {el: w / total for el, w in composition.items() if w > 0}
    return Material(name, float(density), types.MappingProxyType(comp), description)


# Molecules used in several materials.
_WATER = _formula(H=2, O=1)
_CELLULOSE = _formula(C=6, H=10, O=5)  # also stands for starch and hemicellulose
_LIGNIN = _formula(C=10, H=12, O=3)  # coniferyl-alcohol unit
_SIO2 = _formula(Si=1, O=2)
_AL2O3 = _formula(Al=2, O=3)
_NA2O = _formula(Na=2, O=1)
_K2O = _formula(K=2, O=1)
_CAO = _formula(Ca=1, O=1)
_MGO = _formula(Mg=1, O=1)

# NIST Table 2 compositions (https://physics.nist.gov/PhysRefData/XrayMassCoef/tab2.html).
_NIST_WATER = {"H": 0.111898, "O": 0.888102}
_NIST_SOFT_TISSUE_ICRU44 = {
    "H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002,
    "P": 0.003, "S": 0.003, "Cl": 0.002, "K": 0.003,
}  # fmt: skip
_NIST_CORTICAL_BONE_ICRU44 = {
    "H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001,
    "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225,
}  # fmt: skip
_NIST_POLYETHYLENE = {"H": 0.143716, "C": 0.856284}
_NIST_CONCRETE_ORDINARY = {
    "H": 0.022100, "C": 0.002484, "O": 0.574930, "Na": 0.015208, "Mg": 0.001266,
    "Al": 0.019953, "Si": 0.304627, "K": 0.010045, "Ca": 0.042951, "Fe": 0.006435,
}  # fmt: skip
_NIST_AIR_DRY = {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}

_MATERIAL_LIST: tuple[Material, ...] = (
    # --- organics -------------------------------------------------------------
    _make(
        "food",
        1.3,
        _blend((0.45, _WATER), (0.53, _CELLULOSE), (0.02, _formula(Na=1, Cl=1))),
        "Mixed foodstuff: 45% water, 53% carbohydrate (C6H10O5), 2% salt by weight. Solid "
        "density; packed cartons are ~0.6 bulk, the scene code scales the fill.",
    ),
    _make("textile", 1.5, _CELLULOSE, "Cotton / cellulose fibre C6H10O5 (fibre density)."),
    _make("paper", 0.9, _CELLULOSE, "Paper / cardboard stock as cellulose C6H10O5, sheet density."),
    _make(
        "tobacco",
        1.2,
        _blend(
            (0.80, _CELLULOSE),
            (0.10, _WATER),
            (0.05, _formula(K=2, C=1, O=3)),
            (0.05, _formula(Ca=1, C=1, O=3)),
        ),
        "Cured leaf: cellulose-like dry matter, 10% moisture and ~10% K/Ca ash (as K2CO3, "
        "CaCO3). Leaf-tissue density (approximate); packed cartons/bales are ~0.3-0.4 g/cm^3 "
        "bulk, the scene code scales the fill.",
    ),
    _make(
        "wood",
        0.6,
        _blend((0.65, _CELLULOSE), (0.27, _LIGNIN), (0.08, _WATER)),
        "Seasoned wood: cellulose + hemicellulose (as C6H10O5), lignin (C10H12O3), 8% "
        "moisture; bulk density of a typical pallet/crate timber.",
    ),
    _make(
        "cocaine",
        1.22,
        _formula(C=17, H=21, N=1, O=4),
        "Cocaine base C17H21NO4; compacted bricks are ~1.1-1.2 g/cm^3.",
    ),
    _make("heroin", 1.3, _formula(C=21, H=23, N=1, O=5), "Heroin (diacetylmorphine) C21H23NO5."),
    _make("plastic", 0.94, _NIST_POLYETHYLENE, "Polyethylene (NIST Table 2 composition)."),
    _make(
        "rubber",
        1.15,
        _blend(
            (0.63, _formula(C=5, H=8)),
            (0.32, {"C": 1.0}),
            (0.03, _formula(Zn=1, O=1)),
            (0.02, {"S": 1.0}),
        ),
        "Tyre-type rubber: natural rubber (C5H8)n with 32% carbon black, 3% ZnO, 2% sulfur.",
    ),
    _make(
        "explosive",
        1.72,
        _blend((0.91, _formula(C=3, H=6, N=6, O=6)), (0.09, _formula(C=4, H=8))),
        "C-4-like plastic explosive: 91% RDX (C3H6N6O6) with 9% hydrocarbon binder (as C4H8).",
    ),
    # --- water and body -------------------------------------------------------
    _make("water", 1.0, _NIST_WATER, "Liquid water (NIST Table 2)."),
    _make(
        "tissue",
        1.03,
        _NIST_SOFT_TISSUE_ICRU44,
        "Soft tissue, ICRU-44 composition (NIST Table 2 'Tissue, Soft (ICRU-44)').",
    ),
    _make(
        "bone",
        1.85,
        _NIST_CORTICAL_BONE_ICRU44,
        "Cortical bone, ICRU-44 composition (NIST Table 2 'Bone, Cortical (ICRU-44)').",
    ),
    # --- metals ---------------------------------------------------------------
    _make("aluminium", 2.70, {"Al": 1.0}, "Aluminium."),
    _make(
        "steel",
        7.85,
        {"Fe": 0.986, "Mn": 0.010, "C": 0.002, "Si": 0.002},
        "Mild carbon steel: Fe with ~1% Mn, 0.2% C, 0.2% Si.",
    ),
    _make("copper", 8.96, {"Cu": 1.0}, "Copper."),
    _make("brass", 8.5, {"Cu": 0.65, "Zn": 0.35}, "Yellow brass, Cu 65% Zn 35%."),
    _make("lead", 11.35, {"Pb": 1.0}, "Lead."),
    # --- minerals -------------------------------------------------------------
    _make(
        "glass",
        2.5,
        _blend((0.72, _SIO2), (0.14, _NA2O), (0.09, _CAO), (0.04, _MGO), (0.01, _AL2O3)),
        "Soda-lime (window/bottle) glass: SiO2 72, Na2O 14, CaO 9, MgO 4, Al2O3 1 wt%.",
    ),
    _make(
        "ceramic",
        2.4,
        _blend((0.68, _SIO2), (0.26, _AL2O3), (0.04, _K2O), (0.01, _NA2O), (0.01, _CAO)),
        "Porcelain / stoneware: SiO2 68, Al2O3 26, K2O 4, Na2O 1, CaO 1 wt%.",
    ),
    _make(
        "concrete",
        2.3,
        _NIST_CONCRETE_ORDINARY,
        "Ordinary concrete (NIST Table 2 'Concrete, Ordinary').",
    ),
    _make("air", 1.205e-3, _NIST_AIR_DRY, "Dry air near sea level (NIST Table 2), 20 C."),
)

MATERIALS: Mapping[str, Material] = types.MappingProxyType({m.name: m for m in _MATERIAL_LIST})

_LOG_GRID = np.log(ENERGY_GRID_MEV)
_ELEMENT_TABLE = {el: np.asarray(v, dtype=np.float64) for el, v in ELEMENT_MU_RHO.items()}


def get_material(name: str) -> Material:
    """Look a material up by its key; the error lists the known keys to catch typos early."""
    try:
        return MATERIALS[name]
    except KeyError:
        known = ", ".join(sorted(MATERIALS))
        raise KeyError(f"unknown material {name!r}; known materials: {known}") from None


def _resolve(material: str | Material) -> Material:
    return material if isinstance(material, Material) else get_material(material)


@lru_cache(maxsize=256)
def _log_mu_rho_on_grid(composition: tuple[tuple[str, float], ...]) -> np.ndarray:
    """log(mu/rho) of a mixture on the grid; cached by composition since every object asks."""
    mu = np.zeros_like(ENERGY_GRID_MEV)
    for el, w in composition:
        try:
            mu += w * _ELEMENT_TABLE[el]
        except KeyError:
            have = sorted(_ELEMENT_TABLE)
            raise KeyError(f"no attenuation data for element {el!r}; have {have}") from None
    out = np.log(mu)
    out.setflags(write=False)
    return out


def mass_attenuation(material: str | Material, energies_mev: np.ndarray | float) -> np.ndarray:
    """mu/rho in cm^2/g at the given photon energies (MeV), log-log interpolated on the NIST grid.

    Raises ValueError for energies outside 0.1-20 MeV rather than extrapolating, because a
    silent extrapolation below 0.1 MeV would miss photoelectric edges (lead's K edge at 88 keV).
    """
    mat = _resolve(material)
    e = np.asarray(energies_mev, dtype=np.float64)
    lo, hi = ENERGY_GRID_MEV[0], ENERGY_GRID_MEV[-1]
    if not np.all((e >= lo) & (e <= hi)):  # also rejects NaN
        bad = e[~((e >= lo) & (e <= hi))]
        raise ValueError(f"energies must lie in [{lo}, {hi}] MeV; got {bad.ravel()[:5]}")
    log_mu = _log_mu_rho_on_grid(tuple(sorted(mat.composition.items())))
    return np.exp(np.interp(np.log(e), _LOG_GRID, log_mu))


def linear_attenuation_per_mm(
    material: str | Material,
    energies_mev: np.ndarray | float,
    density_g_cm3: float | None = None,
) -> np.ndarray:
    """Linear attenuation mu in 1/mm: (mu/rho) * rho / 10, rho defaulting to the nominal density."""
    mat = _resolve(material)
    rho = mat.density_g_cm3 if density_g_cm3 is None else float(density_g_cm3)
    return mass_attenuation(mat, energies_mev) * rho / 10.0

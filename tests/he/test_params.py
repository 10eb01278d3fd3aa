import dataclasses

import pytest

from hevit import he
from hevit.errors import ParameterError

# HomomorphicEncryption.org 128-bit table (ternary secret), total bits counting the special prime
TABLE = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def split_bits(total: int) -> tuple[int, ...]:
    """A prime list summing to ``total`` with every prime in SEAL's 20..60 bit range."""
    count = -(-total // 60)
    base, extra = divmod(total, count)
    return tuple(base + (1 if i < extra else 0) for i in range(count))


@pytest.mark.parametrize("n", sorted(TABLE))
def test_security_table_edge_is_accepted_and_one_bit_more_is_refused(n):
    assert he.max_secure_coeff_modulus_bits(n) == TABLE[n]
    limit = TABLE[n]
    ok = he.CkksParams(n, split_bits(limit), scale_bits=10, max_norm=1.0)
    assert sum(ok.coeff_modulus_bits) == limit
    with pytest.raises(
        ParameterError, match=rf"insecure parameters: .* N={n} allows at most {limit} bits"
    ):
        he.CkksParams(n, split_bits(limit + 1), scale_bits=10, max_norm=1.0)


@pytest.mark.parametrize("n", [0, 512, 1000, 3000, 65536])
def test_unsupported_ring_dimensions_are_refused(n):
    with pytest.raises(ParameterError, match=r"poly_modulus_degree=.* is not supported"):
        he.CkksParams(n, (20,), scale_bits=10, max_norm=1.0)


def test_insecure_message_proposes_a_valid_set():
    with pytest.raises(ParameterError) as info:
        he.CkksParams(4096, (60, 60), scale_bits=40)
    proposal = str(info.value).split("for example ")[1]
    # the proposal itself must be valid
    assert (
        "CkksParams(poly_modulus_degree=4096, coeff_modulus_bits=(39, 30, 40), scale_bits=27)"
        in proposal
    )
    he.CkksParams(4096, (39, 30, 40), scale_bits=27)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(coeff_modulus_bits=(61,), scale_bits=20), "20 to 60 bits"),
        (dict(coeff_modulus_bits=(19, 40), scale_bits=20), "20 to 60 bits"),
        (dict(coeff_modulus_bits=(), scale_bits=20), "coeff_modulus_bits is empty"),
        (dict(coeff_modulus_bits=(60,), scale_bits=58), "unusable parameters"),
        (dict(coeff_modulus_bits=(60,), scale_bits=5), "scale_bits must be >= 10"),
        (
            dict(coeff_modulus_bits=(60,), scale_bits=20, max_norm=0.0),
            "max_norm must be a positive",
        ),
        (
            dict(coeff_modulus_bits=(60,), scale_bits=20, max_norm=float("inf")),
            "max_norm must be a positive",
        ),
    ],
)
def test_unusable_parameters_are_refused(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        he.CkksParams(4096, **kwargs)


@pytest.mark.parametrize("name", sorted(he.PRESETS))
def test_presets_are_secure_and_named(name):
    params = he.CkksParams.preset(name)
    assert sum(params.coeff_modulus_bits) <= TABLE[params.poly_modulus_degree]
    assert params.name == name
    assert params == he.CkksParams(**he.PRESETS[name])  # the name does not take part in equality


def test_params_are_frozen_and_unknown_presets_fail():
    params = he.CkksParams.preset("throughput")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.scale_bits = 40  # type: ignore[misc]
    with pytest.raises(ParameterError, match=r"unknown preset 'fast'; choose one of \['latency'"):
        he.CkksParams.preset("fast")


def test_rotations_need_a_special_prime():
    for keys in ({"rotation_steps": (1,)}, {"conjugation": True}, {"relinearization": True}):
        with pytest.raises(ParameterError, match="need a special"):
            he.SecretContext.generate(he.CkksParams.preset("throughput"), **keys)


@pytest.mark.parametrize("step", [0, 2048, -2048, 5000])
def test_rotation_steps_out_of_range_are_refused(step):
    with pytest.raises(ParameterError, match=f"rotation step {step} is out of range"):
        he.SecretContext.generate(he.CkksParams.preset("single-row"), rotation_steps=(step,))


@pytest.mark.parametrize("old", sorted(he.params.DEPRECATED_PRESET_NAMES))
def test_old_preset_names_are_deprecated_aliases(old):
    new = he.params.DEPRECATED_PRESET_NAMES[old]
    with pytest.warns(DeprecationWarning, match=f"renamed '{new}'"):
        params = he.CkksParams.preset(old)
    assert params == he.CkksParams.preset(new) and params.name == new
    assert old not in he.PRESETS  # the layouts keep the words "batch" and "sample"

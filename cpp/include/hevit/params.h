// Copyright (c) hevit developers. MIT license.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hevit
{
    /**
    CKKS parameters as the user states them.

    coeff_modulus_bits lists the bit sizes of the RNS primes. With more than one prime the last is
    SEAL's special (key-switching) prime and is not part of the data modulus. scale_bits is log2 of
    the encoding scale of fresh ciphertexts. max_norm bounds the L2 norm of every encrypted sample;
    it is checked at encryption and is what linear plans use to size their weight scale so that
    results can never wrap around the modulus.
    */
    struct CkksParams
    {
        std::size_t poly_modulus_degree = 0;
        std::vector<int> coeff_modulus_bits;
        int scale_bits = 0;
        double max_norm = 0.0;
    };

    /**
    Largest total coefficient modulus (bits, counting the special prime) that gives 128-bit
    classical security for ring dimension n with a ternary secret, from the
    HomomorphicEncryption.org standard. Returns 0 for an n outside the table.
    */
    int max_secure_coeff_modulus_bits(std::size_t n) noexcept;

    /**
    Checks parameters against the security table and against precision needs.

    @throws ParameterError naming what is wrong and proposing a valid set
    */
    void validate_params(const CkksParams &params);

    /** Number of data primes (all primes but the special one when there is more than one). */
    std::size_t data_prime_count(const CkksParams &params) noexcept;

    /** True for a rotation step a Galois key can exist for: nonzero, within (-N/2, N/2). */
    bool is_valid_rotation_step(const CkksParams &params, std::int64_t step) noexcept;
} // namespace hevit

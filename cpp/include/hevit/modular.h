// Copyright (c) hevit developers. MIT license.
#pragma once

#include "seal/seal.h"
#include <cmath>
#include <cstdint>

namespace hevit::detail
{
    /** log2 of the product of a level's primes (its data modulus). */
    inline double log2_modulus(const seal::SEALContext::ContextData &cd)
    {
        double bits = 0.0;
        for (const auto &q : cd.parms().coeff_modulus())
        {
            bits += std::log2(static_cast<double>(q.value()));
        }
        return bits;
    }

    /** round(value) as a residue mod q (negative values wrap to q - |v|). */
    inline std::uint64_t to_residue(double value, const seal::Modulus &q)
    {
        const std::int64_t v = std::llround(value);
        const std::uint64_t magnitude = static_cast<std::uint64_t>(v < 0 ? -v : v) % q.value();
        return v < 0 && magnitude ? q.value() - magnitude : magnitude;
    }
} // namespace hevit::detail

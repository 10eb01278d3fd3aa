// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/errors.h"
#include "seal/seal.h"
#include "seal/util/ntt.h"
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace hevit::detail
{
    /** Headroom (bits) kept between a value bound times its scale and the modulus: complex slots
    reach sqrt(2) times the bound, and decoding needs |value| < q / 4. */
    constexpr double headroom_bits = 2.5;

    /** Bits a signed 128-bit accumulator may fill (three bits of margin below 2^127). */
    constexpr double accumulator_bits = 125.0;

    /** Largest prime size SEAL uses; residues are below 2^prime_bits_max. */
    constexpr double prime_bits_max = 60.0;

    /** Smallest weight scale (bits) a plan accepts; below it the weights lose their precision. */
    constexpr double min_weight_scale_bits = 8.0;

    /** Bytes allowed beyond the coefficients for SEAL's own headers (its serialization header,
    parms_id, size fields): a few hundred in practice. */
    constexpr std::size_t seal_header_slack = 4096;

    /** Upper bound of SEAL's serialized size of an object of poly_count polynomials over
    prime_count primes at ring degree n (uncompressed), header slack included. */
    inline std::size_t seal_poly_bytes(std::size_t n, std::size_t prime_count, std::size_t poly_count)
    {
        return poly_count * prime_count * n * sizeof(std::uint64_t) + seal_header_slack;
    }

    /**
    The input norm bound a plan compiles for: requested when positive, the context's max_norm for
    0 (the documented default).

    @throws ValueRangeError for a negative, NaN or infinite request (it once fell back to
    max_norm silently)
    */
    inline double resolve_norm_bound(double requested, double max_norm)
    {
        if (!std::isfinite(requested) || requested < 0)
        {
            throw ValueRangeError(
                "input_norm_bound must be a positive finite number (or 0 for the context's max_norm), got " +
                std::to_string(requested));
        }
        return requested > 0 ? requested : max_norm;
    }

    /** Smallest l with 2^l >= v (0 for v <= 1). */
    inline std::size_t ceil_log2(std::size_t v) noexcept
    {
        std::size_t l = 0;
        while (l < 63 && (std::size_t(1) << l) < v)
        {
            l++;
        }
        return l;
    }

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

    /** True when c1 (and any higher part) is zero: a plaintext dressed as a ciphertext. Plans
    and sums refuse such inputs (SEAL's evaluator would throw a bare logic_error on them); a
    plan's own output may legitimately be transparent (all-zero weights). */
    inline bool is_transparent(const seal::Ciphertext &ct)
    {
        const std::size_t count = ct.poly_modulus_degree() * ct.coeff_modulus_size();
        for (std::size_t poly = 1; poly < ct.size(); poly++)
        {
            for (std::size_t i = 0; i < count; i++)
            {
                if (ct.data(poly)[i] != 0)
                {
                    return false;
                }
            }
        }
        return true;
    }

    /**
    round(value) (half away from zero) as a residue mod q (negative values wrap to q - |v|);
    |value| < 2^62. Inline and branch-free where it matters, instead of llround and a 64-bit
    division (library calls, a sixth of a batch encryption): truncate, then step by the
    fraction's rounding.
    */
    inline std::uint64_t to_residue(double value, const seal::Modulus &q) noexcept
    {
        std::int64_t v = static_cast<std::int64_t>(value); // toward zero; exact below 2^53
        const double fraction = value - static_cast<double>(v);
        v += static_cast<std::int64_t>(fraction >= 0.5) - static_cast<std::int64_t>(fraction <= -0.5);
        // branch-free sign handling (feature signs are random: branches mispredict half the time)
        const std::uint64_t negative = 0 - static_cast<std::uint64_t>(v < 0);
        std::uint64_t magnitude = (static_cast<std::uint64_t>(v) ^ negative) - negative;
        if (magnitude >= q.value())
        {
            magnitude %= q.value(); // values this large are rare: encoders keep them below q / 4
            if (magnitude == 0)
            {
                return 0;
            }
        }
        // negative: q - magnitude; otherwise magnitude
        return ((q.value() - magnitude) & negative) | (magnitude & ~negative);
    }

    /**
    Forward negacyclic NTT of one residue polynomial: SEAL's lazy butterflies, then a branch-free
    reduction from [0, 4q) to [0, q). SEAL's own final pass branches on every (random)
    coefficient and spent a third of the transform in mispredictions.
    */
    inline void forward_ntt(std::uint64_t *values, const seal::util::NTTTables &tables) noexcept
    {
        seal::util::ntt_negacyclic_harvey_lazy(values, tables);
        const std::uint64_t q = tables.modulus().value();
        const std::uint64_t two_q = 2 * q;
        const std::size_t n = std::size_t(1) << tables.coeff_count_power();
        for (std::size_t i = 0; i < n; i++)
        {
            std::uint64_t v = values[i];
            v -= two_q & (0 - static_cast<std::uint64_t>(v >= two_q));
            v -= q & (0 - static_cast<std::uint64_t>(v >= q));
            values[i] = v;
        }
    }

    /** Inverse negacyclic NTT (including the 1/N factor), with a branch-free reduction from [0, 2q). */
    inline void inverse_ntt(std::uint64_t *values, const seal::util::NTTTables &tables) noexcept
    {
        seal::util::inverse_ntt_negacyclic_harvey_lazy(values, tables);
        const std::uint64_t q = tables.modulus().value();
        const std::size_t n = std::size_t(1) << tables.coeff_count_power();
        for (std::size_t i = 0; i < n; i++)
        {
            values[i] -= q & (0 - static_cast<std::uint64_t>(values[i] >= q));
        }
    }
} // namespace hevit::detail

// Copyright (c) hevit developers. MIT license.
#pragma once

#include "hevit/encrypted_batch.h"
#include "hevit/public_context.h"
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hevit
{
    /**
    A coefficient-layout batch reduced to what its key holder needs to read its values: per
    ciphertext, c1 whole and c0 only at the coefficients that hold values (c * period + period - 1),
    both switched from the prime q to the modulus 2^bits. Decryption (SecretContext) computes
    c0 + c1 s at those coefficients only, mod 2^bits.

    bits is chosen from the batch's scale: the switch adds a rounding error of std about
    sqrt(N / 18) units of q / 2^bits to each value (c1's rounding meets about 2N/3 nonzero key
    coefficients), so bits = ceil(log2(q / scale)) + scale_bits of the parameters keeps the unit
    at most 2^-scale_bits in value units: the reply is rounded as finely as the input was encoded
    (latency preset: 31 bits per coefficient, a 768 -> 3 reply under 16 KB, rounding std about
    4e-6; latency-precise: 2^-31).
    It is derived from the ciphertext by public operations only, so it reveals nothing the full
    ciphertext does not. It cannot be evaluated further: it is a reply, not an input.
    */
    class CompactBatch
    {
    public:
        /**
        Reduces a coefficient-layout batch (one data prime).

        @throws LayoutError for another layout or level
        */
        static CompactBatch from_batch(const EncryptedBatch &batch, int threads);

        const std::shared_ptr<const PublicContext> &context() const noexcept { return context_; }
        std::size_t rows() const noexcept { return rows_; }
        std::size_t cols() const noexcept { return cols_; }
        std::size_t period() const noexcept { return period_; }
        int bits() const noexcept { return bits_; }
        /** Value of one unit of the modulus 2^bits: q / 2^bits / scale. */
        double unit() const noexcept { return unit_; }
        double norm_bound() const noexcept { return norm_bound_; }
        /** c0 at the value coefficients: rows x cols, each < 2^bits. */
        const std::vector<std::uint64_t> &c0() const noexcept { return c0_; }
        /** c1 in coefficient form: rows x N, each < 2^bits. */
        const std::vector<std::uint64_t> &c1() const noexcept { return c1_; }

        /** Serialized form (kind CompactBatch), bit-packed to bits per value. */
        std::string to_bytes() const;

        /**
        Loads bytes made under context's key set.

        @throws SerializationError for malformed bytes, ContextMismatchError for another key set
        */
        static CompactBatch from_bytes(std::string_view bytes, std::shared_ptr<const PublicContext> context);

    private:
        friend class LinearPlan; // makes compact replies directly (LinearPlan::apply_compact)

        CompactBatch() = default;

        /** A reply of this shape with bits and unit set from scale (see above), values unset. */
        static CompactBatch sized(
            std::shared_ptr<const PublicContext> context, std::size_t rows, std::size_t cols, std::size_t period,
            double scale, double norm_bound);

        /**
        Switches row m to 2^bits: c0_values are c0 at the cols value coefficients and
        c1_coefficients c1 in coefficient form, both residues mod q.
        */
        void switch_row(std::size_t m, const std::uint64_t *c0_values, const std::uint64_t *c1_coefficients) noexcept;

        std::shared_ptr<const PublicContext> context_;
        std::size_t rows_ = 0;
        std::size_t cols_ = 0;
        std::size_t period_ = 0;
        int bits_ = 0;
        double unit_ = 0.0;
        double norm_bound_ = 0.0;
        std::vector<std::uint64_t> c0_;
        std::vector<std::uint64_t> c1_;
        // set by sized() for switch_row (not serialized)
        std::uint64_t q_ = 0;
        double ratio_ = 0.0;
    };
} // namespace hevit

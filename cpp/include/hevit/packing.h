// Copyright (c) hevit developers. MIT license.
#pragma once

#include "seal/plaintext.h"
#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

/**
Slot layouts: how a (rows x cols) matrix of real values is spread over CKKS ciphertexts.

Both layouts carry two real values per complex slot (real part and imaginary part), so a
ciphertext of ring degree N carries N values, not N/2. Every operation hevit applies is linear
with real coefficients, which keeps the two parts apart.

- batch: ciphertext (g, j) holds column j (a feature) of rows [g N, (g + 1) N). With one data
  prime (batch_in_coefficients: the throughput and latency presets) row g N + s sits at
  coefficient s as round(value * scale): no FFT, and the layout's operations (sums, scalar
  multiply-accumulate, a bias in every coefficient) act on coefficients exactly as on slots.
  With more data primes (plans that rescale, the two-layer head's squares, which act on slots)
  slot s holds row g N + s in its real part and row g N + N/2 + s in its imaginary part. A linear
  layer needs no rotation either way.
- sample: ciphertext m holds rows 2m (real part) and 2m + 1 (imaginary part). Each row is
  zero-padded to a power-of-two period p >= cols and replicated to fill all N/2 slots, so that a
  cyclic rotation of the slots is a cyclic rotation of every row.
- coefficient: ciphertext m holds row m in the polynomial's coefficients, not in slots: value c
  of the row sits at coefficient c * p + p - 1 as round(value * scale), p being the batch's
  period (1 for fresh encryptions: coefficient c). No FFT is involved. A linear layer is one
  plaintext product with the weight polynomial (row k of W reversed at offset k * D), after which
  output k sits at coefficient k * D + D - 1: the output batch has period D. Coefficients are
  independent of each other, so the layout needs one data prime (no rescaling, no rotation).
*/
namespace hevit
{
    class PublicContext;

    /** Most rows a sample- or coefficient-layout batch may hold (bounds memory from one call or
    one serialized header); a batch-layout batch holds up to N rows per column group. */
    constexpr std::size_t max_sample_rows = std::size_t(1) << 16;

    /** Most columns (features) of any batch. */
    constexpr std::size_t max_cols = std::size_t(1) << 20;

    enum class Layout : std::uint8_t
    {
        batch = 1,
        sample = 2,
        coefficient = 3,
    };

    const char *layout_name(Layout layout) noexcept;

    /** Parses "batch", "sample" or "coefficient"; throws LayoutError otherwise. */
    Layout parse_layout(const std::string &name);

    /** Smallest power of two >= value (value >= 1); 0 when value exceeds the largest one. */
    std::size_t next_pow2(std::size_t value) noexcept;

    /** Number of ciphertexts a (rows x cols) matrix needs in layout at ring degree n. */
    std::size_t ciphertext_count(Layout layout, std::size_t rows, std::size_t cols, std::size_t n) noexcept;

    /** Ciphertexts per column group in the batch layout: ceil(rows / n). */
    std::size_t batch_groups(std::size_t rows, std::size_t n) noexcept;

    /**
    True when batch-layout values sit in coefficients rather than slots: the parameters have one
    data prime (a fact of the key set, so every party derives the same answer).
    */
    bool batch_in_coefficients(const PublicContext &context) noexcept;

    namespace detail
    {
        /**
        Validates values (finite, row norms within max_norm, shape fits layout) and returns the
        slot period for the sample layout (0 for batch).
        */
        std::size_t check_plain_input(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout);

        /** The complex slot vector of ciphertext index in layout (see packing.h). */
        void pack_slots(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, std::vector<std::complex<double>> &slots);

        /**
        The plaintext of ciphertext index in layout, at the data level and the context scale: slots
        encoded with the CKKS encoder (batch, sample), or the row's values as rounded integers in
        the coefficients (coefficient layout, no FFT), in NTT form either way.
        */
        void encode_plain(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, seal::Plaintext &destination);

        /**
        The coefficient form (n coefficients, one data prime) of ciphertext index when values sit
        in coefficients: coefficient layout, row index at c * period + period - 1; batch layout
        (batch_in_coefficients), column index % cols of rows g N .. g N + N - 1 at 0 .. N - 1.
        */
        void encode_plain_coefficients(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t period, std::size_t index, std::uint64_t *coeffs);

        /**
        Batch layout in coefficients: columns first_col .. first_col + count - 1 of rows
        group N .. group N + N - 1, one coefficient-form polynomial of n values each (count * n
        values at coeffs). Reading neighbouring columns together reads each row's cache line once.
        */
        void encode_batch_columns(
            const PublicContext &context, const double *values, std::size_t rows, std::size_t cols, std::size_t group,
            std::size_t first_col, std::size_t count, std::uint64_t *coeffs);

        /** Coefficient layout: one row as rounded integers at coefficients c * period + period - 1
        (n coefficients, coefficient form, one data prime). */
        void encode_coefficients(
            const PublicContext &context, const double *row, std::size_t cols, std::size_t period, std::uint64_t *coeffs);

        /**
        Coefficient layout: reads value c of the row of a decrypted (NTT-form, one-prime) plaintext
        from coefficient c * period + period - 1 and divides by the plaintext's scale.
        */
        void decode_coefficients(
            const PublicContext &context, const seal::Plaintext &plain, std::size_t cols, std::size_t period,
            double *row);

        /**
        Batch layout in coefficients: writes rows g N .. of column index % cols from a decrypted
        (NTT-form, one-prime) plaintext, each coefficient divided by the plaintext's scale.
        */
        void decode_batch_coefficients(
            const PublicContext &context, const seal::Plaintext &plain, std::size_t rows, std::size_t cols,
            std::size_t index, double *out);

        /** Writes the decoded slots of ciphertext index back into the row-major output. */
        void unpack_slots(
            const std::vector<std::complex<double>> &slots, std::size_t rows, std::size_t cols, Layout layout,
            std::size_t n, std::size_t index, double *out);

        /**
        Decodes the decrypted (NTT-form) plaintext of ciphertext index of a (rows x cols) batch in
        layout into the row-major output, as the layout places values: coefficients (coefficient
        layout; batch layout when batch_in_coefficients) or slots (CKKS decoder).
        */
        void decode_plain(
            const PublicContext &context, const seal::Plaintext &plain, Layout layout, std::size_t rows,
            std::size_t cols, std::size_t period, std::size_t index, double *out);

    } // namespace detail
} // namespace hevit
